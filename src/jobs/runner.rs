//! One attempt of a run: resolve the prompt and the credentials, run the agent loop
//! unattended (write tools only from the job's allow-list), store the outcome, and retry
//! with exponential backoff while the job's retry limit allows.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use sqlx::SqlitePool;

use super::{Activity, Credentials, JobError, RunStatus, queue};
use crate::agent::Agent;
use crate::agent::{self, AgentError, Observer, ToolCallRecord};
use crate::config::ConfigStore;
use crate::db::repositories::deliveries;
use crate::db::repositories::jobs::{self, JobRow, RunOutcome, RunRow};
use crate::llm::Usage;
use crate::prompts::PromptLibrary;
use crate::prompts::{self, Prompt, PromptRef};

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// How an attempt that did not succeed ended.
struct Failure {
    message: String,
    output: String,
    usage: Usage,
    tool_calls: Vec<ToolCallRecord>,
    cancelled: bool,
}

impl Failure {
    fn before_start(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            output: String::new(),
            usage: Usage::default(),
            tool_calls: Vec::new(),
            cancelled: false,
        }
    }
}

struct Success {
    output: String,
    usage: Usage,
    tool_calls: Vec<ToolCallRecord>,
}

/// Runs queued attempts: resolves the prompt and the credentials, runs the agent and
/// stores the outcome, retrying as the job allows.
pub struct Runner {
    db: SqlitePool,
    config: Arc<ConfigStore>,
    prompts: Arc<PromptLibrary>,
    agent: Arc<Agent>,
    activity: Arc<Activity>,
    credentials: Arc<Credentials>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("credentials", &self.credentials).finish_non_exhaustive()
    }
}

impl Runner {
    pub fn new(
        db: SqlitePool,
        config: Arc<ConfigStore>,
        prompts: Arc<PromptLibrary>,
        agent: Arc<Agent>,
        activity: Arc<Activity>,
        credentials: Arc<Credentials>,
    ) -> Self {
        Self { db, config, prompts, agent, activity, credentials }
    }

