//! The `oidc_logins` table: single sign-ins under way at the provider.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

/// One sign-in that went to the provider and has not come back yet.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingLogin {
    pub state_hash: String,
    pub binding_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub next: String,
    pub created_at: DateTime<Utc>,
}

pub async fn insert(conn: &mut SqliteConnection, login: &PendingLogin) -> Result<(), sqlx::Error> {
    super::insert_row!("oidc_logins", login, [state_hash, binding_hash, nonce, pkce_verifier, next, created_at])
        .build()
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes and returns the sign-in with this state: each can come back once only.
pub async fn take(conn: &mut SqliteConnection, state_hash: &str) -> Result<Option<PendingLogin>, sqlx::Error> {
    sqlx::query_as(
        "DELETE FROM oidc_logins WHERE state_hash = ? \
         RETURNING state_hash, binding_hash, nonce, pkce_verifier, next, created_at",
    )
    .bind(state_hash)
    .fetch_optional(conn)
    .await
}

/// Drops sign-ins started before `before`; returns how many are left.
pub async fn prune(conn: &mut SqliteConnection, before: DateTime<Utc>) -> Result<i64, sqlx::Error> {
    sqlx::query("DELETE FROM oidc_logins WHERE created_at < ?").bind(before).execute(&mut *conn).await?;
    sqlx::query_scalar("SELECT COUNT(*) FROM oidc_logins").fetch_one(conn).await
}
