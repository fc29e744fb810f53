//! Scheduled prompts and their runs. A job — a PromptJob resource or a personal job made in
//! the UI — has a cron schedule in a time zone; the scheduler records each firing as a run
//! (once: the run's idempotency key is unique) and queues it on the durable apalis queue in
//! the same transaction; the worker runs the prompt through the chat agent loop with the
//! job's credentials and stores what happened. The controller and the web handlers are
//! thin adapters over `JobService`.

pub mod queue;
pub mod runner;
pub mod schedule;
pub mod scheduler;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::SqlitePool;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Actor, AuditLog, Outcome};
use crate::chat::{PromptInfo, VariableInfo};
use crate::config::ConfigStore;
use crate::config::model::{NamedPrompt, PromptVariable};
use crate::controller::resources::ConcurrencyPolicy;
use crate::db::repositories::jobs::{self, JobRow, PromptResourceRow, RunRow};
use crate::llm::LlmClient;
use crate::mcp::McpManager;
use crate::telemetry::metrics::Metrics;
pub use schedule::{Schedule, ScheduleError};

/// How many runs a job's history shows.
pub const HISTORY: i64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no such job")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("this job is managed by Kubernetes; change its PromptJob resource instead")]
    Managed,
    #[error("only an admin may run a job managed by Kubernetes from here")]
    Forbidden,
    #[error("the run queue is unavailable: {0}")]
    Queue(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Where a job comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Kubernetes,
    Personal,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kubernetes => "kubernetes",
            Self::Personal => "personal",
        }
    }
}

/// What starts a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    /// "Run now" in the UI or API.
    Manual,
    /// A new value of the `promptops.dev/run-now` annotation.
    Annotation,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Annotation => "annotation",
        }
    }
}

/// A job as its source declares it.
#[derive(Debug, Clone)]
pub struct JobDefinition {
    pub id: String,
    pub source: Source,
    pub namespace: Option<String>,
    pub name: String,
    pub owner_id: Option<i64>,
    pub schedule: String,
    pub time_zone: String,
    /// A Prompt resource (Kubernetes jobs) or a prompts.json prompt (personal jobs).
    pub prompt_ref: Option<String>,
    /// Inline prompt text.
    pub prompt: Option<String>,
    pub variables: BTreeMap<String, String>,
    pub suspended: bool,
    pub concurrency_policy: ConcurrencyPolicy,
    pub starting_deadline_seconds: Option<i64>,
    pub retry_limit: i64,
    pub retry_backoff_seconds: i64,
    /// Secret name and key holding the run's token (Kubernetes jobs).
    pub secret: Option<(String, String)>,
    pub allowed_write_tools: Vec<String>,
    /// Why the job cannot be scheduled, found by its source (a missing Prompt or Secret).
    pub problem: Option<String>,
}

/// A job changed state (defined, fired, a run started or ended): the controller writes the
/// resource's status again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobChanged {
    pub id: String,
    pub namespace: Option<String>,
    pub name: String,
}

/// A job with its latest runs, as status and pages show it.
#[derive(Debug, Clone)]
pub struct JobState {
    pub job: JobRow,
    pub last_finished: Option<RunRow>,
    pub open: Vec<RunRow>,
}

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
    pub concurrency_policy: String,
    pub problem: Option<String>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_schedule_at: Option<DateTime<Utc>>,
    /// Whether the caller may pause, resume and delete it (their own personal job).
    pub editable: bool,
}

impl JobView {
    pub fn new(job: &JobRow, user_id: i64) -> Self {
        Self {
            id: job.id.clone(),
            source: source_of(job),
            namespace: job.namespace.clone(),
            name: job.name.clone(),
            schedule: job.schedule.clone(),
            time_zone: job.time_zone.clone(),
            prompt_ref: job.prompt_ref.clone(),
            prompt: job.prompt.clone(),
            variables: serde_json::from_str(&job.variables).unwrap_or_default(),
            suspended: job.suspended,
            concurrency_policy: job.concurrency_policy.clone(),
            problem: job.problem.clone(),
            next_run_at: job.next_run_at,
            last_schedule_at: job.last_schedule_at,
            editable: job.owner_id == Some(user_id),
        }
    }
}

