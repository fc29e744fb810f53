//! `POST /api/v1/auth/login` and `/logout`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::web::AppState;
use crate::web::error::{ApiError, ApiJson};
use crate::web::session::{ClientAddr, CurrentUser, cleared_session_cookie, session_cookie};

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    username: String,
    password: SecretString,
}

#[derive(Debug, Serialize)]
pub struct LoginResponse {
    username: String,
    role: String,
    csrf_token: String,
}

pub async fn login(
    State(state): State<AppState>,
    client: ClientAddr,
    jar: CookieJar,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let (cookie, session) =
        state.auth.login(request.username.trim(), &request.password, &client.0, state.auth_settings().local).await?;
    let body = LoginResponse {
        username: session.user.username.clone(),
        role: session.user.role.to_string(),
        csrf_token: session.csrf_token,
    };
    Ok((jar.add(session_cookie(&state, cookie)), ApiJson(body)).into_response())
}

pub async fn logout(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    jar: CookieJar,
) -> Result<Response, ApiError> {
    state.auth.logout(&session, &client.actor(&session)).await?;
    Ok((StatusCode::NO_CONTENT, jar.add(cleared_session_cookie(&state))).into_response())
}
