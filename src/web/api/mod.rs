//! The JSON API under `/api/v1/`: the scriptable twin of every page action.
//! Same services, same rules; errors are `{"error": {"code", "message"}}`.

pub mod admin;
pub mod auth;
pub mod conversations;
pub mod jobs;
pub mod me;
pub mod ws;

use axum::Router;
use axum::routing::{get, post, put};

use super::AppState;
use super::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(auth::login))
        .route("/auth/logout", post(auth::logout))
        .route("/me", get(me::me))
        .route("/me/password", put(me::change_password))
        .route("/me/credentials/{service}", put(me::set_credential).delete(me::remove_credential))
        .route("/me/credentials/{service}/test", post(me::test_credential))
        .route("/conversations", get(conversations::list).post(conversations::create))
        .route(
            "/conversations/{id}",
            get(conversations::get).patch(conversations::rename).delete(conversations::delete),
        )
        .route("/conversations/{id}/export", get(conversations::export))
        .route("/conversations/{id}/messages", post(conversations::send))
        .route("/conversations/{id}/messages/{message_id}", get(conversations::message))
        .route("/conversations/{id}/messages/{message_id}/events", get(conversations::events))
        .route("/conversations/{id}/messages/{message_id}/cancel", post(conversations::cancel))
        .route("/conversations/{id}/messages/{message_id}/approvals/{call_id}", post(conversations::decide))
        .route("/prompts", get(jobs::prompts))
        .route("/jobs", get(jobs::list).post(jobs::create))
        .route("/jobs/{id}", get(jobs::get).patch(jobs::update).delete(jobs::delete))
        .route("/jobs/{id}/runs", get(jobs::runs))
        .route("/jobs/{id}/runs/{run_id}", get(jobs::run))
        .route("/jobs/{id}/run", post(jobs::run_now))
        .route("/ws", get(ws::upgrade))
        .route("/admin/config", get(admin::config))
        .route("/admin/config/reloads", get(admin::reloads))
        .route("/admin/users", get(admin::users).post(admin::create_user))
        .route("/admin/users/{id}", get(admin::user).patch(admin::update_user))
        .route("/admin/users/{id}/password", post(admin::reset_password))
        .route("/admin/audit", get(admin::audit))
        .fallback(not_found)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no API route for this path")
}
