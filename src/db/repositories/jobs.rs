//! The `scheduled_jobs` and `job_runs` tables: scheduled prompts and their runs. Personal
//! jobs are always read with their owner's id; Kubernetes jobs belong to no user.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use sqlx::types::Json;

use crate::agent::ToolCallRecord;
use crate::jobs::model::{ConcurrencyPolicy, RunStatus, Source, Target, Trigger};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub source: Source,
    pub namespace: Option<String>,
    pub name: String,
    pub owner_id: Option<i64>,
    pub schedule: String,
    pub time_zone: String,
    pub prompt_ref: Option<String>,
    pub prompt: Option<String>,
    /// Values of the prompt's variables.
    pub variables: Json<BTreeMap<String, String>>,
    pub suspended: bool,
    pub concurrency_policy: ConcurrencyPolicy,
    pub starting_deadline_seconds: Option<i64>,
    pub retry_limit: i64,
    pub retry_backoff_seconds: i64,
    pub secret_name: Option<String>,
    pub secret_key: Option<String>,
    /// Names or `*` patterns of the write tools an unattended run may use.
    pub allowed_write_tools: Json<Vec<String>>,
    /// Where succeeded runs are delivered.
    pub deliver: Json<Vec<Target>>,
    pub problem: Option<String>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_schedule_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! select_jobs {
    ($rest:literal) => {
        concat!(
            "SELECT id, source, namespace, name, owner_id, schedule, time_zone, prompt_ref, prompt, variables, \
             suspended, concurrency_policy, starting_deadline_seconds, retry_limit, retry_backoff_seconds, \
             secret_name, secret_key, allowed_write_tools, deliver, problem, next_run_at, last_schedule_at, created_at, \
             updated_at FROM scheduled_jobs ",
            $rest
        )
    };
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RunRow {
    pub id: String,
    pub job_id: String,
    pub idempotency_key: String,
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
    /// The tool calls made.
    pub tool_calls: Json<Vec<ToolCallRecord>>,
    pub created_at: DateTime<Utc>,
}

macro_rules! select_runs {
    ($rest:literal) => {
        concat!(
            "SELECT id, job_id, idempotency_key, trigger, scheduled_for, attempt, status, started_at, finished_at, \
             output, error, prompt_tokens, completion_tokens, tool_calls, created_at FROM job_runs ",
            $rest
        )
    };
}

/// Inserts or replaces a job's definition; schedule state (`next_run_at`,
/// `last_schedule_at`) is kept unless `reschedule` says the timing changed.
pub async fn upsert(conn: &mut SqliteConnection, job: &JobRow, reschedule: bool) -> Result<(), sqlx::Error> {
    let mut query = super::insert_row!(
        "scheduled_jobs",
        job,
        [
            id,
            source,
            namespace,
            name,
            owner_id,
            schedule,
            time_zone,
            prompt_ref,
            prompt,
            variables,
            suspended,
            concurrency_policy,
            starting_deadline_seconds,
            retry_limit,
            retry_backoff_seconds,
            secret_name,
            secret_key,
            allowed_write_tools,
            deliver,
            problem,
            next_run_at,
            last_schedule_at,
            created_at,
            updated_at
        ]
    );
    query.push(super::update_set!(
        "id",
        [
            name,
            schedule,
            time_zone,
            prompt_ref,
            prompt,
            variables,
            suspended,
            concurrency_policy,
            starting_deadline_seconds,
            retry_limit,
            retry_backoff_seconds,
            secret_name,
            secret_key,
            allowed_write_tools,
            deliver,
            problem,
            updated_at
        ]
    ));
    query
        .push(", next_run_at = CASE WHEN ")
        .push_bind(reschedule)
        .push(" THEN excluded.next_run_at ELSE scheduled_jobs.next_run_at END");
    query.build().execute(conn).await?;
    Ok(())
}

pub async fn get(conn: &mut SqliteConnection, id: &str) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(select_jobs!("WHERE id = ?")).bind(id).fetch_optional(conn).await
}

