//! The `deliveries` table: one row per (run, target) of a succeeded run, and where it stands.
//! A worker takes a due pending delivery under a lease, so two replicas never work on the
//! same one and a dead worker's delivery is taken again when its lease runs out.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use sqlx::types::Json;

use crate::jobs::model::{DeliveryState, Target};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: String,
    pub run_id: String,
    pub job_id: String,
    pub target_name: String,
    pub target: Json<Target>,
    pub state: DeliveryState,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub link: Option<String>,
    pub conversation_id: Option<i64>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub lease_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! select_deliveries {
    ($rest:literal) => {
        concat!(
            "SELECT id, run_id, job_id, target_name, target, state, attempts, last_error, link, conversation_id, \
             next_attempt_at, lease_until, created_at, updated_at FROM deliveries ",
            $rest
        )
    };
}

/// A pending delivery of `run_id` to each target, due now.
pub async fn create(
    conn: &mut SqliteConnection,
    run_id: &str,
    job_id: &str,
    targets: &[Target],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    for target in targets {
        let row = DeliveryRow {
            id: uuid::Uuid::new_v4().to_string(),
            run_id: run_id.to_owned(),
            job_id: job_id.to_owned(),
            target_name: target.name.clone(),
            target: Json(target.clone()),
            state: DeliveryState::Pending,
            attempts: 0,
            last_error: None,
            link: None,
            conversation_id: None,
            next_attempt_at: Some(now),
            lease_until: None,
            created_at: now,
            updated_at: now,
        };
        let mut query = super::insert_row!(
            "deliveries",
            row,
            [id, run_id, job_id, target_name, target, state, attempts, next_attempt_at, created_at, updated_at]
        );
        query.push(" ON CONFLICT (run_id, target_name) DO NOTHING");
        query.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Pending deliveries due at `now` whose lease (if any) ran out, oldest first.
pub async fn due(conn: &mut SqliteConnection, now: DateTime<Utc>, limit: i64) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(select_deliveries!(
        "WHERE state = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?) \
         ORDER BY next_attempt_at LIMIT ?"
    ))
    .bind(now)
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// When the next pending delivery is due (or its lease runs out).
pub async fn next_due(conn: &mut SqliteConnection) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT MIN(MAX(next_attempt_at, COALESCE(lease_until, next_attempt_at))) FROM deliveries \
         WHERE state = 'pending'",
    )
    .fetch_one(conn)
    .await
}

/// Takes a due delivery until `until` and counts the attempt; `false` when another worker
/// has it or it is no longer pending.
pub async fn take(
    conn: &mut SqliteConnection,
    id: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE deliveries SET lease_until = ?, attempts = attempts + 1, updated_at = ? \
         WHERE id = ? AND state = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?)",
    )
    .bind(until)
    .bind(now)
    .bind(id)
    .bind(now)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a delivery's end (delivered or failed), or its next try when `retry_at` is set.
pub async fn settle(
    conn: &mut SqliteConnection,
    id: &str,
    state: DeliveryState,
    link: Option<&str>,
    error: Option<&str>,
    retry_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE deliveries SET state = ?, link = COALESCE(?, link), last_error = ?, next_attempt_at = ?, \
         lease_until = NULL, updated_at = ? WHERE id = ?",
    )
    .bind(state)
    .bind(link)
    .bind(error)
    .bind(retry_at)
    .bind(Utc::now())
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Remembers the conversation a conversation target writes to.
pub async fn set_conversation(conn: &mut SqliteConnection, id: &str, conversation_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE deliveries SET conversation_id = ? WHERE id = ?")
        .bind(conversation_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The conversation an earlier run's delivery to the same target of the job wrote to.
pub async fn last_conversation(
    conn: &mut SqliteConnection,
    job_id: &str,
    target_name: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT conversation_id FROM deliveries WHERE job_id = ? AND target_name = ? AND conversation_id IS NOT NULL \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(job_id)
    .bind(target_name)
    .fetch_optional(conn)
    .await
}

/// A run's deliveries, in the order of the job's targets when they were made.
pub async fn for_run(conn: &mut SqliteConnection, run_id: &str) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(select_deliveries!("WHERE run_id = ? ORDER BY rowid")).bind(run_id).fetch_all(conn).await
}

/// The deliveries of a job's latest `runs` runs, in one query.
pub async fn for_latest_runs(
    conn: &mut SqliteConnection,
    job_id: &str,
    runs: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(select_deliveries!(
        "WHERE job_id = ? AND run_id IN (SELECT id FROM job_runs WHERE job_id = ? ORDER BY created_at DESC, id LIMIT ?) \
         ORDER BY rowid"
    ))
    .bind(job_id)
    .bind(job_id)
    .bind(runs)
    .fetch_all(conn)
    .await
}

pub async fn by_id(conn: &mut SqliteConnection, id: &str) -> Result<Option<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(select_deliveries!("WHERE id = ?")).bind(id).fetch_optional(conn).await
}

/// Makes a failed delivery pending again, due now ("deliver again"); `false` when it was
/// not failed.
pub async fn retry(conn: &mut SqliteConnection, id: &str, now: DateTime<Utc>) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? \
         WHERE id = ? AND state = 'failed'",
    )
    .bind(now)
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
