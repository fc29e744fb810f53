//! The jobs pages: the list with the form for a personal job, one job with its run history
//! (output rendered from Markdown and sanitised), run now, pause/resume and delete. Plain
//! forms with Post/Redirect/Get; an open run's history is polled by HTMX until it ends.

use std::collections::BTreeMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use super::{Layout, PageResult, capitalise, see_other, when};
use crate::auth::model::Role;
use crate::auth::session::Authenticated;
use crate::chat;
use crate::db::repositories::deliveries::DeliveryRow;
use crate::db::repositories::jobs::{JobRow, RunRow};
use crate::jobs::model::{ConversationTarget, JiraComment, Target};
use crate::jobs::{DeliveryState, JobError, NewPersonalJob, RunStatus, Source};
use crate::web::AppState;
use crate::web::session::{ClientAddr, CurrentUser};

/// A job in the list.
#[derive(Debug)]
pub struct JobLine {
    id: String,
    name: String,
    personal: bool,
    namespace: String,
    schedule: String,
    time_zone: String,
    next_run: Option<Moment>,
    suspended: bool,
    problem: Option<String>,
    /// The newest run still open (queued or running), else the last finished one.
    last: Option<RunBadge>,
}

#[derive(Debug)]
pub struct RunBadge {
    status: &'static str,
    class: &'static str,
    when: String,
}

/// An instant as pages show it: readable in a time zone, machine-readable in `datetime`.
#[derive(Debug)]
pub struct Moment {
    text: String,
    iso: String,
}

impl Moment {
    fn new(at: DateTime<Utc>, zone: &str) -> Self {
        let text = match zone.parse::<Tz>() {
            Ok(tz) if zone != "UTC" => format!("{} {zone}", at.with_timezone(&tz).format("%Y-%m-%d %H:%M")),
            _ => when(at),
        };
        Self { text, iso: at.to_rfc3339() }
    }
}

/// The badge class of a run status (the classes are defined in static/css/input.css).
fn status_class(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Succeeded => "badge-ok",
        RunStatus::Failed => "badge-error",
        RunStatus::Cancelled | RunStatus::Skipped => "badge-muted",
        RunStatus::Queued | RunStatus::Running => "badge-busy",
    }
}

/// A prompt of the library a personal job can run, with its variable fields.
#[derive(Debug)]
pub struct PromptChoice {
    name: String,
    title: String,
    description: String,
    selected: bool,
    variables: Vec<VariableField>,
}

#[derive(Debug)]
pub struct VariableField {
    /// The form field: `var.{prompt}.{variable}`.
    field: String,
    /// The element id.
    id: String,
    name: String,
    description: String,
    required: bool,
    value: String,
}

/// What the create form shows: empty, or what was sent with the reason it was refused.
#[derive(Debug, Default)]
pub struct JobForm {
    name: String,
    schedule: String,
    time_zone: String,
    prompt_ref: String,
    prompt: String,
    /// `var.{prompt}.{variable}` → value.
    variables: BTreeMap<String, String>,
    /// Append each run to a conversation of mine.
    to_conversation: bool,
    /// Comment each run on this Jira issue.
    jira_issue: String,
    error: Option<String>,
}

impl JobForm {
    fn blank() -> Self {
        Self { time_zone: "UTC".into(), ..Self::default() }
    }

    fn from_fields(fields: Vec<(String, String)>) -> Self {
        let mut form = Self::default();
        for (key, value) in fields {
            match key.as_str() {
                "name" => form.name = value,
                "schedule" => form.schedule = value,
                "time_zone" => form.time_zone = value,
                "prompt_ref" => form.prompt_ref = value,
                "prompt" => form.prompt = value,
                "to_conversation" => form.to_conversation = value == "on",
                "jira_issue" => form.jira_issue = value,
                _ if key.starts_with("var.") => {
                    form.variables.insert(key, value);
                }
                _ => {}
            }
        }
        form
    }

    /// The delivery targets the form asks for.
    fn deliver(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        if self.to_conversation {
            targets.push(Target { conversation: Some(ConversationTarget {}), ..Target::named("conversation") });
        }
        if !self.jira_issue.trim().is_empty() {
            targets.push(Target {
                jira_comment: Some(JiraComment { issue: self.jira_issue.trim().to_owned() }),
                ..Target::named("jira")
            });
        }
        targets
    }

