//! Scheduled prompts and their runs. A job — a PromptJob resource or a personal job made in
//! the UI — has a cron schedule in a time zone; the scheduler records each firing as a run
//! (once: the run's idempotency key is unique) and queues it on the durable apalis queue in
//! the same transaction; the worker runs the prompt through the agent with the job's
//! credentials and stores what happened. Three parts: the [`JobStore`] (what sources and
//! people change and read), the [`scheduler::Scheduler`] and the [`runner::Runner`]; the
//! controller and the web handlers are thin adapters over the store.

pub mod delivery;
pub mod model;
pub mod queue;
pub mod runner;
pub mod schedule;
pub mod scheduler;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::SqlitePool;
use sqlx::types::Json;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Actor, AuditLog, Outcome};
use crate::db::repositories::jobs::{self, JobRow, RunRow};
use crate::prompts::{PromptLibrary, PromptRef};
use crate::telemetry::metrics::Metrics;
pub use model::{ConcurrencyPolicy, DeliveryState, RunStatus, Source, Target, Trigger};
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
    Queue(#[source] apalis_sqlite::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Reads the token a job's credentials name (for a PromptJob: a key of a Secret in its
/// namespace), at run time; the token is never stored. `src/controller` implements it.
pub trait SecretSource: Send + Sync + std::fmt::Debug {
    /// The trimmed text under `key` of the secret `name` in `namespace`, or why not.
    fn token<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<secrecy::SecretString, String>>;
}

/// Whose credentials a job's runs and deliveries use: a personal job's owner's, or the
/// token in a PromptJob's Secret, read through the cluster's [`SecretSource`] at the moment
/// it is needed (never stored).
#[derive(Debug, Default)]
pub struct Credentials {
    source: std::sync::OnceLock<Arc<dyn SecretSource>>,
}

impl Credentials {
    /// Gives Kubernetes jobs a place to read their Secrets from.
    pub fn use_source(&self, source: Arc<dyn SecretSource>) {
        let _ = self.source.set(source);
    }

    /// The value under `key` of the Secret `name` in the job's namespace.
    pub async fn secret(&self, job: &JobRow, name: &str, key: &str) -> Result<secrecy::SecretString, String> {
        let namespace = job.namespace.as_deref().ok_or("only a PromptJob can read a Secret")?;
        let source = self.source.get().ok_or("no cluster connection to read the Secret with")?;
        source.token(namespace, name, key).await
    }

    /// Whose tokens the job's MCP calls use.
    pub async fn principal(&self, job: &JobRow) -> Result<crate::mcp::Principal, String> {
        use crate::mcp::Principal;
        if let Some(owner) = job.owner_id {
            return Ok(Principal::User(owner));
        }
        let (Some(name), Some(key)) = (&job.secret_name, &job.secret_key) else {
            return Ok(Principal::Token { scope: job.id.clone(), token: None });
        };
        let token = self.secret(job, name, key).await?;
        Ok(Principal::Token { scope: job.id.clone(), token: Some(token) })
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
    /// A prompt of the library, as a [`PromptRef`] reads it.
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
    /// Where succeeded runs are delivered.
    pub deliver: Vec<Target>,
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
    /// The deliveries of the latest finished run.
    pub deliveries: Vec<crate::db::repositories::deliveries::DeliveryRow>,
    pub open: Vec<RunRow>,
}

/// What a user asks for when making a personal job.
#[derive(Debug, Clone, Default)]
pub struct NewPersonalJob {
    pub name: String,
    pub schedule: String,
    pub time_zone: String,
    /// A prompt of the library to run (`name`, `namespace/name` or `me:name`)…
    pub prompt_ref: Option<String>,
    /// …or this text.
    pub prompt: Option<String>,
    pub variables: BTreeMap<String, String>,
    /// Where its runs are delivered (no webhook Secret: a personal job has no namespace).
    pub deliver: Vec<Target>,
}

/// What the store, the scheduler and the runner share in one process: the runs executing
/// here (to cancel), the scheduler's wake-up and the change notifications the controller
/// follows.
#[derive(Debug)]
pub struct Activity {
    metrics: Arc<Metrics>,
    /// Wakes the scheduler when a job's next firing may have moved earlier.
    wake: Notify,
    /// Wakes the delivery worker when deliveries became due.
    deliveries: Notify,
    changes: broadcast::Sender<JobChanged>,
    /// Runs executing in this process, by run id, to cancel on `Replace` or delete.
    running: Mutex<HashMap<String, CancellationToken>>,
}

impl Activity {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            wake: Notify::new(),
            deliveries: Notify::new(),
            changes: broadcast::channel(1024).0,
            running: Mutex::new(HashMap::new()),
        }
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

    /// Stops a run executing in this process; false when it does not run here.
    fn cancel(&self, run_id: &str) -> bool {
        match self.running.lock().unwrap_or_else(PoisonError::into_inner).get(run_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    fn count(&self, outcome: RunStatus) {
        self.metrics
            .job_runs
            .get_or_create(&crate::telemetry::metrics::OutcomeLabels { outcome: outcome.as_str().to_owned() })
            .inc();
    }
}

/// Jobs and their runs as sources and people change and read them: definitions applied
/// and removed, personal jobs made, paused and deleted, runs queued now, histories read.
#[derive(Debug)]
pub struct JobStore {
    db: SqlitePool,
    prompts: Arc<PromptLibrary>,
    audit: AuditLog,
    activity: Arc<Activity>,
}

impl JobStore {
    pub fn new(db: SqlitePool, prompts: Arc<PromptLibrary>, audit: AuditLog, activity: Arc<Activity>) -> Self {
        Self { db, prompts, audit, activity }
    }

    /// Job changes (defined, fired, a run started or ended), for the controller.
    pub fn subscribe(&self) -> broadcast::Receiver<JobChanged> {
        self.activity.subscribe()
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
            source: definition.source,
            namespace: definition.namespace,
            name: definition.name,
            owner_id: definition.owner_id,
            schedule: definition.schedule,
            time_zone: definition.time_zone,
            prompt_ref: definition.prompt_ref,
            prompt: definition.prompt,
            variables: Json(definition.variables),
            suspended: definition.suspended,
            concurrency_policy: definition.concurrency_policy,
            starting_deadline_seconds: definition.starting_deadline_seconds,
            retry_limit: definition.retry_limit,
            retry_backoff_seconds: definition.retry_backoff_seconds,
            secret_name: definition.secret.as_ref().map(|s| s.0.clone()),
            secret_key: definition.secret.as_ref().map(|s| s.1.clone()),
            allowed_write_tools: Json(definition.allowed_write_tools),
            deliver: Json(definition.deliver),
            problem,
            next_run_at: next,
            last_schedule_at: existing.as_ref().and_then(|e| e.last_schedule_at),
            created_at: existing.as_ref().map_or(now, |e| e.created_at),
            updated_at: now,
        };
        if let Some(old) = existing.as_ref().filter(|_| !reschedule) {
            let times = JobRow {
                next_run_at: old.next_run_at,
                last_schedule_at: old.last_schedule_at,
                updated_at: old.updated_at,
                ..row.clone()
            };
            if times == *old {
                // A reconcile that changes nothing writes nothing.
                return Ok(times);
            }
        }
        jobs::upsert(&mut conn, &row, reschedule).await?;
        if reschedule {
            self.activity.wake.notify_one();
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
            self.activity.cancel(&run.id);
        }
        Ok(jobs::delete(&mut conn, id, None).await?)
    }

    /// A job with its latest and open runs.
    pub async fn state(&self, job: JobRow) -> Result<JobState, JobError> {
        let mut conn = self.db.acquire().await?;
        let last_finished = jobs::last_finished(&mut conn, &job.id).await?;
        let open = jobs::open_runs(&mut conn, &job.id).await?;
        let deliveries = match &last_finished {
            Some(run) => crate::db::repositories::deliveries::for_run(&mut conn, &run.id).await?,
            None => Vec::new(),
        };
        Ok(JobState { job, last_finished, deliveries, open })
    }

    /// Jobs a user sees: all Kubernetes jobs and their own.
    pub async fn list(&self, user_id: i64) -> Result<Vec<JobRow>, JobError> {
        Ok(jobs::visible_to(&mut *self.db.acquire().await?, user_id).await?)
    }

    /// The jobs a user sees, each with its latest run (the newest open one, else the last
    /// finished one): two queries whatever the number of jobs and runs.
    pub async fn list_with_latest_run(&self, user_id: i64) -> Result<Vec<(JobRow, Option<RunRow>)>, JobError> {
        let mut conn = self.db.acquire().await?;
        let jobs = jobs::visible_to(&mut conn, user_id).await?;
        let mut latest: HashMap<String, RunRow> = jobs::latest_runs_visible_to(&mut conn, user_id)
            .await?
            .into_iter()
            .map(|r| (r.job_id.clone(), r))
            .collect();
        Ok(jobs
            .into_iter()
            .map(|job| {
                let run = latest.remove(&job.id);
                (job, run)
            })
            .collect())
    }

    /// One job the user may see.
    pub async fn get(&self, user_id: i64, id: &str) -> Result<JobRow, JobError> {
        let job = jobs::get(&mut *self.db.acquire().await?, id).await?.ok_or(JobError::NotFound)?;
        if job.source == Source::Personal && job.owner_id != Some(user_id) {
            return Err(JobError::NotFound);
        }
        Ok(job)
    }

    pub async fn runs(&self, user_id: i64, id: &str) -> Result<Vec<RunRow>, JobError> {
        self.get(user_id, id).await?;
        Ok(jobs::runs(&mut *self.db.acquire().await?, id, HISTORY).await?)
    }

    /// One run of a job the user may see.
    pub async fn find_run(&self, user_id: i64, job_id: &str, run_id: &str) -> Result<RunRow, JobError> {
        self.get(user_id, job_id).await?;
        jobs::run_by_id(&mut *self.db.acquire().await?, run_id)
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
                let invalid = |e: crate::prompts::PromptError| match e {
                    crate::prompts::PromptError::Db(e) => JobError::Db(e),
                    e => JobError::Invalid(e.to_string()),
                };
                let reference = PromptRef::parse(name).map_err(invalid)?;
                let prompt = self.prompts.find(&reference, Some(user_id)).await.map_err(invalid)?;
                crate::prompts::render(&prompt, &new.variables).map_err(invalid)?;
            }
            (None, Some(text)) if text.chars().count() > 20_000 => {
                return Err(JobError::Invalid("the prompt text is longer than 20000 characters".into()));
            }
            (None, Some(_)) => {}
        }
        if let Some(problem) = delivery::check_targets(&new.deliver, &new.variables, true).into_iter().next() {
            return Err(JobError::Invalid(problem));
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
                deliver: new.deliver,
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
        if job.source == Source::Kubernetes {
            return Err(JobError::Managed);
        }
        let next = if suspended {
            None
        } else {
            Schedule::parse(&job.schedule, &job.time_zone).ok().and_then(|s| s.next_after(Utc::now()))
        };
        let mut conn = self.db.acquire().await?;
        jobs::set_suspended(&mut conn, id, user_id, suspended, next).await?;
        self.activity.wake.notify_one();
        let job = jobs::get(&mut conn, id).await?.ok_or(JobError::NotFound)?;
        self.record(actor, if suspended { "job.pause" } else { "job.resume" }, &job, None).await;
        Ok(job)
    }

    /// Deletes one of the user's personal jobs.
    pub async fn delete_personal(&self, user_id: i64, id: &str, actor: &Actor) -> Result<(), JobError> {
        let job = self.get(user_id, id).await?;
        if job.source == Source::Kubernetes {
            return Err(JobError::Managed);
        }
        self.remove(id).await?;
        self.record(actor, "job.delete", &job, None).await;
        Ok(())
    }

    /// "Run now" from the UI or API: a user's own job, or (admins) a Kubernetes one.
    pub async fn run_now_for(&self, user_id: i64, is_admin: bool, id: &str, actor: &Actor) -> Result<RunRow, JobError> {
        let job = self.get(user_id, id).await?;
        if job.source == Source::Kubernetes && !is_admin {
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
        let run = new_run(&job.id, format!("{}@{key}", job.id), trigger, Utc::now(), RunStatus::Queued);
        let mut tx = crate::db::write(&self.db).await?;
        if !jobs::insert_run(&mut tx, &run).await? {
            return Ok(None);
        }
        queue::push(&mut tx, &run.id, 1, Duration::ZERO).await.map_err(JobError::Queue)?;
        tx.commit().await?;
        self.activity.changed(job);
        Ok(Some(run))
    }
}

fn new_run(job_id: &str, key: String, trigger: Trigger, scheduled_for: DateTime<Utc>, status: RunStatus) -> RunRow {
    RunRow {
        id: uuid::Uuid::new_v4().to_string(),
        job_id: job_id.to_owned(),
        idempotency_key: key,
        trigger,
        scheduled_for,
        attempt: 1,
        status,
        started_at: None,
        finished_at: None,
        output: String::new(),
        error: None,
        prompt_tokens: None,
        completion_tokens: None,
        tool_calls: Json(Vec::new()),
        created_at: Utc::now(),
    }
}
