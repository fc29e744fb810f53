//! The HTTP adapter: routes for pages, the JSON API, static files and probes; request
//! ids, logs and metrics per request; security headers; the session and CSRF gate.
//! Handlers parse and render; rules live in the services they call.

pub mod api;
pub mod assets;
pub mod context;
pub mod error;
pub mod observe;
pub mod pages;
pub mod probes;
pub mod security;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, Request};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sqlx::SqlitePool;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::auth::AuthService;
use crate::auth::vault::TokenVault;
use crate::chat::ChatService;
use crate::config::{ConfigReloader, ConfigStore};
use crate::jobs::JobService;
use crate::mcp::McpManager;
use crate::telemetry::metrics::Metrics;
use context::WebContext;

/// What handlers share; every field is cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: SqlitePool,
    pub config: Arc<ConfigStore>,
    pub reloader: Arc<ConfigReloader>,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<AuthService>,
    pub vault: Arc<TokenVault>,
    pub chat: Arc<ChatService>,
    pub jobs: Arc<JobService>,
    /// Whether the Kubernetes controller runs here and has synced its caches.
    pub controller: Arc<crate::controller::Health>,
    pub mcp: Arc<McpManager>,
    pub web: Arc<WebContext>,
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Everything: pages, API, static files, probes and metrics.
    All,
    /// Everything but `/metrics`, which has its own listener.
    AllButMetrics,
    /// Only the probes and `/metrics`, for a separate listener.
    OpsOnly,
}

pub fn router(state: AppState, exposure: Exposure) -> Router {
    let mut router = Router::new().route("/healthz", get(probes::healthz)).route("/readyz", get(probes::readyz));
    if exposure != Exposure::AllButMetrics {
        router = router.route("/metrics", get(probes::metrics));
    }
    if exposure != Exposure::OpsOnly {
        router = router
            .route("/static/{*path}", get(assets::serve))
            .nest("/api/v1", api::routes())
            .route("/", get(pages::chat::home))
            .route("/c", post(pages::chat::create))
            .route("/c/{id}", get(pages::chat::conversation))
            .route("/c/{id}/rename", post(pages::chat::rename))
            .route("/c/{id}/delete", post(pages::chat::delete))
            .route("/c/{id}/m/{message_id}", get(pages::chat::message))
            .route("/prompts", get(pages::prompts::page))
            .route("/jobs", get(pages::jobs::list).post(pages::jobs::create))
            .route("/jobs/{id}", get(pages::jobs::job))
            .route("/jobs/{id}/runs", get(pages::jobs::runs))
            .route("/jobs/{id}/run", post(pages::jobs::run_now))
            .route("/jobs/{id}/pause", post(pages::jobs::pause))
            .route("/jobs/{id}/resume", post(pages::jobs::resume))
            .route("/jobs/{id}/delete", post(pages::jobs::delete))
            .route("/login", get(pages::auth::page).post(pages::auth::submit))
            .route("/logout", post(pages::auth::logout))
            .route("/settings", get(pages::settings::page))
            .route("/settings/password", post(pages::settings::change_password))
            .route("/settings/credentials/{service}", post(pages::settings::set_token))
            .route("/settings/credentials/{service}/remove", post(pages::settings::remove_token))
            .route("/settings/credentials/{service}/test", post(pages::settings::test_token))
            .route("/admin", get(pages::admin::index))
            .route("/admin/users", get(pages::admin::users).post(pages::admin::create_user))
            .route("/admin/users/{id}/role", post(pages::admin::set_role))
            .route("/admin/users/{id}/disable", post(pages::admin::disable))
            .route("/admin/users/{id}/enable", post(pages::admin::enable))
            .route("/admin/users/{id}/reset-password", post(pages::admin::reset_password))
            .route("/admin/config", get(pages::admin::config))
            .route("/admin/audit", get(pages::admin::audit));
    }
    router
        .fallback(fallback)
        .layer(from_fn_with_state(state.clone(), session::csrf_guard))
        .layer(from_fn_with_state(state.clone(), session::load_session))
        .layer(from_fn_with_state(state.clone(), security::headers))
        .layer(from_fn_with_state(state.clone(), observe::observe))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// JSON 404 under `/api/`, the 404 page elsewhere.
async fn fallback(request: Request) -> Response {
    if session::is_api(request.uri().path()) {
        error::ApiError::NotFound("no route for this path").into_response()
    } else {
        pages::not_found().await
    }
}
