//! The session and CSRF gate in front of every route, and the extractors handlers use
//! to demand a signed-in user or an admin. One place enforces; handlers cannot forget.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};

use super::AppState;
use super::error::ApiError;
use super::pages::error_page;
use crate::audit::Actor;
use crate::auth::model::Role;
use crate::auth::session::Authenticated;

/// Header carrying the CSRF token on API and HTMX requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Form field carrying the CSRF token on plain form posts.
pub const CSRF_FIELD: &str = "csrf_token";
/// Largest form body the CSRF gate reads.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Reads the session cookie and, when it stands for a live session, puts the
/// [`Authenticated`] session into the request's extensions.
pub async fn load_session(State(state): State<AppState>, jar: CookieJar, mut request: Request, next: Next) -> Response {
    if let Some(cookie) = jar.get(state.web.cookie_name()) {
        match state.auth.sessions.authenticate(cookie.value()).await {
            Ok(Some(session)) => {
                request.extensions_mut().insert(session);
            }
            Ok(None) => {}
            Err(e) => return ApiError::internal(e).into_response(),
        }
    }
    next.run(request).await
}

/// Refuses state-changing requests from another origin, and those of a signed-in session
/// that lack its CSRF token (header, or form field for plain forms). Missing or wrong → 403.
pub async fn csrf_guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let api = is_api(request.uri().path());
    if !state.web.origin_allowed(request.headers()) {
        return forbidden(api, "cross-origin request refused");
    }
    let Some(expected) = request.extensions().get::<Authenticated>().map(|s| s.csrf_token.clone()) else {
        // No session: nothing to forge. Login is open; every other route refuses by itself.
        return next.run(request).await;
    };
    if let Some(given) = request.headers().get(CSRF_HEADER) {
        return if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            next.run(request).await
        } else {
            forbidden(api, "CSRF token mismatch")
        };
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return forbidden(api, "missing CSRF token (send the X-CSRF-Token header)");
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return ApiError::BadRequest("form too large".into()).into_response();
    };
    let matched = url::form_urlencoded::parse(&bytes)
        .any(|(key, value)| key == CSRF_FIELD && constant_time_eq(value.as_bytes(), expected.as_bytes()));
    if !matched {
        return forbidden(api, "missing or wrong CSRF token; reload the page and try again");
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

fn forbidden(api: bool, message: &'static str) -> Response {
    if api { ApiError::Forbidden(message).into_response() } else { error_page(StatusCode::FORBIDDEN, message) }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

/// The path and query as the client sent them (nested routers see their own suffix only).
fn original_uri(parts: &Parts) -> &Uri {
    parts.extensions.get::<OriginalUri>().map_or(&parts.uri, |original| &original.0)
}

/// A signed-in user. Without a session, API routes answer 401 and pages redirect to login.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Authenticated);

/// A signed-in admin; others get 403.
#[derive(Debug, Clone)]
pub struct AdminUser(pub Authenticated);

/// Why an extractor refused.
#[derive(Debug)]
pub enum AuthRejection {
    Api(ApiError),
    Login { next: String },
    Forbidden,
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => e.into_response(),
            Self::Login { next } => {
                let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("next", &next).finish();
                Redirect::to(&format!("/login?{query}")).into_response()
            }
            Self::Forbidden => error_page(StatusCode::FORBIDDEN, "this page is for admins"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let uri = original_uri(parts);
        match parts.extensions.get::<Authenticated>() {
            Some(session) => Ok(Self(session.clone())),
            None if is_api(uri.path()) => Err(AuthRejection::Api(ApiError::Unauthorized("sign in first"))),
            None => {
                let next = uri.path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
                Err(AuthRejection::Login { next })
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AdminUser {
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let CurrentUser(session) = CurrentUser::from_request_parts(parts, state).await?;
        if session.user.role == Role::Admin {
            Ok(Self(session))
        } else if is_api(original_uri(parts).path()) {
            Err(AuthRejection::Api(ApiError::Forbidden("admins only")))
        } else {
            Err(AuthRejection::Forbidden)
        }
    }
}

/// The client's address: the TCP peer, or the configured proxy header's last entry.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let from_header = state.web.client_ip_header.as_ref().and_then(|name| {
            let value = parts.headers.get(name)?.to_str().ok()?;
            value.rsplit(',').next().map(|last| last.trim().to_owned()).filter(|s| !s.is_empty())
        });
        let peer = || parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        Ok(Self(from_header.or_else(peer).unwrap_or_else(|| "unknown".into())))
    }
}

impl ClientAddr {
    /// The audit actor for a signed-in user acting from this address.
    pub fn actor(&self, session: &Authenticated) -> Actor {
        Actor { username: Some(session.user.username.clone()), client_addr: Some(self.0.clone()) }
    }
}

/// The session cookie for `value`.
pub fn session_cookie(state: &AppState, value: String) -> Cookie<'static> {
    let max_age = state.auth.sessions.max_lifetime();
    Cookie::build((state.web.cookie_name(), value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.web.secure)
        .path("/")
        .max_age(time_duration(max_age))
        .build()
}

/// Binds a single sign-on under way to this browser: the callback is accepted only with it.
pub fn sso_binding_name(state: &AppState) -> &'static str {
    if state.web.secure { "__Host-promptops_sso" } else { "promptops_sso" }
}

/// `Lax`, so the provider's redirect back (a top-level GET from another site) carries it.
pub fn sso_binding_cookie(state: &AppState, value: String) -> Cookie<'static> {
    Cookie::build((sso_binding_name(state), value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.web.secure)
        .path("/")
        .max_age(time_duration(crate::auth::oidc::LOGIN_TTL))
        .build()
}

pub fn cleared_sso_binding_cookie(state: &AppState) -> Cookie<'static> {
    Cookie::build((sso_binding_name(state), "")).http_only(true).secure(state.web.secure).path("/").removal().build()
}

/// A cookie that makes the browser forget the session.
pub fn cleared_session_cookie(state: &AppState) -> Cookie<'static> {
    Cookie::build((state.web.cookie_name(), "")).http_only(true).secure(state.web.secure).path("/").removal().build()
}

fn time_duration(d: std::time::Duration) -> time::Duration {
    time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
