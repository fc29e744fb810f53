//! The words of a job's life, as types: where a job comes from, what starts a run, where a
//! run stands and what happens when runs would overlap. Stored as text (`sqlx::Type`),
//! shown by the API in the same spelling.

use serde::{Deserialize, Serialize};

/// Where a job comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum Source {
    Kubernetes,
    Personal,
}

/// What starts a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum Trigger {
    Schedule,
    /// "Run now" in the UI or API.
    Manual,
    /// A new value of the `promptops.dev/run-now` annotation.
    Annotation,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Annotation => "annotation",
        }
    }
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Due while another run ran, under `Forbid`; or missed past its starting deadline.
    Skipped,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }

    /// Queued or running.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Queued | Self::Running)
    }
}

/// What to do when a run is due while the previous one still runs (as a CronJob's
/// `concurrencyPolicy`).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, sqlx::Type)]
pub enum ConcurrencyPolicy {
    /// Runs may overlap.
    Allow,
    /// A run due while another runs is skipped.
    #[default]
    Forbid,
    /// A run due while another runs cancels it.
    Replace,
}

impl ConcurrencyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "Allow",
            Self::Forbid => "Forbid",
            Self::Replace => "Replace",
        }
    }
}
