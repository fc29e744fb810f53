//! The login page, single sign-on's start and callback, and the logout action.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use secrecy::SecretString;
use serde::Deserialize;

use super::{Layout, PageResult, capitalise, see_other};
use crate::auth::LoginError;
use crate::auth::oidc::{Callback, OidcService, Refusal};
use crate::auth::session::Authenticated;
use crate::config::model::LocalLogin;
use crate::web::AppState;
use crate::web::error::retry_after;
use crate::web::session::{
    ClientAddr, CurrentUser, cleared_session_cookie, cleared_sso_binding_cookie, session_cookie, sso_binding_cookie,
    sso_binding_name,
};

#[derive(Debug, Template, WebTemplate)]
#[template(path = "login.html")]
pub struct LoginPage {
    layout: Layout,
    error: Option<String>,
    notice: Option<String>,
    next: String,
    username: String,
    /// The single sign-on button, when configured.
    sso: Option<SsoButton>,
    /// Whether the password form is shown (`auth.local` is not `off`).
    local: bool,
    /// The password form is for admins only.
    admin_only: bool,
    /// After signing out of an account that came from the provider: its logout URL.
    provider_logout: Option<String>,
}

#[derive(Debug)]
pub struct SsoButton {
    label: String,
    /// `/auth/oidc/start?next=…`
    href: String,
    /// The provider's last look failed; why is logged, not shown to strangers.
    unavailable: bool,
}

impl LoginPage {
    /// The page as the live config describes it; looks at the provider when the last look
    /// is older than 5 s, so a provider outage shows here.
    async fn build(state: &AppState, next: String) -> Self {
        let auth = state.auth_settings();
        let sso = match &auth.oidc {
            Some(oidc) => {
                let status = state.auth.oidc.check(oidc, OidcService::RECHECK).await;
                Some(SsoButton {
                    label: oidc.label.clone(),
                    href: format!("/auth/oidc/start?{}", encode_query(&[("next", &next)])),
                    unavailable: status.error.is_some(),
                })
            }
            None => None,
        };
        Self {
            layout: Layout::signed_out("Sign in"),
            error: None,
            notice: None,
            next,
            username: String::new(),
            sso,
            local: auth.local != LocalLogin::Off,
            admin_only: auth.local == LocalLogin::AdminOnly,
            provider_logout: None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    signed_out: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    session: Option<axum::Extension<Authenticated>>,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref());
    if session.is_some() {
        return see_other(&next);
    }
    let mut page = LoginPage::build(&state, next).await;
    if query.signed_out.is_some() {
        page.notice = Some("You are signed out.".into());
    }
    if query.signed_out.as_deref() == Some("sso")
        && let Some(oidc) = state.auth_settings().oidc
    {
        page.provider_logout =
            state.auth.oidc.end_session_url(&oidc, &state.web.url("/login")).await.map(|u| u.to_string());
    }
    page.into_response()
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
    let mut page = LoginPage::build(&state, next.clone()).await;
    page.username = shown;
    let failed = |status: StatusCode, error: String| {
        page.error = Some(error);
        (status, page).into_response()
    };
    match state.auth.login(&username, &form.password, &client.0, state.auth_settings().local).await {
        Ok((cookie, _session)) => Ok((jar.add(session_cookie(&state, cookie)), see_other(&next)).into_response()),
        Err(LoginError::Invalid) => Ok(failed(StatusCode::UNAUTHORIZED, "Wrong user name or password.".into())),
        Err(e @ LoginError::NameTooLong) => Ok(failed(StatusCode::UNPROCESSABLE_ENTITY, format!("{e}."))),
        Err(e @ (LoginError::LocalOff | LoginError::AdminOnly)) => {
            Ok(failed(StatusCode::FORBIDDEN, capitalise(&format!("{e}."))))
        }
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
    // An account from the provider is offered the provider's logout too (RP-initiated).
    let to = if session.user.oidc_subject.is_some() { "/login?signed_out=sso" } else { "/login?signed_out=1" };
    Ok((jar.add(cleared_session_cookie(&state)), see_other(to)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct StartQuery {
    next: Option<String>,
}

/// `GET /auth/oidc/start`: records a sign-in and sends the browser to the provider. A GET
/// (a link, which `form-action 'self'` lets leave the site): it changes nothing a forged
/// request could use, as the callback only accepts the browser holding the binding cookie.
pub async fn sso_start(State(state): State<AppState>, jar: CookieJar, Query(query): Query<StartQuery>) -> PageResult {
    let next = safe_next(query.next.as_deref());
    let Some(oidc) = state.auth_settings().oidc else {
        return Ok(sso_failed(&state, next, &Refusal::NotConfigured).await);
    };
    match state.auth.oidc.start(&oidc, &state.web.url(CALLBACK_PATH), &next).await {
        Ok(started) => {
            Ok((jar.add(sso_binding_cookie(&state, started.binding)), see_other(started.authorize_url.as_str()))
                .into_response())
        }
        Err(refusal) => Ok(sso_failed(&state, next, &refusal).await),
    }
}

/// Where the provider sends the browser back.
pub const CALLBACK_PATH: &str = "/auth/oidc/callback";

/// `GET /auth/oidc/callback`: checks the provider's answer and starts the session.
pub async fn sso_callback(
    State(state): State<AppState>,
    client: ClientAddr,
    jar: CookieJar,
    Query(callback): Query<Callback>,
) -> PageResult {
    let binding = jar.get(sso_binding_name(&state)).map(|c| c.value().to_owned());
    let jar = jar.add(cleared_sso_binding_cookie(&state));
    let Some(oidc) = state.auth_settings().oidc else {
        return Ok((jar, sso_failed(&state, "/".into(), &Refusal::NotConfigured).await).into_response());
    };
    let redirect = state.web.url(CALLBACK_PATH);
    match state.auth.sign_in_sso(&oidc, &redirect, &callback, binding.as_deref(), &client.0).await {
        Ok(signed_in) => {
            let next = safe_next(Some(&signed_in.next));
            Ok((jar.add(session_cookie(&state, signed_in.cookie)), see_other(&next)).into_response())
        }
        Err(refusal) => Ok((jar, sso_failed(&state, "/".into(), &refusal).await).into_response()),
    }
}

/// The login page with the reason a single sign-on failed.
async fn sso_failed(state: &AppState, next: String, refusal: &Refusal) -> Response {
    let status = match refusal {
        Refusal::Unreachable(_) | Refusal::BadResponse(_) | Refusal::Provider(_) => StatusCode::BAD_GATEWAY,
        Refusal::Db(_) | Refusal::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Refusal::Busy => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::NotConfigured => StatusCode::NOT_FOUND,
        Refusal::UnknownState | Refusal::OtherBrowser | Refusal::Stale => StatusCode::BAD_REQUEST,
        _ => StatusCode::FORBIDDEN,
    };
    if matches!(refusal, Refusal::Db(_) | Refusal::Internal(_)) {
        tracing::error!(error = %refusal, "single sign-on failed on our side");
    }
    let mut page = LoginPage::build(state, next).await;
    page.error = Some(format!("Single sign-on failed: {refusal}."));
    (status, page).into_response()
}

fn encode_query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
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
