//! `/api/v1/me`: who am I, my tokens (hints only), my password.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::auth::model::{Service, User};
use crate::auth::vault::CredentialStatus;
use crate::web::AppState;
use crate::web::error::{ApiError, ApiJson, ApiPath};
use crate::web::session::{ClientAddr, CurrentUser};

#[derive(Debug, Serialize)]
pub struct Me {
    username: String,
    role: String,
    csrf_token: String,
    credentials: BTreeMap<&'static str, CredentialStatus>,
}

pub async fn me(State(state): State<AppState>, CurrentUser(session): CurrentUser) -> Result<ApiJson<Me>, ApiError> {
    let credentials =
        state.vault.statuses(session.user.id).await?.into_iter().map(|s| (s.service.as_str(), s)).collect();
    Ok(ApiJson(Me {
        username: session.user.username.clone(),
        role: session.user.role.to_string(),
        csrf_token: session.csrf_token.clone(),
        credentials,
    }))
}

/// The service named in a path (`jira` or `confluence`); 404 otherwise. Pages use it too.
pub(crate) fn service(raw: &str) -> Result<Service, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("no such service: use jira or confluence"))
}

#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    token: SecretString,
}

pub async fn set_credential(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    ApiPath(raw): ApiPath<String>,
    ApiJson(request): ApiJson<TokenRequest>,
) -> Result<ApiJson<CredentialStatus>, ApiError> {
    let service = service(&raw)?;
    Ok(ApiJson(state.vault.set(session.user.id, service, &request.token, &client.actor(&session)).await?))
}

pub async fn remove_credential(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    ApiPath(raw): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let service = service(&raw)?;
    state.vault.remove(session.user.id, service, &client.actor(&session)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct PasswordRequest {
    current_password: SecretString,
    new_password: SecretString,
}

pub async fn change_password(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    ApiJson(request): ApiJson<PasswordRequest>,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .users
        .change_own_password(
            &session.user,
            &request.current_password,
            &request.new_password,
            &session.session_id,
            &client.actor(&session),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
pub struct ConnectionCheck {
    ok: bool,
    message: String,
}

/// `POST /api/v1/me/credentials/{service}/test`: calls a harmless tool with the stored
/// token and says who the service thinks the caller is, or why it did not work.
pub async fn test_credential(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath(raw): ApiPath<String>,
) -> Result<ApiJson<ConnectionCheck>, ApiError> {
    let service = service(&raw)?;
    let (ok, message) = check_connection(&state, &session.user, service).await?;
    Ok(ApiJson(ConnectionCheck { ok, message }))
}

/// `(works, what to tell the user)`.
pub async fn check_connection(state: &AppState, user: &User, service: Service) -> Result<(bool, String), ApiError> {
    let snapshot =
        state.config.current().ok_or_else(|| ApiError::Unavailable("no valid configuration is loaded".into()))?;
    Ok(match state.mcp.whoami(&snapshot, user.id, &user.username, service).await {
        Ok(output) if !output.is_error => match identity(&output.text) {
            Some(who) => (true, format!("Connected: {} knows you as {who}.", service.title())),
            None => (true, format!("{} answered: {}", service.title(), clip(&output.text))),
        },
        Ok(output) => (false, format!("{} refused: {}", service.title(), clip(&output.text))),
        Err(e) => (false, format!("The check failed: {e}.")),
    })
}

/// "Display Name (name)" from a user profile answer, wherever the server puts it.
fn identity(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let user = value.get("user").unwrap_or(&value);
    let display = user.get("display_name").or_else(|| user.get("displayName")).and_then(|v| v.as_str())?;
    match user.get("name").or_else(|| user.get("username")).and_then(|v| v.as_str()) {
        Some(name) => Some(format!("{display} ({name})")),
        None => Some(display.to_owned()),
    }
}

fn clip(text: &str) -> String {
    match crate::text::prefix(text.trim(), 600) {
        (kept, true) => format!("{kept}…"),
        (all, false) => all.to_owned(),
    }
}
