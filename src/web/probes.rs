//! `/healthz`, `/readyz` and `/metrics`: what kubelet and Prometheus ask.
//! Checks read shared state only; they never change it.

use crate::telemetry::metrics::PoolLabels;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

#[derive(Debug, Deserialize)]
pub struct ReadyzQuery {
    /// Present (`?verbose`) to list every check as text, as kube-apiserver does.
    verbose: Option<String>,
}

#[derive(Debug, Serialize)]
struct FailedCheck {
    check: &'static str,
    message: String,
}

/// Readiness: the database is open and migrated, a valid config is loaded, and — when
/// this replica runs the controller — its caches are synced.
pub async fn readyz(State(state): State<AppState>, Query(query): Query<ReadyzQuery>) -> Response {
    let mut checks = vec![("database", crate::db::readiness(&state.db).await), ("config", config_check(&state))];
    if let Some(synced) = state.controller.check() {
        checks.push(("controller", synced));
    }
    let ready = checks.iter().all(|(_, result)| result.is_ok());
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };

    if query.verbose.is_some() {
        let mut text = String::new();
        for (name, result) in &checks {
            match result {
                Ok(()) => text.push_str(&format!("[+]{name} ok\n")),
                Err(reason) => text.push_str(&format!("[-]{name} failed: {reason}\n")),
            }
        }
        text.push_str(if ready { "readyz check passed\n" } else { "readyz check failed\n" });
        return (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response();
    }
    let failed: Vec<FailedCheck> = checks
        .into_iter()
        .filter_map(|(check, result)| result.err().map(|message| FailedCheck { check, message }))
        .collect();
    let body = if ready {
        serde_json::json!({ "status": "ok" })
    } else {
        serde_json::json!({ "status": "unavailable", "failed": failed })
    };
    (status, Json(body)).into_response()
}

fn config_check(state: &AppState) -> Result<(), String> {
    match state.config.current() {
        Some(_) => Ok(()),
        None if state.config.last_rejected().is_some() => Err(
            "no valid configuration loaded: the config directory was rejected (see the log or run `promptops config check`)"
                .into(),
        ),
        None => Err("no configuration loaded yet".into()),
    }
}

/// Prometheus scrape endpoint.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let metrics = &state.metrics;
    metrics.answers_running.set(i64::try_from(state.chat.running()).unwrap_or(i64::MAX));
    let (size, idle) = (i64::from(state.db.size()), i64::try_from(state.db.num_idle()).unwrap_or(0));
    for (kind, count) in [("in_use", size - idle), ("idle", idle)] {
        metrics.db_connections.get_or_create(&PoolLabels { pool: "main".into(), state: kind.into() }).set(count);
    }
    let body = state.metrics.encode().map_err(|e| anyhow::anyhow!("encoding metrics failed: {e}"))?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response())
}