    /// The values given for the chosen prompt's variables (empty ones left out, so defaults apply).
    fn chosen_variables(&self) -> BTreeMap<String, String> {
        let prefix = format!("var.{}.", self.prompt_ref);
        self.variables
            .iter()
            .filter_map(|(key, value)| {
                let name = key.strip_prefix(&prefix)?;
                (!value.trim().is_empty()).then(|| (name.to_owned(), value.trim().to_owned()))
            })
            .collect()
    }
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "jobs.html")]
pub struct JobsPage {
    layout: Layout,
    jobs: Vec<JobLine>,
    form: JobForm,
    prompts: Vec<PromptChoice>,
    time_zones: Vec<&'static str>,
    notice: Option<&'static str>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    notice: Option<String>,
}

fn notice_text(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "job_created" => Some("Job created. It runs on its schedule; Run now runs it at once."),
        "job_deleted" => Some("Job deleted with its run history."),
        "job_paused" => Some("Job paused: it does not run on its schedule until you resume it."),
        "job_resumed" => Some("Job resumed."),
        "run_queued" => Some("Run queued. Its output shows below when it ends."),
        "redelivering" => Some("Delivering again. The delivery's state shows below."),
        _ => None,
    }
}

pub async fn list(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    Query(query): Query<NoticeQuery>,
) -> PageResult {
    render_list(&state, &session, StatusCode::OK, JobForm::blank(), notice_text(query.notice.as_deref())).await
}

async fn render_list(
    state: &AppState,
    session: &Authenticated,
    status: StatusCode,
    form: JobForm,
    notice: Option<&'static str>,
) -> PageResult {
    let mut jobs = Vec::new();
    for (job, last) in state.jobs.list_with_latest_run(session.user.id).await? {
        jobs.push(JobLine {
            next_run: job.next_run_at.map(|at| Moment::new(at, &job.time_zone)),
            last: last.map(|run| RunBadge {
                class: status_class(run.status),
                when: when(run.finished_at.or(run.started_at).unwrap_or(run.created_at)),
                status: run.status.as_str(),
            }),
            personal: job.source == Source::Personal,
            namespace: job.namespace.unwrap_or_default(),
            id: job.id,
            name: job.name,
            schedule: job.schedule,
            time_zone: job.time_zone,
            suspended: job.suspended,
            problem: job.problem,
        });
    }
    let prompts = state
        .prompts
        .list(session.user.id)
        .await?
        .into_iter()
        .map(|prompt| PromptChoice {
            selected: prompt.name == form.prompt_ref,
            variables: prompt
                .variables
                .into_iter()
                .map(|v| {
                    let field = format!("var.{}.{}", prompt.name, v.name);
                    VariableField {
                        id: format!("var-{}-{}", prompt.name, v.name),
                        value: form.variables.get(&field).cloned().or(v.default).unwrap_or_default(),
                        field,
                        name: v.name,
                        description: v.description,
                        required: v.required,
                    }
                })
                .collect(),
            name: prompt.name,
            title: prompt.title,
            description: prompt.description,
        })
        .collect();
    let page = JobsPage {
        layout: Layout::signed_in("Jobs", "jobs", session),
        jobs,
        prompts,
        time_zones: chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect(),
        // A refused form says why next to the form, not at the top.
        error: None,
        form,
        notice,
    };
    Ok((status, page).into_response())
}

/// `POST /jobs`: a personal job from the form; the form again, kept, with the reason when refused.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    Form(fields): Form<Vec<(String, String)>>,
) -> PageResult {
    let mut form = JobForm::from_fields(fields);
    let new = NewPersonalJob {
        name: form.name.clone(),
        schedule: form.schedule.clone(),
        time_zone: form.time_zone.clone(),
        prompt_ref: Some(form.prompt_ref.clone()),
        prompt: Some(form.prompt.clone()),
        variables: form.chosen_variables(),
        deliver: form.deliver(),
    };
    match state.jobs.create_personal(session.user.id, new, &client.actor(&session)).await {
        Ok(job) => Ok(see_other(&format!("/jobs/{}?notice=job_created", job.id))),
        Err(JobError::Invalid(reason)) => {
            form.error = Some(capitalise(&reason));
            render_list(&state, &session, StatusCode::UNPROCESSABLE_ENTITY, form, None).await
        }
        Err(e) => Err(e.into()),
    }
}

/// One job as its page shows it.
#[derive(Debug)]
pub struct JobDetail {
    id: String,
    name: String,
    personal: bool,
    /// `namespace/name` of the PromptJob resource.
    resource: String,
    schedule: String,
    time_zone: String,
    prompt_ref: Option<String>,
    prompt: Option<String>,
    variables: Vec<(String, String)>,
    suspended: bool,
    problem: Option<String>,
    next_run: Option<Moment>,
    last_schedule: Option<Moment>,
    concurrency_policy: &'static str,
    created: String,
    /// The caller's own personal job: pause, resume, delete.
    editable: bool,
    /// Run now: the caller's own job, or any Kubernetes job for admins.
    can_run: bool,
}