    /// Runs one queued attempt. Safe to call again for the same attempt: only the call that
    /// moves the run from queued to running does the work, and an attempt delivered again
    /// while marked running (its process died) counts as failed.
    pub async fn execute(&self, run_id: &str, attempt: i64) -> Result<(), JobError> {
        let mut conn = self.db.acquire().await?;
        if !jobs::claim(&mut conn, run_id, attempt).await? {
            let Some(run) = jobs::run_by_id(&mut conn, run_id).await? else { return Ok(()) };
            drop(conn);
            let running_here =
                self.activity.running.lock().unwrap_or_else(PoisonError::into_inner).contains_key(run_id);
            if run.status == RunStatus::Running && run.attempt == attempt && !running_here {
                let job = self.job_of(&run).await?;
                tracing::warn!(run = run_id, attempt, "a run's process stopped before it finished");
                let failure = Failure::before_start("the process running it stopped before it finished");
                self.fail_or_retry(&job, &run, failure).await?;
            }
            return Ok(());
        }
        let run = jobs::run_by_id(&mut conn, run_id).await?.ok_or(JobError::NotFound)?;
        drop(conn);
        let job = self.job_of(&run).await?;
        self.activity.changed(&job);
        tracing::info!(job = job.name, run = run_id, attempt, "run started");
        let cancel = CancellationToken::new();
        self.activity.running.lock().unwrap_or_else(PoisonError::into_inner).insert(run.id.clone(), cancel.clone());
        let result = self.attempt(&job, cancel).await;
        self.activity.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&run.id);
        match result {
            Ok(success) => {
                let outcome = RunOutcome {
                    status: RunStatus::Succeeded,
                    output: &success.output,
                    error: None,
                    prompt_tokens: tokens(success.usage.prompt_tokens),
                    completion_tokens: tokens(success.usage.completion_tokens),
                    tool_calls: &success.tool_calls,
                };
                // The deliveries are due the moment the run is recorded succeeded, not before.
                let mut tx = crate::db::write(&self.db).await?;
                if jobs::finish(&mut tx, &run.id, &outcome).await? {
                    deliveries::create(&mut tx, &run.id, &job.id, &job.deliver.0, chrono::Utc::now()).await?;
                }
                tx.commit().await?;
                if !job.deliver.0.is_empty() {
                    self.activity.deliveries.notify_one();
                }
                self.activity.count(RunStatus::Succeeded);
                tracing::info!(job = job.name, run = run_id, "run succeeded");
            }
            Err(failure) => self.fail_or_retry(&job, &run, failure).await?,
        }
        self.activity.changed(&job);
        Ok(())
    }

    async fn job_of(&self, run: &RunRow) -> Result<JobRow, JobError> {
        jobs::get(&mut *self.db.acquire().await?, &run.job_id).await?.ok_or(JobError::NotFound)
    }

    /// Queues the next attempt when the job allows one, or marks the run failed.
    async fn fail_or_retry(&self, job: &JobRow, run: &RunRow, failure: Failure) -> Result<(), JobError> {
        let status = if failure.cancelled { RunStatus::Cancelled } else { RunStatus::Failed };
        if !failure.cancelled && run.attempt <= job.retry_limit {
            let next = run.attempt + 1;
            let factor = 2u32.saturating_pow(u32::try_from(run.attempt - 1).unwrap_or(u32::MAX));
            let base = Duration::from_secs(u64::try_from(job.retry_backoff_seconds).unwrap_or(60));
            let delay = base.saturating_mul(factor).min(MAX_BACKOFF);
            let mut tx = crate::db::write(&self.db).await?;
            if jobs::requeue(&mut tx, &run.id, next, &failure.message).await? {
                queue::push(&mut tx, &run.id, next, delay).await.map_err(JobError::Queue)?;
            }
            tx.commit().await?;
            tracing::warn!(job = job.name, run = run.id, attempt = run.attempt, retry_in = ?delay, error = failure.message, "run failed; retrying");
            return Ok(());
        }
        let outcome = RunOutcome {
            status,
            output: &failure.output,
            error: Some(&failure.message),
            prompt_tokens: tokens(failure.usage.prompt_tokens),
            completion_tokens: tokens(failure.usage.completion_tokens),
            tool_calls: &failure.tool_calls,
        };
        jobs::finish(&mut *self.db.acquire().await?, &run.id, &outcome).await?;
        self.activity.count(status);
        tracing::warn!(job = job.name, run = run.id, error = failure.message, "run {}", status.as_str());
        Ok(())
    }

    async fn attempt(&self, job: &JobRow, cancel: CancellationToken) -> Result<Success, Failure> {
        let snapshot =
            self.config.current().ok_or_else(|| Failure::before_start("no valid configuration is loaded"))?;
        let prompt = self.prompt_of(job).await.map_err(Failure::before_start)?;
        let text = prompts::render(&prompt, &variables(job)).map_err(|e| Failure::before_start(e.to_string()))?;
        let principal = self.credentials.principal(job).await.map_err(Failure::before_start)?;
        let endpoint = prompt.endpoint.clone().unwrap_or_else(|| snapshot.config.service.default_endpoint.clone());
        let observer = Unattended { allowed: job.allowed_write_tools.0.clone(), calls: Mutex::new(Vec::new()) };
        let messages = vec![
            json!({"role": "system", "content": snapshot.config.prompts.system}),
            json!({"role": "user", "content": text}),
        ];
        // The run's own token stops the agent (Replace, job deleted).
        let task = agent::Task { snapshot, endpoint, principal, tools: prompt.tools.clone(), messages, cancel };
        let outcome = self.agent.run(task, &observer).await;
        let tool_calls = std::mem::take(&mut *observer.calls.lock().unwrap_or_else(PoisonError::into_inner));
        let mut output = outcome.text;
        if !outcome.notices.is_empty() {
            let notes: Vec<String> = outcome.notices.iter().map(|n| format!("> {n}")).collect();
            output = format!("{}\n\n{output}", notes.join("\n"));
        }
        match outcome.result {
            Ok(()) => Ok(Success { output, usage: outcome.usage, tool_calls }),
            Err(e) => Err(Failure {
                message: e.to_string(),
                cancelled: matches!(e, AgentError::Cancelled),
                output,
                usage: outcome.usage,
                tool_calls,
            }),
        }
    }

    /// The prompt a job runs: its own text, or a prompt of the library as its owner (if
    /// any) sees it.
    async fn prompt_of(&self, job: &JobRow) -> Result<Prompt, String> {
        if let Some(text) = &job.prompt {
            return Ok(prompts::inline(&job.name, text, &variables(job)));
        }
        let name = job.prompt_ref.as_deref().ok_or("the job names no prompt")?;
        let reference = PromptRef::parse(name).map_err(|e| e.to_string())?;
        self.prompts.find(&reference, job.owner_id).await.map_err(|e| e.to_string())
    }
}

/// What a run does with its agent's events: nobody watches; writes are checked against the
/// job's allow-list; tool calls are kept to be stored with the run.
struct Unattended {
    allowed: Vec<String>,
    calls: Mutex<Vec<ToolCallRecord>>,
}

impl Observer for Unattended {
    fn text(&self, _piece: &str) {}

    fn notice(&self, _message: &str) {}

    fn tool_call(&self, _call: &ToolCallRecord, _arguments: &serde_json::Value) {}

    fn tool_result(&self, _call: &ToolCallRecord, _output: &crate::mcp::ToolOutput) {}

    fn approve<'a>(
        &'a self,
        call: &'a ToolCallRecord,
        _arguments: &'a serde_json::Map<String, serde_json::Value>,
        _cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), String>> {
        let allowed = self.allowed.iter().any(|p| wildmatch::WildMatch::new(p).matches(&call.name));
        Box::pin(std::future::ready(if allowed {
            Ok(())
        } else {
            Err("This unattended run may not use this tool (it is not in the job's allowedWriteTools); it was not carried out.".into())
        }))
    }

    fn record<'a>(&'a self, call: &'a ToolCallRecord, new: bool) -> BoxFuture<'a, ()> {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        match calls.iter_mut().find(|c| c.call_id == call.call_id) {
            Some(kept) if !new => *kept = call.clone(),
            _ => calls.push(call.clone()),
        }
        Box::pin(std::future::ready(()))
    }
}

fn variables(job: &JobRow) -> BTreeMap<String, String> {
    job.variables.0.clone()
}

fn tokens(count: Option<u64>) -> Option<i64> {
    count.and_then(|t| i64::try_from(t).ok())
}