/// Jobs a user sees: every Kubernetes job and their own personal ones.
pub async fn visible_to(conn: &mut SqliteConnection, user_id: i64) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(select_jobs!(
        "WHERE source = 'kubernetes' OR owner_id = ? ORDER BY source, namespace, name COLLATE NOCASE"
    ))
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// The latest run of each job `user_id` sees (as [`visible_to`]): its newest queued or
/// running one, else its last finished one; jobs that never ran have none.
pub async fn latest_runs_visible_to(conn: &mut SqliteConnection, user_id: i64) -> Result<Vec<RunRow>, sqlx::Error> {
    // A join from the jobs, so each job costs two seeks in the partial indexes and one in
    // the runs' key (an `id IN (…)` made SQLite scan every run).
    sqlx::query_as(
        "SELECT r.id, r.job_id, r.idempotency_key, r.trigger, r.scheduled_for, r.attempt, r.status, r.started_at, \
         r.finished_at, r.output, r.error, r.prompt_tokens, r.completion_tokens, r.tool_calls, r.created_at \
         FROM scheduled_jobs j JOIN job_runs r ON r.id = COALESCE( \
           (SELECT o.id FROM job_runs o WHERE o.job_id = j.id AND o.status IN ('queued', 'running') \
            ORDER BY o.created_at DESC LIMIT 1), \
           (SELECT f.id FROM job_runs f WHERE f.job_id = j.id AND f.status IN ('succeeded', 'failed') \
            ORDER BY f.finished_at DESC, f.id LIMIT 1)) \
         WHERE j.source = 'kubernetes' OR j.owner_id = ?",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// Jobs whose next firing is at or before `now`.
pub async fn due(conn: &mut SqliteConnection, now: DateTime<Utc>, limit: i64) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as(select_jobs!("WHERE next_run_at IS NOT NULL AND next_run_at <= ? ORDER BY next_run_at LIMIT ?"))
        .bind(now)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// The earliest next firing of any job.
pub async fn next_due(conn: &mut SqliteConnection) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT MIN(next_run_at) FROM scheduled_jobs WHERE next_run_at IS NOT NULL")
        .fetch_one(conn)
        .await
}

/// Moves a job's schedule on, if nobody else did since `expected` was read.
pub async fn advance(
    conn: &mut SqliteConnection,
    id: &str,
    expected: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
    scheduled: Option<DateTime<Utc>>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE scheduled_jobs SET next_run_at = ?, last_schedule_at = COALESCE(?, last_schedule_at) \
         WHERE id = ? AND next_run_at = ?",
    )
    .bind(next)
    .bind(scheduled)
    .bind(id)
    .bind(expected)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn set_suspended(
    conn: &mut SqliteConnection,
    id: &str,
    owner_id: i64,
    suspended: bool,
    next: Option<DateTime<Utc>>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE scheduled_jobs SET suspended = ?, next_run_at = ?, updated_at = ? WHERE id = ? AND owner_id = ?",
    )
    .bind(suspended)
    .bind(next)
    .bind(Utc::now())
    .bind(id)
    .bind(owner_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a job and (by cascade) its runs. Personal jobs only with their owner's id.
pub async fn delete(conn: &mut SqliteConnection, id: &str, owner_id: Option<i64>) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM scheduled_jobs WHERE id = ? AND (? IS NULL OR owner_id = ?)")
        .bind(id)
        .bind(owner_id)
        .bind(owner_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a run; `false` when a run with the same key exists (the firing was recorded
/// before, here or by another replica).
pub async fn insert_run(conn: &mut SqliteConnection, run: &RunRow) -> Result<bool, sqlx::Error> {
    let mut query = super::insert_row!(
        "job_runs",
        run,
        [
            id,
            job_id,
            idempotency_key,
            trigger,
            scheduled_for,
            attempt,
            status,
            started_at,
            finished_at,
            output,
            error,
            tool_calls,
            created_at
        ]
    );
    query.push(" ON CONFLICT (idempotency_key) DO NOTHING");
    Ok(query.build().execute(conn).await?.rows_affected() == 1)
}

pub async fn run_by_id(conn: &mut SqliteConnection, id: &str) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as(select_runs!("WHERE id = ?")).bind(id).fetch_optional(conn).await
}

/// A job's runs, newest first.
pub async fn runs(conn: &mut SqliteConnection, job_id: &str, limit: i64) -> Result<Vec<RunRow>, sqlx::Error> {
    sqlx::query_as(select_runs!("WHERE job_id = ? ORDER BY created_at DESC, id LIMIT ?"))
        .bind(job_id)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// The newest finished run of a job.
pub async fn last_finished(conn: &mut SqliteConnection, job_id: &str) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as(select_runs!(
        "WHERE job_id = ? AND status IN ('succeeded', 'failed') ORDER BY finished_at DESC, id LIMIT 1"
    ))
    .bind(job_id)
    .fetch_optional(conn)
    .await
}

/// Runs of a job that are queued or running.
pub async fn open_runs(conn: &mut SqliteConnection, job_id: &str) -> Result<Vec<RunRow>, sqlx::Error> {
    sqlx::query_as(select_runs!("WHERE job_id = ? AND status IN ('queued', 'running') ORDER BY created_at"))
        .bind(job_id)
        .fetch_all(conn)
        .await
}

/// Moves a queued run to running; `false` when it was not queued (already taken, or done).
pub async fn claim(conn: &mut SqliteConnection, id: &str, attempt: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE job_runs SET status = 'running', started_at = COALESCE(started_at, ?) \
         WHERE id = ? AND status = 'queued' AND attempt = ?",
    )
    .bind(Utc::now())
    .bind(id)
    .bind(attempt)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Puts a run back in the queue for its next attempt.
pub async fn requeue(conn: &mut SqliteConnection, id: &str, attempt: i64, error: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE job_runs SET status = 'queued', attempt = ?, error = ? WHERE id = ? AND status IN ('running', 'queued')",
    )
    .bind(attempt)
    .bind(error)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome<'a> {
    pub status: RunStatus,
    pub output: &'a str,
    pub error: Option<&'a str>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub tool_calls: &'a [ToolCallRecord],
}

/// Ends a run that is still open; `false` when it had already ended.
pub async fn finish(conn: &mut SqliteConnection, id: &str, outcome: &RunOutcome<'_>) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE job_runs SET status = ?, output = ?, error = ?, prompt_tokens = ?, completion_tokens = ?, \
         tool_calls = ?, finished_at = ?, started_at = COALESCE(started_at, ?) \
         WHERE id = ? AND status IN ('queued', 'running')",
    )
    .bind(outcome.status)
    .bind(outcome.output)
    .bind(outcome.error)
    .bind(outcome.prompt_tokens)
    .bind(outcome.completion_tokens)
    .bind(Json(outcome.tool_calls))
    .bind(Utc::now())
    .bind(Utc::now())
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes runs that ended before `before` (with their deliveries), except each job's
/// latest finished run, which its status shows; how many.
pub async fn delete_runs_ended_before(conn: &mut SqliteConnection, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM job_runs WHERE finished_at IS NOT NULL AND finished_at < ? \
         AND finished_at < (SELECT MAX(r.finished_at) FROM job_runs r WHERE r.job_id = job_runs.job_id)",
    )
    .bind(before)
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected())
}