impl JobDetail {
    fn new(job: JobRow, session: &Authenticated) -> Self {
        let personal = job.source == Source::Personal;
        let editable = personal && job.owner_id == Some(session.user.id);
        Self {
            resource: format!("{}/{}", job.namespace.as_deref().unwrap_or_default(), job.name),
            can_run: editable || (!personal && session.user.role == Role::Admin),
            editable,
            personal,
            next_run: job.next_run_at.map(|at| Moment::new(at, &job.time_zone)),
            last_schedule: job.last_schedule_at.map(|at| Moment::new(at, &job.time_zone)),
            created: when(job.created_at),
            variables: job.variables.0.into_iter().collect(),
            id: job.id,
            name: job.name,
            schedule: job.schedule,
            time_zone: job.time_zone,
            prompt_ref: job.prompt_ref,
            prompt: job.prompt,
            suspended: job.suspended,
            problem: job.problem,
            concurrency_policy: job.concurrency_policy.as_str(),
        }
    }
}

/// A run in the history.
#[derive(Debug)]
pub struct RunView {
    id: String,
    status: &'static str,
    class: &'static str,
    open: bool,
    trigger: &'static str,
    attempt: i64,
    scheduled: String,
    started: String,
    finished: String,
    tokens: String,
    /// Sanitised HTML of the output.
    html: String,
    error: Option<String>,
    tool_calls: Vec<CallView>,
    deliveries: Vec<DeliveryItem>,
}

/// Where one delivery of a run stands.
#[derive(Debug)]
pub struct DeliveryItem {
    target: String,
    kind: &'static str,
    state: &'static str,
    class: &'static str,
    attempts: i64,
    /// An http(s) address of what was written.
    link: Option<String>,
    error: Option<String>,
    /// When a pending delivery is tried next.
    next: String,
}

impl From<DeliveryRow> for DeliveryItem {
    fn from(d: DeliveryRow) -> Self {
        let pending = d.state == DeliveryState::Pending;
        Self {
            kind: d.target.0.destination().map_or("unknown", |t| t.kind()),
            state: d.state.as_str(),
            class: match d.state {
                DeliveryState::Pending => "badge-busy",
                DeliveryState::Delivered => "badge-ok",
                DeliveryState::Failed => "badge-error",
            },
            attempts: d.attempts,
            link: d.link.filter(|l| l.starts_with("https://") || l.starts_with("http://")),
            error: d.last_error.filter(|_| d.state != DeliveryState::Delivered),
            next: if pending { d.next_attempt_at.map(when).unwrap_or_default() } else { String::new() },
            target: d.target_name,
        }
    }
}

/// A tool call a run made.
#[derive(Debug)]
pub struct CallView {
    name: String,
    /// Pretty-printed when they are JSON.
    arguments: String,
    status: &'static str,
    result: Option<String>,
    writes: bool,
}

impl From<RunRow> for RunView {
    fn from(run: RunRow) -> Self {
        let tokens = match (run.prompt_tokens, run.completion_tokens) {
            (None, None) => String::new(),
            (prompt, completion) => {
                format!("{} in, {} out", prompt.unwrap_or_default(), completion.unwrap_or_default())
            }
        };
        let tool_calls = run
            .tool_calls
            .0
            .into_iter()
            .map(|call| CallView {
                arguments: serde_json::from_str::<serde_json::Value>(&call.arguments)
                    .ok()
                    .and_then(|value| serde_json::to_string_pretty(&value).ok())
                    .unwrap_or(call.arguments),
                name: call.name,
                status: call.status.as_str(),
                result: call.result,
                writes: call.writes,
            })
            .collect();
        Self {
            class: status_class(run.status),
            open: run.status.is_open(),
            scheduled: when(run.scheduled_for),
            started: run.started_at.map(when).unwrap_or_default(),
            finished: run.finished_at.map(when).unwrap_or_default(),
            html: chat::markdown::render(&run.output),
            tokens,
            tool_calls,
            id: run.id,
            status: run.status.as_str(),
            trigger: run.trigger.as_str(),
            attempt: run.attempt,
            error: run.error,
            deliveries: Vec::new(),
        }
    }
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "job.html")]
pub struct JobPage {
    layout: Layout,
    job: JobDetail,
    runs: Vec<RunView>,
    polling: bool,
    notice: Option<&'static str>,
    error: Option<String>,
}