fn source_of(job: &JobRow) -> Source {
    if job.source == "kubernetes" { Source::Kubernetes } else { Source::Personal }
}

/// What a user asks for when making a personal job.
#[derive(Debug, Clone, Default)]
pub struct NewPersonalJob {
    pub name: String,
    pub schedule: String,
    pub time_zone: String,
    /// A prompts.json prompt to run…
    pub prompt_ref: Option<String>,
    /// …or this text.
    pub prompt: Option<String>,
    pub variables: BTreeMap<String, String>,
}

/// The dependencies a run needs, shared by the scheduler and the worker.
pub struct JobService {
    db: SqlitePool,
    config: Arc<ConfigStore>,
    llm: Arc<LlmClient>,
    mcp: Arc<McpManager>,
    metrics: Arc<Metrics>,
    /// Wakes the scheduler when a job's next firing may have moved earlier.
    wake: Notify,
    changes: broadcast::Sender<JobChanged>,
    /// Runs executing in this process, by run id, to cancel on `Replace`.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// The cluster client, when a cluster is in use (reads credential Secrets).
    kube: OnceLock<kube::Client>,
    audit: AuditLog,
}

impl std::fmt::Debug for JobService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobService").field("cluster", &self.kube.get().is_some()).finish_non_exhaustive()
    }
}

impl JobService {
    pub fn new(
        db: SqlitePool,
        config: Arc<ConfigStore>,
        llm: Arc<LlmClient>,
        mcp: Arc<McpManager>,
        metrics: Arc<Metrics>,
        audit: AuditLog,
    ) -> Self {
        Self {
            audit,
            db,
            config,
            llm,
            mcp,
            metrics,
            wake: Notify::new(),
            changes: broadcast::channel(1024).0,
            running: Mutex::new(HashMap::new()),
            kube: OnceLock::new(),
        }
    }

