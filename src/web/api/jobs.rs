//! `/api/v1/prompts` and `/api/v1/jobs…`: the prompt library, scheduled jobs (all Kubernetes
//! ones and the caller's personal ones), their runs, run now, pause/resume and delete.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::auth::model::Role;
use crate::chat::{self, PromptInfo};
use crate::db::repositories::jobs::RunRow;
use crate::jobs::{JobView, NewPersonalJob};
use crate::web::AppState;
use crate::web::error::{ApiError, ApiJson, ApiPath};
use crate::web::session::{ClientAddr, CurrentUser};

/// `GET /api/v1/prompts`: prompts.json (`source: "file"`), then Prompt resources
/// (`source: "kubernetes"`, named `namespace/name`).
pub async fn prompts(
    State(state): State<AppState>,
    CurrentUser(_): CurrentUser,
) -> Result<ApiJson<Vec<PromptInfo>>, ApiError> {
    Ok(ApiJson(state.jobs.prompts().await?))
}

pub async fn list(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
) -> Result<ApiJson<Vec<JobView>>, ApiError> {
    let user = session.user.id;
    Ok(ApiJson(state.jobs.list(user).await?.iter().map(|job| JobView::new(job, user)).collect()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    name: String,
    schedule: String,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    prompt_ref: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

/// `POST /api/v1/jobs`: a personal job of the caller. 201 with the job; 422 with the reason.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    ApiJson(body): ApiJson<NewJob>,
) -> Result<(StatusCode, ApiJson<JobView>), ApiError> {
    let new = NewPersonalJob {
        name: body.name,
        schedule: body.schedule,
        time_zone: body.time_zone.unwrap_or_default(),
        prompt_ref: body.prompt_ref,
        prompt: body.prompt,
        variables: body.variables,
    };
    let job = state.jobs.create_personal(session.user.id, new, &client.actor(&session)).await?;
    Ok((StatusCode::CREATED, ApiJson(JobView::new(&job, session.user.id))))
}

pub async fn get(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<JobView>, ApiError> {
    let job = state.jobs.get(session.user.id, &id).await?;
    Ok(ApiJson(JobView::new(&job, session.user.id)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    suspended: bool,
}

/// `PATCH /api/v1/jobs/{id}` `{suspended}`: pause or resume a personal job; 409 for a job
/// managed by Kubernetes.
pub async fn update(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    ApiPath(id): ApiPath<String>,
    ApiJson(change): ApiJson<Change>,
) -> Result<ApiJson<JobView>, ApiError> {
    let job = state.jobs.set_suspended(session.user.id, &id, change.suspended, &client.actor(&session)).await?;
    Ok(ApiJson(JobView::new(&job, session.user.id)))
}

pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.jobs.delete_personal(session.user.id, &id, &client.actor(&session)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/jobs/{id}/runs`: the latest runs, newest first.
pub async fn runs(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Vec<RunRow>>, ApiError> {
    Ok(ApiJson(state.jobs.runs(session.user.id, &id).await?))
}

/// One run with its output rendered and sanitised (`html`) and its tool calls.
#[derive(Debug, Serialize)]
pub struct RunView {
    #[serde(flatten)]
    run: RunRow,
    html: String,
    tool_calls: serde_json::Value,
}

pub async fn run(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath((id, run_id)): ApiPath<(String, String)>,
) -> Result<ApiJson<RunView>, ApiError> {
    let run = state.jobs.run(session.user.id, &id, &run_id).await?;
    let tool_calls = serde_json::from_str(&run.tool_calls).unwrap_or_else(|_| serde_json::Value::Array(Vec::new()));
    Ok(ApiJson(RunView { html: chat::markdown::render(&run.output), tool_calls, run }))
}

#[derive(Debug, Serialize)]
pub struct Queued {
    run_id: String,
}

/// `POST /api/v1/jobs/{id}/run`: 202 `{run_id}`; the run is queued and the worker takes it.
pub async fn run_now(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, ApiJson<Queued>), ApiError> {
    let is_admin = session.user.role == Role::Admin;
    let run = state.jobs.run_now_for(session.user.id, is_admin, &id, &client.actor(&session)).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(Queued { run_id: run.id })))
}
