//! The `audit_log` table: append and page through.
//! What is worth recording is decided by the services that call `audit::AuditLog`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub client_addr: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
}

/// A row to append.
#[derive(Debug, Clone, Default)]
pub struct NewAuditEntry<'a> {
    pub actor: Option<&'a str>,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub client_addr: Option<&'a str>,
    /// `success`, `failure` or `denied`.
    pub outcome: &'a str,
    pub detail: Option<&'a str>,
}

/// Filters of the audit page; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// An action, or a prefix ending in `.` such as `user.`.
    pub action: Option<String>,
    pub outcome: Option<String>,
}

pub async fn insert(
    conn: &mut SqliteConnection,
    entry: &NewAuditEntry<'_>,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (occurred_at, actor, action, target, client_addr, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(at)
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.target)
    .bind(entry.client_addr)
    .bind(entry.outcome)
    .bind(entry.detail)
    .execute(conn)
    .await?;
    Ok(())
}

/// Where a page of the log starts: keyset paging on the id, so any depth costs the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cursor {
    #[default]
    Newest,
    /// Entries older than this id.
    Before(i64),
    /// Entries newer than this id.
    After(i64),
}

/// `limit` rows matching `filter` next to `cursor`: newest first, except for
/// [`Cursor::After`], which returns the oldest of the newer entries first.
pub async fn page(
    conn: &mut SqliteConnection,
    filter: &AuditFilter,
    cursor: Cursor,
    limit: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
        "SELECT id, occurred_at, actor, action, target, client_addr, outcome, detail FROM audit_log WHERE 1 = 1",
    );
    if let Some(actor) = &filter.actor {
        query.push(" AND actor = ").push_bind(actor.clone());
    }
    match filter.action.as_deref() {
        Some(prefix) if prefix.ends_with('.') => {
            query.push(" AND substr(action, 1, length(").push_bind(prefix.to_owned());
            query.push(")) = ").push_bind(prefix.to_owned());
        }
        Some(action) => {
            query.push(" AND action = ").push_bind(action.to_owned());
        }
        None => {}
    }
    if let Some(outcome) = &filter.outcome {
        query.push(" AND outcome = ").push_bind(outcome.clone());
    }
    match cursor {
        Cursor::Newest => query.push(" ORDER BY id DESC"),
        Cursor::Before(id) => query.push(" AND id < ").push_bind(id).push(" ORDER BY id DESC"),
        Cursor::After(id) => query.push(" AND id > ").push_bind(id).push(" ORDER BY id ASC"),
    };
    query.push(" LIMIT ").push_bind(limit);
    query.build_query_as().fetch_all(conn).await
}

/// Deletes entries recorded before `before`; how many.
pub async fn delete_before(conn: &mut SqliteConnection, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM audit_log WHERE occurred_at < ?").bind(before).execute(conn).await?.rows_affected())
}