    /// Gives runs of Kubernetes jobs a client to read their credential Secrets with.
    pub fn use_cluster(&self, client: kube::Client) {
        let _ = self.kube.set(client);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobChanged> {
        self.changes.subscribe()
    }

    fn changed(&self, job: &JobRow) {
        let _ = self.changes.send(JobChanged {
            id: job.id.clone(),
            namespace: job.namespace.clone(),
            name: job.name.clone(),
        });
    }

    /// Stores a job's definition and (re)computes its next firing when its timing changed.
    pub async fn apply(&self, definition: JobDefinition) -> Result<JobRow, JobError> {
        let now = Utc::now();
        let schedule = Schedule::parse(&definition.schedule, &definition.time_zone);
        let problem = match &schedule {
            Err(e) => Some(e.to_string()),
            Ok(_) => definition.problem.clone(),
        };
        let mut conn = self.db.acquire().await?;
        let existing = jobs::get(&mut conn, &definition.id).await?;
        let schedulable = problem.is_none() && !definition.suspended;
        let next = match &schedule {
            Ok(schedule) if schedulable => schedule.next_after(now),
            _ => None,
        };
        let reschedule = match &existing {
            None => true,
            Some(old) => {
                old.schedule != definition.schedule
                    || old.time_zone != definition.time_zone
                    || old.suspended != definition.suspended
                    || old.problem != problem
                    || old.next_run_at.is_none() != next.is_none()
            }
        };
        let mut row = JobRow {
            id: definition.id,
            source: definition.source.as_str().into(),
            namespace: definition.namespace,
            name: definition.name,
            owner_id: definition.owner_id,
            schedule: definition.schedule,
            time_zone: definition.time_zone,
            prompt_ref: definition.prompt_ref,
            prompt: definition.prompt,
            variables: serde_json::to_string(&definition.variables).unwrap_or_else(|_| "{}".into()),
            suspended: definition.suspended,
            concurrency_policy: definition.concurrency_policy.as_str().into(),
            starting_deadline_seconds: definition.starting_deadline_seconds,
            retry_limit: definition.retry_limit,
            retry_backoff_seconds: definition.retry_backoff_seconds,
            secret_name: definition.secret.as_ref().map(|s| s.0.clone()),
            secret_key: definition.secret.as_ref().map(|s| s.1.clone()),
            allowed_write_tools: serde_json::to_string(&definition.allowed_write_tools).unwrap_or_else(|_| "[]".into()),
            problem,
            next_run_at: next,
            last_schedule_at: existing.as_ref().and_then(|e| e.last_schedule_at),
            created_at: existing.as_ref().map_or(now, |e| e.created_at),
            updated_at: now,
        };
        jobs::upsert(&mut conn, &row, reschedule).await?;
        if reschedule {
            self.wake.notify_one();
        } else if let Some(existing) = existing {
            // The upsert kept the schedule state it holds.
            row.next_run_at = existing.next_run_at;
        }
        Ok(row)
    }

    /// Forgets a job, its schedule and its runs; running ones are stopped. Idempotent.
    pub async fn remove(&self, id: &str) -> Result<bool, JobError> {
        let mut conn = self.db.acquire().await?;
        for run in jobs::open_runs(&mut conn, id).await? {
            self.cancel_local(&run.id);
        }
        Ok(jobs::delete(&mut conn, id, None).await?)
    }

    /// A job with its latest and open runs.
    pub async fn state(&self, job: JobRow) -> Result<JobState, JobError> {
        let mut conn = self.db.acquire().await?;
        let last_finished = jobs::last_finished(&mut conn, &job.id).await?;
        let open = jobs::open_runs(&mut conn, &job.id).await?;
        Ok(JobState { job, last_finished, open })
    }

    /// Mirrors a Prompt resource.
    pub async fn apply_prompt(&self, row: &PromptResourceRow) -> Result<(), JobError> {
        Ok(jobs::upsert_prompt(&mut *self.db.acquire().await?, row).await?)
    }

    pub async fn remove_prompt(&self, uid: &str) -> Result<bool, JobError> {
        Ok(jobs::delete_prompt(&mut *self.db.acquire().await?, uid).await?)
    }

    /// Jobs a user sees: all Kubernetes jobs and their own.
    pub async fn list(&self, user_id: i64) -> Result<Vec<JobRow>, JobError> {
        Ok(jobs::visible_to(&mut *self.db.acquire().await?, user_id).await?)
    }

    /// One job the user may see.
    pub async fn get(&self, user_id: i64, id: &str) -> Result<JobRow, JobError> {
        let job = jobs::get(&mut *self.db.acquire().await?, id).await?.ok_or(JobError::NotFound)?;
        if job.source == "personal" && job.owner_id != Some(user_id) {
            return Err(JobError::NotFound);
        }
        Ok(job)
    }

    pub async fn runs(&self, user_id: i64, id: &str) -> Result<Vec<RunRow>, JobError> {
        self.get(user_id, id).await?;
        Ok(jobs::runs(&mut *self.db.acquire().await?, id, HISTORY).await?)
    }

    pub async fn run(&self, user_id: i64, job_id: &str, run_id: &str) -> Result<RunRow, JobError> {
        self.get(user_id, job_id).await?;
        jobs::run(&mut *self.db.acquire().await?, run_id)
            .await?
            .filter(|r| r.job_id == job_id)
            .ok_or(JobError::NotFound)
    }

    /// Records what a user did to a job.
    async fn record(&self, actor: &Actor, action: &str, job: &JobRow, detail: Option<&str>) {
        let event = audit::Event { action, target: Some(&job.name), outcome: Outcome::Success, detail };
        self.audit.record(actor, event).await;
    }

    /// Makes a personal job for a user.
    pub async fn create_personal(&self, user_id: i64, new: NewPersonalJob, actor: &Actor) -> Result<JobRow, JobError> {
        let name = new.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(JobError::Invalid("a job needs a name of 1 to 100 characters".into()));
        }
        let time_zone =
            if new.time_zone.trim().is_empty() { "UTC".to_owned() } else { new.time_zone.trim().to_owned() };
        Schedule::parse(new.schedule.trim(), &time_zone).map_err(|e| JobError::Invalid(e.to_string()))?;
        let prompt_ref = new.prompt_ref.filter(|p| !p.trim().is_empty());
        let prompt = new.prompt.filter(|p| !p.trim().is_empty());
        match (&prompt_ref, &prompt) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(JobError::Invalid("give either a saved prompt or the text to run, not both".into()));
            }
            (Some(name), None) => {
                let snapshot = self.config.current().ok_or_else(|| JobError::Invalid("no configuration".into()))?;
                let named = snapshot
                    .config
                    .prompts
                    .prompts
                    .get(name)
                    .ok_or_else(|| JobError::Invalid(format!("there is no prompt named {name:?}")))?;
                crate::chat::render_prompt(named, &new.variables).map_err(|e| JobError::Invalid(e.to_string()))?;
            }
            (None, Some(text)) if text.chars().count() > 20_000 => {
                return Err(JobError::Invalid("the prompt text is longer than 20000 characters".into()));
            }
            (None, Some(_)) => {}
        }
        let row = self
            .apply(JobDefinition {
                id: uuid::Uuid::new_v4().to_string(),
                source: Source::Personal,
                namespace: None,
                name: name.to_owned(),
                owner_id: Some(user_id),
                schedule: new.schedule.trim().to_owned(),
                time_zone,
                prompt_ref,
                prompt,
                variables: new.variables,
                suspended: false,
                concurrency_policy: ConcurrencyPolicy::Forbid,
                starting_deadline_seconds: None,
                retry_limit: 0,
                retry_backoff_seconds: 60,
                secret: None,
                allowed_write_tools: Vec::new(),
                problem: None,
            })
            .await?;
        self.record(actor, "job.create", &row, Some(&format!("{} {}", row.schedule, row.time_zone))).await;
        Ok(row)
    }

    /// Pauses or resumes one of the user's personal jobs.
    pub async fn set_suspended(
        &self,
        user_id: i64,
        id: &str,
        suspended: bool,
        actor: &Actor,
    ) -> Result<JobRow, JobError> {
        let job = self.get(user_id, id).await?;
        if job.source == "kubernetes" {
            return Err(JobError::Managed);
        }
        let next = if suspended {
            None
        } else {
            Schedule::parse(&job.schedule, &job.time_zone).ok().and_then(|s| s.next_after(Utc::now()))
        };
        let mut conn = self.db.acquire().await?;
        jobs::set_suspended(&mut conn, id, user_id, suspended, next).await?;
        self.wake.notify_one();
        let job = jobs::get(&mut conn, id).await?.ok_or(JobError::NotFound)?;
        self.record(actor, if suspended { "job.pause" } else { "job.resume" }, &job, None).await;
        Ok(job)
    }

    /// Deletes one of the user's personal jobs.
    pub async fn delete_personal(&self, user_id: i64, id: &str, actor: &Actor) -> Result<(), JobError> {
        let job = self.get(user_id, id).await?;
        if job.source == "kubernetes" {
            return Err(JobError::Managed);
        }
        self.remove(id).await?;
        self.record(actor, "job.delete", &job, None).await;
        Ok(())
    }

    /// "Run now" from the UI or API: a user's own job, or (admins) a Kubernetes one.
    pub async fn run_now_for(&self, user_id: i64, is_admin: bool, id: &str, actor: &Actor) -> Result<RunRow, JobError> {
        let job = self.get(user_id, id).await?;
        if job.source == "kubernetes" && !is_admin {
            return Err(JobError::Forbidden);
        }
        let key = format!("manual:{}", uuid::Uuid::new_v4());
        let run = self.run_now(&job, Trigger::Manual, &key).await?.ok_or(JobError::NotFound)?;
        self.record(actor, "job.run", &job, Some(&format!("run {}", run.id))).await;
        Ok(run)
    }

    /// Queues a run at once. `key` makes it happen once: `None` when a run with this key
    /// exists already.
    pub async fn run_now(&self, job: &JobRow, trigger: Trigger, key: &str) -> Result<Option<RunRow>, JobError> {
        let run = new_run(&job.id, format!("{}@{key}", job.id), trigger, Utc::now(), "queued");
        let mut tx = self.db.begin().await?;
        if !jobs::insert_run(&mut tx, &run).await? {
            return Ok(None);
        }
        queue::push(&mut tx, &run.id, 1, Duration::ZERO).await.map_err(|e| JobError::Queue(e.to_string()))?;
        tx.commit().await?;
        self.changed(job);
        Ok(Some(run))
    }

    /// The prompt library: prompts.json, then Prompt resources (named namespace/name).
    pub async fn prompts(&self) -> Result<Vec<PromptInfo>, JobError> {
        let mut list = self.config.current().map(|s| crate::chat::prompt_infos(&s)).unwrap_or_default();
        for row in jobs::prompts(&mut *self.db.acquire().await?).await? {
            list.push(resource_prompt_info(&row));
        }
        Ok(list)
    }

    fn cancel_local(&self, run_id: &str) -> bool {
        match self.running.lock().unwrap_or_else(PoisonError::into_inner).get(run_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

fn new_run(job_id: &str, key: String, trigger: Trigger, scheduled_for: DateTime<Utc>, status: &str) -> RunRow {
    RunRow {
        id: uuid::Uuid::new_v4().to_string(),
        job_id: job_id.to_owned(),
        idempotency_key: key,
        trigger: trigger.as_str().into(),
        scheduled_for,
        attempt: 1,
        status: status.into(),
        started_at: None,
        finished_at: None,
        output: String::new(),
        error: None,
        prompt_tokens: None,
        completion_tokens: None,
        tool_calls: "[]".into(),
        created_at: Utc::now(),
    }
}

/// A Prompt resource as a named prompt, for chat and runs alike.
pub fn named_prompt(row: PromptResourceRow) -> NamedPrompt {
    let variables: Vec<crate::controller::resources::PromptVariable> =
        serde_json::from_str(&row.variables).unwrap_or_default();
    NamedPrompt {
        title: row.title.unwrap_or(row.name),
        description: row.description.unwrap_or_default(),
        template: row.template,
        variables: variables
            .into_iter()
            .map(|v| PromptVariable {
                name: v.name,
                description: v.description.unwrap_or_default(),
                required: v.required,
                default: v.default,
            })
            .collect(),
        endpoint: row.endpoint,
        tools: row.tools.and_then(|t| serde_json::from_str(&t).ok()),
    }
}

fn resource_prompt_info(row: &PromptResourceRow) -> PromptInfo {
    let variables: Vec<crate::controller::resources::PromptVariable> =
        serde_json::from_str(&row.variables).unwrap_or_default();
    PromptInfo {
        name: format!("{}/{}", row.namespace, row.name),
        title: row.title.clone().unwrap_or_else(|| row.name.clone()),
        description: row.description.clone().unwrap_or_default(),
        source: "kubernetes",
        variables: variables
            .into_iter()
            .map(|v| VariableInfo {
                name: v.name,
                description: v.description.unwrap_or_default(),
                required: v.required,
                default: v.default,
            })
            .collect(),
    }
}
