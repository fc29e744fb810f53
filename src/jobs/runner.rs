//! One attempt of a run: resolve the prompt and the credentials, run the agent loop
//! unattended (write tools only from the job's allow-list), store the outcome, and retry
//! with exponential backoff while the job's retry limit allows.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use secrecy::SecretString;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{JobError, JobService, queue};
use crate::chat::agent::{AgentRun, Approval, ToolLog};
use crate::chat::generation::Generation;
use crate::config::model::{NamedPrompt, PromptVariable};
use crate::db::repositories::jobs::{self, JobRow, RunOutcome, RunRow};
use crate::llm::Usage;
use crate::mcp::Principal;

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// How an attempt that did not succeed ended.
struct Failure {
    message: String,
    output: String,
    usage: Usage,
    tool_calls: String,
    cancelled: bool,
}

impl Failure {
    fn before_start(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            output: String::new(),
            usage: Usage::default(),
            tool_calls: "[]".into(),
            cancelled: false,
        }
    }
}

struct Success {
    output: String,
    usage: Usage,
    tool_calls: String,
}

impl JobService {
    /// Runs one queued attempt. Safe to call again for the same attempt: only the call that
    /// moves the run from queued to running does the work, and an attempt delivered again
    /// while marked running (its process died) counts as failed.
    pub async fn execute(&self, run_id: &str, attempt: i64) -> Result<(), JobError> {
        let mut conn = self.db.acquire().await?;
        if !jobs::claim(&mut conn, run_id, attempt).await? {
            let Some(run) = jobs::run(&mut conn, run_id).await? else { return Ok(()) };
            drop(conn);
            let running_here = self.running.lock().unwrap_or_else(PoisonError::into_inner).contains_key(run_id);
            if run.status == "running" && run.attempt == attempt && !running_here {
                let job = self.job_of(&run).await?;
                tracing::warn!(run = run_id, attempt, "a run's process stopped before it finished");
                let failure = Failure::before_start("the process running it stopped before it finished");
                self.fail_or_retry(&job, &run, failure).await?;
            }
            return Ok(());
        }
        let run = jobs::run(&mut conn, run_id).await?.ok_or(JobError::NotFound)?;
        drop(conn);
        let job = self.job_of(&run).await?;
        self.changed(&job);
        tracing::info!(job = job.name, run = run_id, attempt, "run started");
        let cancel = CancellationToken::new();
        self.running.lock().unwrap_or_else(PoisonError::into_inner).insert(run.id.clone(), cancel.clone());
        let result = self.attempt(&job, cancel).await;
        self.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&run.id);
        match result {
            Ok(success) => {
                let outcome = RunOutcome {
                    status: "succeeded",
                    output: &success.output,
                    error: None,
                    prompt_tokens: tokens(success.usage.prompt_tokens),
                    completion_tokens: tokens(success.usage.completion_tokens),
                    tool_calls: &success.tool_calls,
                };
                jobs::finish(&mut *self.db.acquire().await?, &run.id, &outcome).await?;
                self.count("succeeded");
                tracing::info!(job = job.name, run = run_id, "run succeeded");
            }
            Err(failure) => self.fail_or_retry(&job, &run, failure).await?,
        }
        self.changed(&job);
        Ok(())
    }

    async fn job_of(&self, run: &RunRow) -> Result<JobRow, JobError> {
        jobs::get(&mut *self.db.acquire().await?, &run.job_id).await?.ok_or(JobError::NotFound)
    }

    /// Queues the next attempt when the job allows one, or marks the run failed.
    async fn fail_or_retry(&self, job: &JobRow, run: &RunRow, failure: Failure) -> Result<(), JobError> {
        let status = if failure.cancelled { "cancelled" } else { "failed" };
        if !failure.cancelled && run.attempt <= job.retry_limit {
            let next = run.attempt + 1;
            let factor = 2u32.saturating_pow(u32::try_from(run.attempt - 1).unwrap_or(u32::MAX));
            let base = Duration::from_secs(u64::try_from(job.retry_backoff_seconds).unwrap_or(60));
            let delay = base.saturating_mul(factor).min(MAX_BACKOFF);
            let mut tx = self.db.begin().await?;
            if jobs::requeue(&mut tx, &run.id, next, &failure.message).await? {
                queue::push(&mut tx, &run.id, next, delay).await.map_err(|e| JobError::Queue(e.to_string()))?;
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
        self.count(status);
        tracing::warn!(job = job.name, run = run.id, error = failure.message, "run {status}");
        Ok(())
    }

    pub(super) fn count(&self, outcome: &str) {
        self.metrics
            .job_runs
            .get_or_create(&crate::telemetry::metrics::OutcomeLabels { outcome: outcome.to_owned() })
            .inc();
    }

    async fn attempt(&self, job: &JobRow, cancel: CancellationToken) -> Result<Success, Failure> {
        let snapshot =
            self.config.current().ok_or_else(|| Failure::before_start("no valid configuration is loaded"))?;
        let prompt = self.prompt_of(job, &snapshot).await.map_err(Failure::before_start)?;
        let text =
            crate::chat::render_prompt(&prompt, &variables(job)).map_err(|e| Failure::before_start(e.to_string()))?;
        let principal = self.principal_of(job).await.map_err(Failure::before_start)?;
        let endpoint = prompt.endpoint.clone().unwrap_or_else(|| snapshot.config.service.default_endpoint.clone());
        let allowed: Vec<String> = serde_json::from_str(&job.allowed_write_tools).unwrap_or_default();
        // The run's own token stops the agent (Replace, job deleted).
        let mut generation = Generation::new(0, 0, job.owner_id.unwrap_or(0));
        generation.cancel = cancel;
        let generation = Arc::new(generation);
        let calls = Arc::new(Mutex::new(Vec::new()));
        let agent = AgentRun {
            db: self.db.clone(),
            llm: self.llm.clone(),
            mcp: self.mcp.clone(),
            metrics: self.metrics.clone(),
            snapshot: snapshot.clone(),
            endpoint,
            principal,
            prompt_tools: prompt.tools.clone(),
            approval: Approval::Allow(allowed),
            tool_log: ToolLog::Memory(calls.clone()),
            generation,
        };
        let messages = vec![
            json!({"role": "system", "content": snapshot.config.prompts.system}),
            json!({"role": "user", "content": text}),
        ];
        let outcome = agent.run(Arc::new(Mutex::new(String::new())), messages).await;
        let tool_calls = serde_json::to_string(&*calls.lock().unwrap_or_else(PoisonError::into_inner))
            .unwrap_or_else(|_| "[]".into());
        let mut output = outcome.text;
        if !outcome.notices.is_empty() {
            let notes: Vec<String> = outcome.notices.iter().map(|n| format!("> {n}")).collect();
            output = format!("{}\n\n{output}", notes.join("\n"));
        }
        match outcome.result {
            Ok(()) => Ok(Success { output, usage: outcome.usage, tool_calls }),
            Err(e) => Err(Failure {
                message: if e.is_cancelled() { "cancelled".into() } else { e.to_string() },
                cancelled: e.is_cancelled(),
                output,
                usage: e.partial().map_or(outcome.usage, |p| p.usage),
                tool_calls,
            }),
        }
    }

    /// The prompt a job runs, as a named prompt whatever its source.
    async fn prompt_of(&self, job: &JobRow, snapshot: &crate::config::ConfigSnapshot) -> Result<NamedPrompt, String> {
        if let Some(text) = &job.prompt {
            // Inline text: its variables are exactly the values the job gives.
            let variables = variables(job)
                .into_keys()
                .map(|name| PromptVariable { name, description: String::new(), required: false, default: None })
                .collect();
            return Ok(NamedPrompt {
                title: job.name.clone(),
                description: String::new(),
                template: text.clone(),
                variables,
                endpoint: None,
                tools: None,
            });
        }
        let name = job.prompt_ref.as_deref().ok_or("the job names no prompt")?;
        match &job.namespace {
            None => snapshot
                .config
                .prompts
                .prompts
                .get(name)
                .cloned()
                .ok_or_else(|| format!("there is no prompt named {name:?} in prompts.json")),
            Some(namespace) => {
                let mut conn = self.db.acquire().await.map_err(|e| e.to_string())?;
                let row = jobs::prompt_named(&mut conn, namespace, name)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("Prompt {namespace}/{name} not found"))?;
                Ok(super::named_prompt(row))
            }
        }
    }

    /// Whose tokens the run uses: a personal job's owner, or the Secret of a PromptJob.
    async fn principal_of(&self, job: &JobRow) -> Result<Principal, String> {
        if let Some(owner) = job.owner_id {
            return Ok(Principal::User(owner));
        }
        let (Some(namespace), Some(name), Some(key)) = (&job.namespace, &job.secret_name, &job.secret_key) else {
            return Ok(Principal::Token { scope: job.id.clone(), token: None });
        };
        let client = self.kube.get().ok_or("no cluster connection to read the credentials Secret with")?;
        let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
        let secret = secrets.get_opt(name).await.map_err(|e| format!("cannot read Secret {name}: {e}"))?;
        let value = secret
            .and_then(|s| s.data)
            .and_then(|mut data| data.remove(key))
            .ok_or_else(|| format!("Secret {name} has no key {key:?}"))?;
        let token = String::from_utf8(value.0).map_err(|_| format!("key {key:?} of Secret {name} is not text"))?;
        Ok(Principal::Token { scope: job.id.clone(), token: Some(SecretString::from(token.trim().to_owned())) })
    }
}

fn variables(job: &JobRow) -> BTreeMap<String, String> {
    serde_json::from_str(&job.variables).unwrap_or_default()
}

fn tokens(count: Option<u64>) -> Option<i64> {
    count.and_then(|t| i64::try_from(t).ok())
}
