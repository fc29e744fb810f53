//! The `sessions` table: the server-side half of every session cookie.
//! Liveness (not revoked, not expired) is checked in SQL; the rules live in `auth::session`.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use crate::auth::model::User;

/// A live session row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRow {
    pub id: String,
    pub user_id: i64,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert(conn: &mut SqliteConnection, row: &SessionRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, csrf_token, created_at, last_seen_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&row.id)
    .bind(row.user_id)
    .bind(&row.csrf_token)
    .bind(row.created_at)
    .bind(row.last_seen_at)
    .bind(row.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A live session with its user, read in one query (every signed-in request needs both).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LiveSession {
    #[sqlx(flatten)]
    pub user: User,
    pub session_id: String,
    pub session_csrf_token: String,
    pub session_created_at: DateTime<Utc>,
    pub session_expires_at: DateTime<Utc>,
}

/// The session `id` with its user, if the session is neither revoked nor expired at `now`.
pub async fn live_with_user(
    conn: &mut SqliteConnection,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<LiveSession>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.id, u.username, u.password_hash, u.role, u.disabled, u.created_at, u.password_changed_at, \
         u.oidc_subject, u.sso_link_allowed, s.id AS session_id, s.csrf_token AS session_csrf_token, \
         s.created_at AS session_created_at, s.expires_at AS session_expires_at \
         FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ? AND s.revoked_at IS NULL AND s.expires_at > ?",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(conn)
    .await
}

/// Records activity and moves the sliding expiry.
pub async fn touch(
    conn: &mut SqliteConnection,
    id: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET last_seen_at = ?, expires_at = ? WHERE id = ?")
        .bind(now)
        .bind(expires_at)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn revoke(conn: &mut SqliteConnection, id: &str, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Ends every session of a user, except `keep` (the one changing its own password).
pub async fn revoke_for_user(
    conn: &mut SqliteConnection,
    user_id: i64,
    keep: Option<&str>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL AND id IS NOT COALESCE(?, '')",
    )
    .bind(now)
    .bind(user_id)
    .bind(keep)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// Forgets sessions that ended before `before`.
pub async fn delete_ended(conn: &mut SqliteConnection, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let result = sqlx::query("DELETE FROM sessions WHERE expires_at < ? OR revoked_at < ?")
        .bind(before)
        .bind(before)
        .execute(conn)
        .await?;
    Ok(result.rows_affected())
}
