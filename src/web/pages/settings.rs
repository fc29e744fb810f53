//! Personal settings: the Jira and Confluence tokens (set, replace, remove; HTMX swaps
//! just the card, plain forms redirect) and the password.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Layout, PageError, PageResult, capitalise, is_htmx, see_other, when};
use crate::auth::model::Service;
use crate::auth::session::Authenticated;
use crate::auth::users::UserError;
use crate::auth::vault::{CredentialStatus, VaultError};
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::session::{ClientAddr, CurrentUser};

#[derive(Debug, Clone)]
pub struct CredentialView {
    pub service: &'static str,
    pub title: &'static str,
    pub configured: bool,
    pub hint: String,
    pub updated: String,
    pub message: Option<String>,
    pub error: Option<String>,
}

impl CredentialView {
    fn new(status: &CredentialStatus) -> Self {
        Self {
            service: status.service.as_str(),
            title: status.service.title(),
            configured: status.configured,
            hint: status.hint.clone().unwrap_or_default(),
            updated: status.updated_at.map(when).unwrap_or_default(),
            message: None,
            error: None,
        }
    }
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "settings.html")]
pub struct SettingsPage {
    layout: Layout,
    credentials: Vec<CredentialView>,
    notice: Option<&'static str>,
    error: Option<String>,
    password_error: Option<String>,
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "partials/credential.html")]
pub struct CredentialCard {
    credential: CredentialView,
    csrf_token: String,
}

#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    notice: Option<String>,
}

fn notice_text(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "token_saved" => Some("Token saved."),
        "token_removed" => Some("Token removed."),
        "password_changed" => Some("Password changed. Your other sessions were signed out."),
        _ => None,
    }
}

/// A message to show on one credential card.
#[derive(Debug)]
struct CardNote {
    service: Service,
    message: Option<String>,
    error: Option<String>,
}

async fn render(
    state: &AppState,
    session: &Authenticated,
    status: StatusCode,
    notice: Option<&'static str>,
    password_error: Option<String>,
    card: Option<CardNote>,
) -> PageResult {
    let mut credentials: Vec<CredentialView> =
        state.vault.statuses(session.user.id).await?.iter().map(CredentialView::new).collect();
    if let Some(note) = card
        && let Some(card) = credentials.iter_mut().find(|c| c.service == note.service.as_str())
    {
        card.message = note.message;
        card.error = note.error;
    }
    let page = SettingsPage {
        layout: Layout::signed_in("Settings", "settings", session),
        credentials,
        notice,
        error: None,
        password_error,
    };
    Ok((status, page).into_response())
}

pub async fn page(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    Query(query): Query<NoticeQuery>,
) -> PageResult {
    render(&state, &session, StatusCode::OK, notice_text(query.notice.as_deref()), None, None).await
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    token: SecretString,
}

pub async fn set_token(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    Path(service): Path<String>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> PageResult {
    let service = crate::web::api::me::service(&service)?;
    let result = state.vault.set(session.user.id, service, &form.token, &client.actor(&session)).await;
    respond(&state, &session, service, &headers, result.map(|_| "Token saved."), "token_saved").await
}

/// "Test connection": the card again, with what the service said.
pub async fn test_token(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let service = crate::web::api::me::service(&service)?;
    let (ok, text) = crate::web::api::me::check_connection(&state, &session.user, service).await?;
    if !is_htmx(&headers) {
        let note = if ok {
            CardNote { service, message: Some(text), error: None }
        } else {
            CardNote { service, message: None, error: Some(text) }
        };
        return render(&state, &session, StatusCode::OK, None, None, Some(note)).await;
    }
    let statuses = state.vault.statuses(session.user.id).await?;
    let current = statuses.iter().find(|s| s.service == service).ok_or(ApiError::NotFound("no such service"))?;
    let (message, error) = if ok { (Some(text), None) } else { (None, Some(text)) };
    let credential = CredentialView { message, error, ..CredentialView::new(current) };
    Ok(CredentialCard { credential, csrf_token: session.csrf_token.clone() }.into_response())
}

pub async fn remove_token(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let service = crate::web::api::me::service(&service)?;
    let result = state.vault.remove(session.user.id, service, &client.actor(&session)).await;
    respond(&state, &session, service, &headers, result.map(|_| "Token removed."), "token_removed").await
}

/// HTMX gets the card back (with the outcome in it); plain forms get a redirect, or the
/// page again with the error next to the card.
async fn respond(
    state: &AppState,
    session: &Authenticated,
    service: Service,
    headers: &HeaderMap,
    result: Result<&'static str, VaultError>,
    notice: &str,
) -> PageResult {
    let (message, error) = match result {
        Ok(message) => (Some(message.to_owned()), None),
        Err(VaultError::Invalid(reason)) => (None, Some(reason)),
        Err(e) => return Err(e.into()),
    };
    if !is_htmx(headers) {
        return match error {
            None => Ok(see_other(&format!("/settings?notice={notice}"))),
            Some(reason) => {
                let note = CardNote { service, message: None, error: Some(reason) };
                render(state, session, StatusCode::UNPROCESSABLE_ENTITY, None, None, Some(note)).await
            }
        };
    }
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let statuses = state.vault.statuses(session.user.id).await?;
    let current = statuses.iter().find(|s| s.service == service).ok_or(ApiError::NotFound("no such service"))?;
    let credential = CredentialView { message, error, ..CredentialView::new(current) };
    Ok((status, CredentialCard { credential, csrf_token: session.csrf_token.clone() }).into_response())
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    current_password: SecretString,
    new_password: SecretString,
    confirm_password: SecretString,
}

pub async fn change_password(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    Form(form): Form<PasswordForm>,
) -> Result<Response, PageError> {
    if form.new_password.expose_secret() != form.confirm_password.expose_secret() {
        let error = Some("The two new passwords differ.".to_owned());
        return render(&state, &session, StatusCode::UNPROCESSABLE_ENTITY, None, error, None).await;
    }
    let changed = state
        .auth
        .users
        .change_own_password(
            &session.user,
            &form.current_password,
            &form.new_password,
            &session.session_id,
            &client.actor(&session),
        )
        .await;
    match changed {
        Ok(()) => Ok(see_other("/settings?notice=password_changed")),
        Err(e @ (UserError::WrongPassword | UserError::Invalid(_))) => {
            let message = format!("{}.", capitalise(&e.to_string()));
            render(&state, &session, StatusCode::UNPROCESSABLE_ENTITY, None, Some(message), None).await
        }
        Err(e) => Err(e.into()),
    }
}
