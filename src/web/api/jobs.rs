//! `/api/v1/jobs…`: scheduled jobs (all Kubernetes ones and the caller's personal ones),
//! their runs, run now, pause/resume and delete.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::agent::ToolCallRecord;
use crate::auth::model::Role;
use crate::chat;
use crate::db::repositories::deliveries::DeliveryRow;
use crate::db::repositories::jobs::JobRow;
use crate::db::repositories::jobs::RunRow;
use crate::jobs::{ConcurrencyPolicy, DeliveryState, NewPersonalJob, RunStatus, Source, Target, Trigger};
use crate::web::AppState;
use crate::web::error::{ApiError, ApiJson, ApiPath};
use crate::web::session::{ClientAddr, CurrentUser};

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub source: Source,
    pub namespace: Option<String>,
    pub name: String,
    pub schedule: String,
    pub time_zone: String,
    pub prompt_ref: Option<String>,
    pub prompt: Option<String>,
    pub variables: BTreeMap<String, String>,
    pub suspended: bool,
    pub concurrency_policy: ConcurrencyPolicy,
    pub problem: Option<String>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_schedule_at: Option<DateTime<Utc>>,
    /// Where succeeded runs are delivered.
    pub deliver: Vec<Target>,
    /// Whether the caller may pause, resume and delete it (their own personal job).
    pub editable: bool,
}

impl JobView {
    pub fn new(job: &JobRow, user_id: i64) -> Self {
        Self {
            id: job.id.clone(),
            source: job.source,
            namespace: job.namespace.clone(),
            name: job.name.clone(),
            schedule: job.schedule.clone(),
            time_zone: job.time_zone.clone(),
            prompt_ref: job.prompt_ref.clone(),
            prompt: job.prompt.clone(),
            variables: job.variables.0.clone(),
            suspended: job.suspended,
            concurrency_policy: job.concurrency_policy,
            problem: job.problem.clone(),
            next_run_at: job.next_run_at,
            last_schedule_at: job.last_schedule_at,
            deliver: job.deliver.0.clone(),
            editable: job.owner_id == Some(user_id),
        }
    }
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
    /// Delivery targets, as `spec.deliver` of a PromptJob (plus `conversation`).
    #[serde(default)]
    deliver: Vec<Target>,
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
        deliver: body.deliver,
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

/// A run as the history lists it.
#[derive(Debug, Serialize)]
pub struct RunSummary {
    pub id: String,
    pub job_id: String,
    pub trigger: Trigger,
    pub scheduled_for: DateTime<Utc>,
    pub attempt: i64,
    pub status: RunStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub output: String,
    pub error: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub created_at: DateTime<Utc>,
}

impl From<RunRow> for RunSummary {
    fn from(run: RunRow) -> Self {
        Self {
            id: run.id,
            job_id: run.job_id,
            trigger: run.trigger,
            scheduled_for: run.scheduled_for,
            attempt: run.attempt,
            status: run.status,
            started_at: run.started_at,
            finished_at: run.finished_at,
            output: run.output,
            error: run.error,
            prompt_tokens: run.prompt_tokens,
            completion_tokens: run.completion_tokens,
            created_at: run.created_at,
        }
    }
}

/// `GET /api/v1/jobs/{id}/runs`: the latest runs, newest first.
pub async fn runs(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Vec<RunSummary>>, ApiError> {
    Ok(ApiJson(state.jobs.runs(session.user.id, &id).await?.into_iter().map(RunSummary::from).collect()))
}

/// One run with its output rendered and sanitised (`html`), its tool calls and deliveries.
#[derive(Debug, Serialize)]
pub struct RunDetail {
    #[serde(flatten)]
    run: RunSummary,
    html: String,
    tool_calls: Vec<ToolCallRecord>,
    deliveries: Vec<DeliveryView>,
}

/// Where one delivery of a run stands.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    pub id: String,
    pub target: String,
    pub kind: &'static str,
    pub state: DeliveryState,
    pub attempts: i64,
    pub link: Option<String>,
    pub error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl From<&DeliveryRow> for DeliveryView {
    fn from(d: &DeliveryRow) -> Self {
        Self {
            id: d.id.clone(),
            target: d.target_name.clone(),
            kind: d.target.0.destination().map_or("unknown", |t| t.kind()),
            state: d.state,
            attempts: d.attempts,
            link: d.link.clone(),
            error: d.last_error.clone(),
            next_attempt_at: d.next_attempt_at.filter(|_| d.state == DeliveryState::Pending),
            updated_at: d.updated_at,
        }
    }
}

pub async fn run(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath((id, run_id)): ApiPath<(String, String)>,
) -> Result<ApiJson<RunDetail>, ApiError> {
    let mut run = state.jobs.find_run(session.user.id, &id, &run_id).await?;
    let tool_calls = std::mem::take(&mut run.tool_calls.0);
    let html = chat::markdown::render(&run.output);
    let deliveries =
        state.jobs.deliveries(session.user.id, &id, &run_id).await?.iter().map(DeliveryView::from).collect();
    Ok(ApiJson(RunDetail { run: run.into(), html, tool_calls, deliveries }))
}

/// `POST /api/v1/jobs/{id}/runs/{run_id}/deliveries/{target}/retry`: deliver a failed
/// delivery again; 202 with it, pending; 422 when it is not failed.
pub async fn redeliver(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    ApiPath((id, run_id, target)): ApiPath<(String, String, String)>,
) -> Result<(StatusCode, ApiJson<DeliveryView>), ApiError> {
    let is_admin = session.user.role == Role::Admin;
    let actor = client.actor(&session);
    let delivery = state.jobs.redeliver(session.user.id, is_admin, &id, &run_id, &target, &actor).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(DeliveryView::from(&delivery))))
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
