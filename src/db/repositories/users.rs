//! The `users` table.
//! Rows in, rows out; who may change what is decided in `auth::users`.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use crate::auth::model::{Role, User};

/// `SELECT <every column> FROM users <rest>`, as one literal (sqlx accepts only literal SQL).
macro_rules! select_users {
    ($rest:literal) => {
        concat!(
            "SELECT id, username, password_hash, role, disabled, created_at, password_changed_at, oidc_subject, sso_link_allowed \
             FROM users ",
            $rest
        )
    };
}

pub async fn insert(
    conn: &mut SqliteConnection,
    username: &str,
    password_hash: &str,
    role: Role,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO users (username, password_hash, role, created_at, password_changed_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(username)
    .bind(password_hash)
    .bind(role)
    .bind(now)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(result.last_insert_rowid())
}

pub async fn count(conn: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(conn).await
}

/// Admins that can still sign in.
pub async fn count_active_admins(conn: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0").fetch_one(conn).await
}

pub async fn by_username(conn: &mut SqliteConnection, username: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(select_users!("WHERE username = ?")).bind(username).fetch_optional(conn).await
}

pub async fn by_id(conn: &mut SqliteConnection, id: i64) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(select_users!("WHERE id = ?")).bind(id).fetch_optional(conn).await
}

pub async fn list(conn: &mut SqliteConnection) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as(select_users!("ORDER BY username")).fetch_all(conn).await
}

pub async fn set_password(
    conn: &mut SqliteConnection,
    id: i64,
    password_hash: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?")
        .bind(password_hash)
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_role(conn: &mut SqliteConnection, id: i64, role: Role) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET role = ? WHERE id = ?").bind(role).bind(id).execute(conn).await?;
    Ok(())
}

pub async fn set_disabled(conn: &mut SqliteConnection, id: i64, disabled: bool) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET disabled = ? WHERE id = ?").bind(disabled).bind(id).execute(conn).await?;
    Ok(())
}

/// The account linked to a single sign-on identity.
pub async fn by_identity(
    conn: &mut SqliteConnection,
    issuer: &str,
    subject: &str,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(select_users!("WHERE oidc_issuer = ? AND oidc_subject = ?"))
        .bind(issuer)
        .bind(subject)
        .fetch_optional(conn)
        .await
}

/// A new account for a single sign-on identity, without a local password.
pub async fn insert_linked(
    conn: &mut SqliteConnection,
    username: &str,
    role: Role,
    issuer: &str,
    subject: &str,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO users (username, password_hash, role, created_at, password_changed_at, oidc_issuer, oidc_subject) \
         VALUES (?, '', ?, ?, ?, ?, ?)",
    )
    .bind(username)
    .bind(role)
    .bind(now)
    .bind(now)
    .bind(issuer)
    .bind(subject)
    .execute(conn)
    .await?;
    Ok(result.last_insert_rowid())
}

/// Links an existing account to a single sign-on identity (and spends the admin's allowance).
pub async fn link(conn: &mut SqliteConnection, id: i64, issuer: &str, subject: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET oidc_issuer = ?, oidc_subject = ?, sso_link_allowed = 0 WHERE id = ?")
        .bind(issuer)
        .bind(subject)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_sso_link_allowed(conn: &mut SqliteConnection, id: i64, allowed: bool) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET sso_link_allowed = ? WHERE id = ?").bind(allowed).bind(id).execute(conn).await?;
    Ok(())
}
