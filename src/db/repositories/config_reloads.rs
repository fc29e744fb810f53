//! The `config_reloads` table: one row per attempt to apply a config set.
//! Plain reads and writes; deciding what counts as a reload belongs to `config::reload`.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConfigReload {
    pub id: i64,
    /// Set when the set was applied.
    pub generation: Option<i64>,
    pub sha256: String,
    /// `applied` or `rejected`.
    pub outcome: String,
    pub error: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// What to record: an applied generation, or the reason a set was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadRecord<'a> {
    Applied { generation: i64 },
    Rejected { error: &'a str },
}

pub async fn insert(
    conn: &mut SqliteConnection,
    sha256: &str,
    record: &ReloadRecord<'_>,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let (generation, outcome, error) = match record {
        ReloadRecord::Applied { generation } => (Some(*generation), "applied", None),
        ReloadRecord::Rejected { error } => (None, "rejected", Some(*error)),
    };
    sqlx::query("INSERT INTO config_reloads (generation, sha256, outcome, error, occurred_at) VALUES (?, ?, ?, ?, ?)")
        .bind(generation)
        .bind(sha256)
        .bind(outcome)
        .bind(error)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

/// The highest generation ever applied, so numbering continues after a restart.
pub async fn max_generation(conn: &mut SqliteConnection) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT MAX(generation) FROM config_reloads").fetch_one(conn).await
}

/// The most recent attempts, newest first.
pub async fn recent(conn: &mut SqliteConnection, limit: i64) -> Result<Vec<ConfigReload>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, generation, sha256, outcome, error, occurred_at FROM config_reloads ORDER BY id DESC LIMIT ?",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Deletes reloads recorded before `before`, except the latest applied one (the live
/// generation counts on from it); how many.
pub async fn delete_before(conn: &mut SqliteConnection, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query(
        "DELETE FROM config_reloads WHERE occurred_at < ? \
         AND generation IS NOT (SELECT MAX(generation) FROM config_reloads)",
    )
    .bind(before)
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected())
}
