//! The `credentials` table: sealed personal access tokens.
//! Stores and returns ciphertext only; sealing and opening happen in `auth::vault`.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use crate::auth::model::Service;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CredentialRow {
    pub user_id: i64,
    pub service: Service,
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub hint: String,
    pub updated_at: DateTime<Utc>,
}

/// `SELECT <every column> FROM credentials <rest>`, as one literal.
macro_rules! select_credentials {
    ($rest:literal) => {
        concat!("SELECT user_id, service, key_id, nonce, ciphertext, hint, updated_at FROM credentials ", $rest)
    };
}

pub async fn upsert(conn: &mut SqliteConnection, row: &CredentialRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO credentials (user_id, service, key_id, nonce, ciphertext, hint, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (user_id, service) DO UPDATE SET key_id = excluded.key_id, nonce = excluded.nonce, \
         ciphertext = excluded.ciphertext, hint = excluded.hint, updated_at = excluded.updated_at",
    )
    .bind(row.user_id)
    .bind(row.service)
    .bind(&row.key_id)
    .bind(&row.nonce)
    .bind(&row.ciphertext)
    .bind(&row.hint)
    .bind(row.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(
    conn: &mut SqliteConnection,
    user_id: i64,
    service: Service,
) -> Result<Option<CredentialRow>, sqlx::Error> {
    sqlx::query_as(select_credentials!("WHERE user_id = ? AND service = ?"))
        .bind(user_id)
        .bind(service)
        .fetch_optional(conn)
        .await
}

pub async fn for_user(conn: &mut SqliteConnection, user_id: i64) -> Result<Vec<CredentialRow>, sqlx::Error> {
    sqlx::query_as(select_credentials!("WHERE user_id = ?")).bind(user_id).fetch_all(conn).await
}

/// Every row, for re-sealing under a new key.
pub async fn all(conn: &mut SqliteConnection) -> Result<Vec<CredentialRow>, sqlx::Error> {
    sqlx::query_as(select_credentials!("ORDER BY user_id, service")).fetch_all(conn).await
}

pub async fn delete(conn: &mut SqliteConnection, user_id: i64, service: Service) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("DELETE FROM credentials WHERE user_id = ? AND service = ?")
        .bind(user_id)
        .bind(service)
        .execute(conn)
        .await?;
    Ok(result.rows_affected() > 0)
}
