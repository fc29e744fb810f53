//! The live configuration: the last good set, swapped atomically, plus the reload status.
//! Readers take an `Arc` snapshot and keep it for the whole of their work.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::model::Config;

/// One applied configuration and where it came from.
#[derive(Debug)]
pub struct ConfigSnapshot {
    /// Increases by one with every applied set; never reused, even across restarts.
    pub generation: u64,
    /// Digest of the four files (see `RawConfigSet::sha256`).
    pub sha256: String,
    pub loaded_at: DateTime<Utc>,
    pub config: Config,
}

/// The outcome of the most recent rejected set, cleared by the next applied one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedConfig {
    pub sha256: String,
    pub error: String,
    pub at: DateTime<Utc>,
}

/// Holds the current [`ConfigSnapshot`] (none until a valid set was seen).
#[derive(Debug)]
pub struct ConfigStore {
    current: watch::Sender<Option<Arc<ConfigSnapshot>>>,
    last_rejected: Mutex<Option<RejectedConfig>>,
}

impl Default for ConfigStore {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigStore {
    pub fn new() -> Self {
        Self { current: watch::Sender::new(None), last_rejected: Mutex::new(None) }
    }

    /// The configuration new work should start with.
    pub fn current(&self) -> Option<Arc<ConfigSnapshot>> {
        self.current.borrow().clone()
    }

    /// A receiver that wakes on every applied set, for parts that cache derived state.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<ConfigSnapshot>>> {
        self.current.subscribe()
    }

    pub fn last_rejected(&self) -> Option<RejectedConfig> {
        self.lock_rejected().clone()
    }

    pub(super) fn apply(&self, snapshot: ConfigSnapshot) -> Arc<ConfigSnapshot> {
        let snapshot = Arc::new(snapshot);
        self.current.send_replace(Some(snapshot.clone()));
        *self.lock_rejected() = None;
        snapshot
    }

    /// The files are back to the live set: an earlier rejection no longer describes them.
    pub(super) fn clear_rejected(&self) {
        *self.lock_rejected() = None;
    }

    pub(super) fn reject(&self, rejected: RejectedConfig) {
        *self.lock_rejected() = Some(rejected);
    }

    fn lock_rejected(&self) -> std::sync::MutexGuard<'_, Option<RejectedConfig>> {
        // The guarded value is replaced whole, so a panic elsewhere cannot leave it half-written.
        self.last_rejected.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
