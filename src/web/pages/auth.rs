//! The login page and the logout action.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use secrecy::SecretString;
use serde::Deserialize;

use super::{Layout, PageResult, see_other};
use crate::auth::LoginError;
use crate::auth::session::Authenticated;
use crate::web::AppState;
use crate::web::error::retry_after;
use crate::web::session::{ClientAddr, CurrentUser, cleared_session_cookie, session_cookie};

#[derive(Debug, Template, WebTemplate)]
#[template(path = "login.html")]
pub struct LoginPage {
    layout: Layout,
    error: Option<String>,
    next: String,
    username: String,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn page(session: Option<axum::Extension<Authenticated>>, Query(query): Query<LoginQuery>) -> Response {
    let next = safe_next(query.next.as_deref());
    if session.is_some() {
        return see_other(&next);
    }
    LoginPage { layout: Layout::signed_out("Sign in"), error: None, next, username: String::new() }.into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: SecretString,
    next: Option<String>,
}

pub async fn submit(
    State(state): State<AppState>,
    client: ClientAddr,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> PageResult {
    let next = safe_next(form.next.as_deref());
    let username = form.username.trim().to_owned();
    let failed = |status: StatusCode, error: String| {
        let page = LoginPage {
            layout: Layout::signed_out("Sign in"),
            error: Some(error),
            next: next.clone(),
            username: username.clone(),
        };
        (status, page).into_response()
    };
    match state.auth.login(&username, &form.password, &client.0).await {
        Ok((cookie, _session)) => Ok((jar.add(session_cookie(&state, cookie)), see_other(&next)).into_response()),
        Err(LoginError::Invalid) => Ok(failed(StatusCode::UNAUTHORIZED, "Wrong user name or password.".into())),
        Err(e @ LoginError::Throttled(wait)) => {
            let mut response = failed(StatusCode::TOO_MANY_REQUESTS, format!("{e}."));
            response.headers_mut().insert(header::RETRY_AFTER, retry_after(wait));
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn logout(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    jar: CookieJar,
) -> PageResult {
    state.auth.logout(&session, &client.actor(&session)).await?;
    Ok((jar.add(cleared_session_cookie(&state)), see_other("/login")).into_response())
}

/// Only local paths: never `//host` or a scheme, so a login link cannot send people away.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.starts_with("/\\") => path.to_owned(),
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/settings?x=1")), "/settings?x=1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
