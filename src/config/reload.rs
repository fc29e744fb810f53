//! The config service: reads the directory, validates the set, swaps it in, records
//! the outcome (log, metrics, database). The watcher decides when; this decides what.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use sqlx::SqlitePool;
use tokio::sync::Mutex;

use super::interpolate::Env;
use super::load::RawConfigSet;
use super::store::{ConfigSnapshot, ConfigStore, RejectedConfig};
use crate::db::repositories::audit::{self, NewAuditEntry};
use crate::db::repositories::config_reloads::{self, ConfigReload, ReloadRecord};
use crate::telemetry::metrics::Metrics;

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Same files as the live set, or as the set last rejected.
    Unchanged,
    Applied {
        generation: u64,
    },
    Rejected {
        error: String,
    },
}

#[derive(Debug)]
pub struct ConfigReloader {
    dir: PathBuf,
    dir_display: String,
    env: Arc<dyn Env>,
    store: Arc<ConfigStore>,
    db: SqlitePool,
    metrics: Arc<Metrics>,
    /// Serialises reloads and holds the last generation handed out.
    last_generation: Mutex<u64>,
}

impl ConfigReloader {
    /// Continues the generation numbering recorded in the database.
    pub async fn new(
        dir: PathBuf,
        env: Arc<dyn Env>,
        store: Arc<ConfigStore>,
        db: SqlitePool,
        metrics: Arc<Metrics>,
    ) -> Result<Self, sqlx::Error> {
        let mut conn = db.acquire().await?;
        let last = config_reloads::max_generation(&mut conn).await?.unwrap_or(0);
        drop(conn);
        Ok(Self {
            dir_display: dir.display().to_string(),
            dir,
            env,
            store,
            db,
            metrics,
            last_generation: Mutex::new(u64::try_from(last).unwrap_or(0)),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn store(&self) -> &Arc<ConfigStore> {
        &self.store
    }

    /// Reads the directory once and applies the set if it is new and valid.
    pub async fn reload(&self) -> ReloadOutcome {
        let mut last_generation = self.last_generation.lock().await;
        let raw = RawConfigSet::read(&self.dir).await;
        self.metrics.config_reads.inc();
        let sha256 = raw.sha256();
        if self.store.current().is_some_and(|live| live.sha256 == sha256) {
            self.store.clear_rejected();
            return ReloadOutcome::Unchanged;
        }
        if self.store.last_rejected().is_some_and(|r| r.sha256 == sha256) {
            return ReloadOutcome::Unchanged;
        }
        let now = Utc::now();
        match raw.parse(self.env.as_ref()) {
            Ok(config) => {
                let generation = *last_generation + 1;
                *last_generation = generation;
                // Recorded first, so whoever sees generation N live finds it in the history.
                let record = ReloadRecord::Applied { generation: i64::try_from(generation).unwrap_or(i64::MAX) };
                self.record(&sha256, &record, now).await;
                self.store.apply(ConfigSnapshot { generation, sha256: sha256.clone(), loaded_at: now, config });
                self.metrics.config_generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
                tracing::info!(generation, sha256 = %sha256, dir = %self.dir.display(), "config applied");
                ReloadOutcome::Applied { generation }
            }
            Err(e) => {
                let error = e.to_string();
                self.record(&sha256, &ReloadRecord::Rejected { error: &error }, now).await;
                self.store.reject(RejectedConfig { sha256: sha256.clone(), error: error.clone(), at: now });
                self.metrics.config_reload_failures.inc();
                tracing::warn!(
                    sha256 = %sha256,
                    dir = %self.dir.display(),
                    error = %error,
                    live_generation = self.store.current().map(|s| s.generation),
                    "config rejected; the last good config stays live"
                );
                ReloadOutcome::Rejected { error }
            }
        }
    }

    /// The most recent reload attempts, newest first.
    pub async fn history(&self, limit: i64) -> Result<Vec<ConfigReload>, sqlx::Error> {
        config_reloads::recent(&mut *self.db.acquire().await?, limit).await
    }

    /// History and audit are for admins; a database hiccup must not undo a reload
    /// already live.
    async fn record(&self, sha256: &str, record: &ReloadRecord<'_>, at: chrono::DateTime<Utc>) {
        let written = async {
            let mut tx = crate::db::write(&self.db).await?;
            config_reloads::insert(&mut tx, sha256, record, at).await?;
            let (outcome, detail) = match record {
                ReloadRecord::Applied { generation } => {
                    ("success", format!("generation {generation}, sha256 {sha256}"))
                }
                ReloadRecord::Rejected { error } => ("failure", format!("sha256 {sha256}: {error}")),
            };
            let entry = NewAuditEntry {
                action: "config.reload",
                target: Some(&self.dir_display),
                outcome,
                detail: Some(&detail),
                ..NewAuditEntry::default()
            };
            audit::insert(&mut tx, &entry, at).await?;
            tx.commit().await
        };
        if let Err(e) = written.await {
            tracing::error!(error = %e, "cannot record the config reload in the database");
        }
    }
}
