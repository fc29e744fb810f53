//! The `maintenance_tasks` table: a lease and the last outcome per housekeeping task.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

/// A task's row: who holds it, and its last run.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct TaskRow {
    pub task: String,
    pub holder: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_started: Option<DateTime<Utc>>,
    pub last_finished: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
    pub last_duration_ms: Option<i64>,
    pub last_detail: Option<String>,
}

/// Takes `task` for `holder` until `until`, unless another holder's lease still runs.
pub async fn take(
    conn: &mut SqliteConnection,
    task: &str,
    holder: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query("INSERT OR IGNORE INTO maintenance_tasks (task) VALUES (?)").bind(task).execute(&mut *conn).await?;
    let taken = sqlx::query(
        "UPDATE maintenance_tasks SET holder = ?, lease_until = ?, last_started = ? \
         WHERE task = ? AND (holder IS NULL OR lease_until < ? OR holder = ?)",
    )
    .bind(holder)
    .bind(until)
    .bind(now)
    .bind(task)
    .bind(now)
    .bind(holder)
    .execute(conn)
    .await?;
    Ok(taken.rows_affected() == 1)
}

/// Records the end of a run and lets the lease go.
pub async fn finish(
    conn: &mut SqliteConnection,
    task: &str,
    holder: &str,
    outcome: &str,
    duration_ms: i64,
    detail: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE maintenance_tasks SET holder = NULL, lease_until = NULL, last_finished = ?, last_outcome = ?, \
         last_duration_ms = ?, last_detail = ? WHERE task = ? AND holder = ?",
    )
    .bind(now)
    .bind(outcome)
    .bind(duration_ms)
    .bind(detail)
    .bind(task)
    .bind(holder)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn all(conn: &mut SqliteConnection) -> Result<Vec<TaskRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT task, holder, lease_until, last_started, last_finished, last_outcome, last_duration_ms, last_detail \
         FROM maintenance_tasks ORDER BY task",
    )
    .fetch_all(conn)
    .await
}
