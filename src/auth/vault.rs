//! The token vault: each user's Jira and Confluence personal access tokens, sealed with
//! AES-256-GCM under the active key with the owner and service bound in. Only hints leave.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::SqlitePool;

use super::keys::{Keyring, OpenError, Purpose, Sealed};
use super::model::Service;
use crate::audit::{Actor, AuditLog, Event, Outcome};
use crate::db::repositories::credentials::{self, CredentialRow};

/// The longest token accepted; real PATs are well under this.
pub const MAX_TOKEN_LEN: usize = 4096;
pub const MIN_TOKEN_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{0}")]
    Invalid(String),
    #[error("the stored token cannot be opened: {0}")]
    Open(#[from] OpenError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What a user (and the API) may see of a stored token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialStatus {
    #[serde(skip)]
    pub service: Service,
    pub configured: bool,
    /// `…` and the last four characters.
    pub hint: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
pub struct TokenVault {
    db: SqlitePool,
    keyring: Arc<Keyring>,
    audit: AuditLog,
}

impl TokenVault {
    pub fn new(db: SqlitePool, keyring: Arc<Keyring>, audit: AuditLog) -> Self {
        Self { db, keyring, audit }
    }

    /// Stores (or replaces) a token.
    pub async fn set(
        &self,
        user_id: i64,
        service: Service,
        token: &SecretString,
        actor: &Actor,
    ) -> Result<CredentialStatus, VaultError> {
        let token = token.expose_secret().trim();
        let length = token.chars().count();
        if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&length) {
            return Err(VaultError::Invalid(format!("a token has {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters")));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(VaultError::Invalid("a token has no spaces, line breaks or control characters".into()));
        }
        let sealed = self.keyring.seal(Purpose::Vault, &binding(user_id, service), token.as_bytes());
        let row = CredentialRow {
            user_id,
            service,
            key_id: sealed.key_id,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
            hint: hint(token),
            updated_at: Utc::now(),
        };
        credentials::upsert(&mut *self.db.acquire().await?, &row).await?;
        self.audit.record(actor, event("token.set", service, Outcome::Success)).await;
        Ok(status(service, Some(&row)))
    }

    /// Forgets a token; false when none was stored.
    pub async fn remove(&self, user_id: i64, service: Service, actor: &Actor) -> Result<bool, VaultError> {
        let removed = credentials::delete(&mut *self.db.acquire().await?, user_id, service).await?;
        if removed {
            self.audit.record(actor, event("token.remove", service, Outcome::Success)).await;
        }
        Ok(removed)
    }

    /// The status of every service for a user, in `Service::ALL` order.
    pub async fn statuses(&self, user_id: i64) -> Result<Vec<CredentialStatus>, VaultError> {
        let rows = credentials::for_user(&mut *self.db.acquire().await?, user_id).await?;
        Ok(Service::ALL.iter().map(|s| status(*s, rows.iter().find(|r| r.service == *s))).collect())
    }

    /// The clear token, for the one call that needs it (an MCP request on the user's behalf).
    pub async fn open(&self, user_id: i64, service: Service) -> Result<Option<SecretString>, VaultError> {
        let Some(row) = credentials::get(&mut *self.db.acquire().await?, user_id, service).await? else {
            return Ok(None);
        };
        let clear = self.keyring.open(Purpose::Vault, &binding(user_id, service), &sealed(&row))?;
        let clear = String::from_utf8(clear).map_err(|_| OpenError::Corrupt)?;
        Ok(Some(SecretString::from(clear)))
    }

    /// Re-seals every token not sealed under the active key. Returns how many were
    /// re-sealed. All or nothing: one row that cannot be opened stops the rotation.
    pub async fn rotate(&self) -> Result<usize, VaultError> {
        let mut tx = crate::db::write(&self.db).await?;
        let active = self.keyring.active_id();
        let mut resealed = 0;
        for row in credentials::all(&mut tx).await? {
            if row.key_id == active {
                continue;
            }
            let aad = binding(row.user_id, row.service);
            let clear = self.keyring.open(Purpose::Vault, &aad, &sealed(&row))?;
            let fresh = self.keyring.seal(Purpose::Vault, &aad, &clear);
            let updated =
                CredentialRow { key_id: fresh.key_id, nonce: fresh.nonce, ciphertext: fresh.ciphertext, ..row };
            credentials::upsert(&mut tx, &updated).await?;
            resealed += 1;
        }
        tx.commit().await?;
        Ok(resealed)
    }
}

/// The associated data that ties a ciphertext to its owner and service.
fn binding(user_id: i64, service: Service) -> Vec<u8> {
    format!("promptops:credential:v1:user={user_id}:service={service}").into_bytes()
}

fn sealed(row: &CredentialRow) -> Sealed {
    Sealed { key_id: row.key_id.clone(), nonce: row.nonce.clone(), ciphertext: row.ciphertext.clone() }
}

fn hint(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("…{tail}")
}

fn status(service: Service, row: Option<&CredentialRow>) -> CredentialStatus {
    CredentialStatus {
        service,
        configured: row.is_some(),
        hint: row.map(|r| r.hint.clone()),
        updated_at: row.map(|r| r.updated_at),
    }
}

fn event(action: &str, service: Service, outcome: Outcome) -> Event<'_> {
    Event { action, target: Some(service.as_str()), outcome, detail: None }
}
