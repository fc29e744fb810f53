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
pub mod routes;
pub mod security;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, Request};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use sqlx::SqlitePool;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::auth::AuthService;
use crate::auth::vault::TokenVault;
use crate::chat::ChatService;
use crate::config::{ConfigReloader, ConfigStore};
use crate::jobs::JobStore;
use crate::mcp::McpManager;
use crate::telemetry::metrics::Metrics;
use context::WebContext;
use routes::{Access, Route, Routes};

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
    pub jobs: Arc<JobStore>,
    pub prompts: Arc<crate::prompts::PromptLibrary>,
    /// Whether the Kubernetes controller runs here and has synced its caches.
    pub controller: Arc<crate::controller::Health>,
    pub mcp: Arc<McpManager>,
    pub web: Arc<WebContext>,
    pub maintenance: Arc<crate::maintenance::Maintenance>,
}

impl AppState {
    /// The sign-in methods of the live config.
    pub fn auth_settings(&self) -> crate::config::model::AuthSettings {
        self.config.current().map(|s| s.config.service.auth.clone()).unwrap_or_default()
    }

    /// The identity provider's state when single sign-on is configured, looked at again
    /// when the last look is a few seconds old (the admin config page and API show it).
    pub async fn sso_status(&self) -> Option<crate::auth::oidc::ProviderStatus> {
        let oidc = self.auth_settings().oidc?;
        Some(self.auth.oidc.check(&oidc, crate::auth::oidc::OidcService::RECHECK).await)
    }
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
    routes(exposure)
        .fallback(fallback)
        .into_router()
        .layer(from_fn_with_state(state.clone(), session::csrf_guard))
        .layer(from_fn_with_state(state.clone(), session::load_session))
        .layer(from_fn_with_state(state.clone(), security::headers))
        .layer(from_fn_with_state(state.clone(), observe::observe))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Every route a listener with `exposure` serves, with its access rule.
pub fn route_table(exposure: Exposure) -> Vec<Route> {
    routes(exposure).table().to_vec()
}

fn routes(exposure: Exposure) -> Routes {
    use Access::{Admin, Public, SignedIn};
    let mut routes = Routes::default().get("/healthz", Public, probes::healthz).get("/readyz", Public, probes::readyz);
    if exposure != Exposure::AllButMetrics {
        routes = routes.get("/metrics", Public, probes::metrics);
    }
    if exposure == Exposure::OpsOnly {
        return routes;
    }
    routes
        .get("/static/{*path}", Public, assets::serve)
        .nest("/api/v1", api::routes())
        .get("/", SignedIn, pages::chat::home)
        .post("/c", SignedIn, pages::chat::create)
        .get("/c/{id}", SignedIn, pages::chat::conversation)
        .post("/c/{id}/rename", SignedIn, pages::chat::rename)
        .post("/c/{id}/delete", SignedIn, pages::chat::delete)
        .get("/c/{id}/m/{message_id}", SignedIn, pages::chat::message)
        .get("/c/{id}/earlier", SignedIn, pages::chat::earlier)
        .get("/prompts", SignedIn, pages::prompts::page)
        .post("/prompts", SignedIn, pages::prompts::create)
        .get("/prompts/{name}/edit", SignedIn, pages::prompts::edit)
        .post("/prompts/{name}", SignedIn, pages::prompts::update)
        .post("/prompts/{name}/delete", SignedIn, pages::prompts::delete)
        .get("/jobs", SignedIn, pages::jobs::list)
        .post("/jobs", SignedIn, pages::jobs::create)
        .get("/jobs/{id}", SignedIn, pages::jobs::job)
        .get("/jobs/{id}/runs", SignedIn, pages::jobs::runs)
        .post("/jobs/{id}/run", SignedIn, pages::jobs::run_now)
        .post("/jobs/{id}/runs/{run_id}/deliveries/{target}/retry", SignedIn, pages::jobs::redeliver)
        .post("/jobs/{id}/pause", SignedIn, pages::jobs::pause)
        .post("/jobs/{id}/resume", SignedIn, pages::jobs::resume)
        .post("/jobs/{id}/delete", SignedIn, pages::jobs::delete)
        .get("/login", Public, pages::auth::page)
        .post("/login", Public, pages::auth::submit)
        .post("/logout", SignedIn, pages::auth::logout)
        .get("/auth/oidc/start", Public, pages::auth::sso_start)
        .get(pages::auth::CALLBACK_PATH, Public, pages::auth::sso_callback)
        .get("/settings", SignedIn, pages::settings::page)
        .post("/settings/password", SignedIn, pages::settings::change_password)
        .post("/settings/credentials/{service}", SignedIn, pages::settings::set_token)
        .post("/settings/credentials/{service}/remove", SignedIn, pages::settings::remove_token)
        .post("/settings/credentials/{service}/test", SignedIn, pages::settings::test_token)
        .get("/admin", Admin, pages::admin::index)
        .get("/admin/users", Admin, pages::admin::users)
        .post("/admin/users", Admin, pages::admin::create_user)
        .post("/admin/users/{id}/role", Admin, pages::admin::set_role)
        .post("/admin/users/{id}/disable", Admin, pages::admin::disable)
        .post("/admin/users/{id}/enable", Admin, pages::admin::enable)
        .post("/admin/users/{id}/reset-password", Admin, pages::admin::reset_password)
        .post("/admin/users/{id}/sso-link", Admin, pages::admin::allow_sso_link)
        .get("/admin/config", Admin, pages::admin::config)
        .post("/admin/maintenance/{task}", Admin, pages::admin::run_maintenance)
        .get("/admin/audit", Admin, pages::admin::audit)
}

/// JSON 404 under `/api/`, the 404 page elsewhere.
async fn fallback(request: Request) -> Response {
    if session::is_api(request.uri().path()) {
        error::ApiError::NotFound("no route for this path").into_response()
    } else {
        pages::not_found().await
    }
}
