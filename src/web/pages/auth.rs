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
    // Never echo more than a user name can be.
    let shown: String = username.chars().take(crate::auth::model::Username::MAX_CHARS).collect();
    let failed = |status: StatusCode, error: String| {
        let page = LoginPage {
            layout: Layout::signed_out("Sign in"),
            error: Some(error),
            next: next.clone(),
            username: shown.clone(),
        };
        (status, page).into_response()
    };
    match state.auth.login(&username, &form.password, &client.0).await {
        Ok((cookie, _session)) => Ok((jar.add(session_cookie(&state, cookie)), see_other(&next)).into_response()),
        Err(LoginError::Invalid) => Ok(failed(StatusCode::UNAUTHORIZED, "Wrong user name or password.".into())),
        Err(e @ LoginError::NameTooLong) => Ok(failed(StatusCode::UNPROCESSABLE_ENTITY, format!("{e}."))),
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

/// Where to go after signing in: only a path on this site. `next` is read as a URL
/// relative to this origin and accepted only when it stays here; control characters,
/// whitespace and backslashes (which browsers read as `/`) are refused outright, so the
/// result is always a valid `Location` header value.
fn safe_next(next: Option<&str>) -> String {
    static ORIGIN: std::sync::LazyLock<url::Url> = std::sync::LazyLock::new(|| {
        // An invariant: the literal is a valid absolute URL.
        #[allow(clippy::unwrap_used)]
        url::Url::parse("http://promptops.invalid/").unwrap()
    });
    let Some(next) = next else { return "/".to_owned() };
    let plain = next.chars().all(|c| !c.is_control() && !c.is_whitespace() && c != '\\');
    if !plain || !next.starts_with('/') || next.starts_with("//") {
        return "/".to_owned();
    }
    match ORIGIN.join(next) {
        Ok(url) if url.origin() == ORIGIN.origin() => url[url::Position::BeforePath..].to_owned(),
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
        // Found by an outside sweep: a tab or backslash after the slash is read as `//`.
        assert_eq!(safe_next(Some("/\t/evil.example/")), "/");
        assert_eq!(safe_next(Some("/\t\\evil.example/")), "/");
        for control in ["/\r\nSet-Cookie: x=1", "/a\0b", "/a\u{7f}", "/a\nb", "/ a"] {
            assert_eq!(safe_next(Some(control)), "/", "{control:?}");
        }
        assert_eq!(safe_next(Some("/c/3#m-5")), "/c/3#m-5");
        assert_eq!(safe_next(Some("/a/../settings")), "/settings");
    }
}
