//! Server-rendered pages: one askama struct per page and per partial, the shared layout,
//! and the error page. Handlers parse forms, call services and pick what to render.

pub mod admin;
pub mod auth;
pub mod chat;
pub mod jobs;
pub mod prompts;
pub mod settings;

use askama::Template;
use askama_web::WebTemplate;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};

use super::assets;
use super::error::ApiError;
use crate::auth::model::Role;
use crate::auth::session::Authenticated;

/// What every page's frame needs.
#[derive(Debug, Clone)]
pub struct Layout {
    pub title: String,
    /// Which navigation entry is current.
    pub nav: &'static str,
    pub user: Option<NavUser>,
    /// Empty when signed out.
    pub csrf_token: String,
}

#[derive(Debug, Clone)]
pub struct NavUser {
    pub username: String,
    pub is_admin: bool,
}

impl Layout {
    pub fn signed_in(title: &str, nav: &'static str, session: &Authenticated) -> Self {
        Self {
            title: title.to_owned(),
            nav,
            user: Some(NavUser { username: session.user.username.clone(), is_admin: session.user.role == Role::Admin }),
            csrf_token: session.csrf_token.clone(),
        }
    }

    pub fn signed_out(title: &str) -> Self {
        Self { title: title.to_owned(), nav: "", user: None, csrf_token: String::new() }
    }

    /// Content-hashed URL of a static file.
    pub fn asset(&self, path: &str) -> String {
        assets::url(path)
    }
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub layout: Layout,
    pub status: u16,
    pub heading: &'static str,
    pub message: String,
}

/// The error page for `status`, with a message safe to show.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let heading = match status {
        StatusCode::NOT_FOUND => "Page not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::TOO_MANY_REQUESTS => "Slow down",
        s if s.is_server_error() => "Something went wrong",
        _ => "That did not work",
    };
    let page = ErrorPage {
        layout: Layout::signed_out(heading),
        status: status.as_u16(),
        heading,
        message: message.to_owned(),
    };
    (status, page).into_response()
}

/// Errors of page handlers: rendered as the error page.
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        error_page(status, &self.0.public_message())
    }
}

pub type PageResult = Result<Response, PageError>;

/// The HTML 404 for unknown non-API paths.
pub async fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "There is no page at this address.")
}

/// True for requests made by HTMX, which want a partial instead of a page.
pub fn is_htmx(headers: &HeaderMap) -> bool {
    headers.get("hx-request").is_some_and(|v| v == "true")
}

/// A short, readable UTC time.
pub fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A redirect after a successful form post (Post/Redirect/Get).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// `text` with its first letter upper-case, to show a service's reason as a sentence.
pub fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}