/// The run history alone, for HTMX to poll while a run is open.
#[derive(Debug, Template, WebTemplate)]
#[template(path = "partials/job_runs.html")]
pub struct RunsPartial {
    job_id: String,
    runs: Vec<RunView>,
    polling: bool,
    csrf_token: String,
    can_run: bool,
}

/// The run history with each run's deliveries; poll while a run or a delivery is open.
async fn history(state: &AppState, session: &Authenticated, id: &str) -> Result<(Vec<RunView>, bool), JobError> {
    let mut deliveries = state.jobs.history_deliveries(session.user.id, id).await?;
    let runs: Vec<RunView> = state
        .jobs
        .runs(session.user.id, id)
        .await?
        .into_iter()
        .map(|run| {
            let of_run = deliveries.remove(&run.id).unwrap_or_default();
            RunView { deliveries: of_run.into_iter().map(DeliveryItem::from).collect(), ..RunView::from(run) }
        })
        .collect();
    let polling = runs.iter().any(|r| r.open || r.deliveries.iter().any(|d| d.state == "pending"));
    Ok((runs, polling))
}

pub async fn job(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    Path(id): Path<String>,
    Query(query): Query<NoticeQuery>,
) -> PageResult {
    let job = state.jobs.get(session.user.id, &id).await?;
    let (runs, polling) = history(&state, &session, &id).await?;
    let page = JobPage {
        layout: Layout::signed_in(&job.name, "jobs", &session),
        job: JobDetail::new(job, &session),
        runs,
        polling,
        notice: notice_text(query.notice.as_deref()),
        error: None,
    };
    Ok(page.into_response())
}

/// `GET /jobs/{id}/runs`: the run history partial.
pub async fn runs(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    Path(id): Path<String>,
) -> PageResult {
    let job = state.jobs.get(session.user.id, &id).await?;
    let (runs, polling) = history(&state, &session, &id).await?;
    let can_run = JobDetail::new(job, &session).can_run;
    Ok(RunsPartial { job_id: id, runs, polling, csrf_token: session.csrf_token.clone(), can_run }.into_response())
}

/// `POST /jobs/{id}/runs/{run_id}/deliveries/{target}/retry`: "Deliver again".
pub async fn redeliver(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    Path((id, run_id, target)): Path<(String, String, String)>,
) -> PageResult {
    let is_admin = session.user.role == Role::Admin;
    state.jobs.redeliver(session.user.id, is_admin, &id, &run_id, &target, &client.actor(&session)).await?;
    Ok(see_other(&format!("/jobs/{id}?notice=redelivering#run-{run_id}")))
}

pub async fn run_now(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    Path(id): Path<String>,
) -> PageResult {
    state.jobs.run_now_for(session.user.id, session.user.role == Role::Admin, &id, &client.actor(&session)).await?;
    Ok(see_other(&format!("/jobs/{id}?notice=run_queued")))
}

pub async fn pause(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    Path(id): Path<String>,
) -> PageResult {
    state.jobs.set_suspended(session.user.id, &id, true, &client.actor(&session)).await?;
    Ok(see_other(&format!("/jobs/{id}?notice=job_paused")))
}

pub async fn resume(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    Path(id): Path<String>,
) -> PageResult {
    state.jobs.set_suspended(session.user.id, &id, false, &client.actor(&session)).await?;
    Ok(see_other(&format!("/jobs/{id}?notice=job_resumed")))
}

pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    Path(id): Path<String>,
) -> PageResult {
    state.jobs.delete_personal(session.user.id, &id, &client.actor(&session)).await?;
    Ok(see_other("/jobs?notice=job_deleted"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_chosen_prompts_filled_variables_are_sent() {
        let fields = [
            ("csrf_token", "t"),
            ("name", "Blockers"),
            ("prompt_ref", "blockers"),
            ("var.blockers.project", " PAY "),
            ("var.blockers.owner", ""),
            ("var.release-notes.project", "OTHER"),
        ];
        let form = JobForm::from_fields(fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        assert_eq!(form.name, "Blockers");
        assert_eq!(form.chosen_variables(), BTreeMap::from([("project".to_owned(), "PAY".to_owned())]));
    }

    #[test]
    fn moments_read_in_the_jobs_time_zone() {
        let at = DateTime::parse_from_rfc3339("2026-03-30T07:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(Moment::new(at, "Europe/Berlin").text, "2026-03-30 09:00 Europe/Berlin");
        assert_eq!(Moment::new(at, "UTC").text, "2026-03-30 07:00 UTC");
        assert_eq!(Moment::new(at, "Nowhere/Else").text, "2026-03-30 07:00 UTC");
    }
}
