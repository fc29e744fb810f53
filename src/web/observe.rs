//! Per-request logging and metrics: one span per request carrying the request id and
//! the matched route, a log line with status and latency. Headers are never logged.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::telemetry::metrics::{HttpLabels, Metrics};

/// Routes polled by kubelet and Prometheus; their lines go to debug to keep logs readable.
const QUIET_ROUTES: &[&str] = &["/healthz", "/readyz", "/metrics"];

pub async fn observe(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let method = request.method().clone();
    let span = tracing::info_span!("request", %method, %route, %request_id);

    let response = next.run(request).instrument(span.clone()).await;

    let latency = start.elapsed();
    let status = response.status().as_u16();
    let labels = HttpLabels { method: method.to_string(), route, status };
    metrics.http_requests.get_or_create(&labels).inc();
    metrics.http_request_duration.get_or_create(&labels).observe(latency.as_secs_f64());
    let latency_ms = latency.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if QUIET_ROUTES.contains(&labels.route.as_str()) {
            tracing::debug!(status, latency_ms, "request finished");
        } else {
            tracing::info!(status, latency_ms, "request finished");
        }
    });
    response
}
