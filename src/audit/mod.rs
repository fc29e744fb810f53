//! The audit log service: who did what, from where, with what outcome.
//! Callers describe events; this writes them (never a secret) and pages them back.

use chrono::Utc;
use sqlx::SqlitePool;

use crate::db::repositories::audit::{self, AuditEntry, AuditFilter, Cursor, NewAuditEntry};

/// Result of an audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// Refused by a rule (throttling, permissions) before it was tried.
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }
}

/// Who acts and from where; `None` for the system itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    pub username: Option<String>,
    pub client_addr: Option<String>,
}

impl Actor {
    pub fn system() -> Self {
        Self::default()
    }
}

/// One event to record.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub outcome: Outcome,
    pub detail: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct AuditLog {
    db: SqlitePool,
}

/// Rows per audit page.
pub const PAGE_SIZE: i64 = 50;

/// One page of the log, newest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next older page; None at the oldest.
    pub older: Option<i64>,
    /// Pass as `after` for the next newer page; None at the newest.
    pub newer: Option<i64>,
}

impl AuditLog {
    pub fn new(db: SqlitePool) -> Self {
        Self { db }
    }

    /// Appends an event. A failure to write is logged loudly but does not undo the
    /// action it describes.
    pub async fn record(&self, actor: &Actor, event: Event<'_>) {
        let entry = NewAuditEntry {
            actor: actor.username.as_deref(),
            action: event.action,
            target: event.target,
            client_addr: actor.client_addr.as_deref(),
            outcome: event.outcome.as_str(),
            detail: event.detail,
        };
        let written = match self.db.acquire().await {
            Ok(mut conn) => audit::insert(&mut conn, &entry, Utc::now()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::error!(error = %e, action = event.action, "cannot write the audit log");
        }
    }

    /// A page of the entries matching `filter` next to `cursor`, newest first, with the
    /// cursors of the pages around it.
    pub async fn page(&self, filter: &AuditFilter, cursor: Cursor) -> Result<AuditPage, sqlx::Error> {
        let mut conn = self.db.acquire().await?;
        let mut entries = audit::page(&mut conn, filter, cursor, PAGE_SIZE + 1).await?;
        let beyond = entries.len() > PAGE_SIZE as usize;
        entries.truncate(PAGE_SIZE as usize);
        let (older_exist, newer_exist) = match cursor {
            Cursor::Newest => (beyond, false),
            Cursor::Before(_) => (beyond, true),
            Cursor::After(_) => {
                entries.reverse();
                (true, beyond)
            }
        };
        let older = entries.last().filter(|_| older_exist).map(|e| e.id);
        let newer = entries.first().filter(|_| newer_exist).map(|e| e.id);
        Ok(AuditPage { entries, older, newer })
    }
}
