//! The HTTP adapter: routes, request ids, per-request logs and metrics.
//! Handlers parse and render; rules live in the services they call.

pub mod error;
pub mod observe;
pub mod probes;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::get;
use sqlx::SqlitePool;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::config::ConfigStore;
use crate::telemetry::metrics::Metrics;

/// What handlers share; every field is cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: SqlitePool,
    pub config: Arc<ConfigStore>,
    pub metrics: Arc<Metrics>,
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe::observe))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}
