//! Housekeeping of the database on the schedules of config.json's `maintenance` section:
//! retention (what is older than its window goes), ended sessions, `PRAGMA optimize` with
//! a WAL checkpoint, and online backups into a folder keeping the newest few. The
//! schedules run on tokio-cron-scheduler and follow config reloads.
//!
//! A task runs on one replica at a time: it first takes its row in `maintenance_tasks` as
//! a lease (the replicas share the database file, so the row is the one place they all
//! see). Each run's outcome, duration and a one-line detail stay in that row for the admin
//! page, and are counted in metrics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::SqlitePool;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tokio_util::sync::CancellationToken;

use crate::config::ConfigStore;
use crate::config::model::{BackupSettings, MaintenanceSettings, RetentionSettings};
use crate::db::repositories::maintenance::{self as rows, TaskRow};
use crate::db::repositories::{audit, config_reloads, conversations, jobs, sessions};
use crate::telemetry::metrics::{Metrics, TaskLabels, TaskOutcomeLabels};

/// How long a replica may hold a task before another may take it over (it died, say).
const LEASE: Duration = Duration::from_secs(3600);

/// One housekeeping task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    Retention,
    Sessions,
    Optimize,
    Backup,
}

impl Task {
    pub const ALL: [Self; 4] = [Self::Retention, Self::Sessions, Self::Optimize, Self::Backup];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retention => "retention",
            Self::Sessions => "sessions",
            Self::Optimize => "optimize",
            Self::Backup => "backup",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    pub fn schedule(self, settings: &MaintenanceSettings) -> &str {
        match self {
            Self::Retention => &settings.retention.schedule,
            Self::Sessions => &settings.sessions.schedule,
            Self::Optimize => &settings.optimize.schedule,
            Self::Backup => &settings.backup.schedule,
        }
        .trim()
    }
}

/// Why a task's schedule cannot be used, if it cannot (an empty one means never).
pub fn schedule_problem(expression: &str) -> Option<String> {
    if expression.trim().is_empty() {
        return None;
    }
    crate::jobs::Schedule::parse(expression.trim(), "UTC").err().map(|e| e.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0} is running on another replica")]
    Busy(&'static str),
    #[error("no valid configuration is loaded")]
    NoConfig,
    #[error("backup: {0}")]
    Backup(#[from] crate::db::backup::BackupError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A task as the admin page shows it.
#[derive(Debug, Clone)]
pub struct TaskStatus {
    pub task: Task,
    pub schedule: String,
    pub row: Option<TaskRow>,
}

/// A run's result: whether it did its work, and what it did or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub succeeded: bool,
    pub detail: String,
}

#[derive(Debug)]
pub struct Maintenance {
    db: SqlitePool,
    config: Arc<ConfigStore>,
    metrics: Arc<Metrics>,
    /// The database file's folder, where relative backup folders start.
    data_dir: PathBuf,
    /// This replica's name in the lease.
    identity: String,
}

impl Maintenance {
    pub fn new(
        db: SqlitePool,
        config: Arc<ConfigStore>,
        metrics: Arc<Metrics>,
        database_url: &str,
        identity: String,
    ) -> Self {
        let data_dir = crate::db::backup::database_file(database_url)
            .ok()
            .and_then(|f| f.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        Self { db, config, metrics, data_dir, identity }
    }

    /// Runs `task` now, unless another replica is running it; records how it went.
    pub async fn run(&self, task: Task) -> Result<Ran, MaintenanceError> {
        let snapshot = self.config.current().ok_or(MaintenanceError::NoConfig)?;
        let settings = &snapshot.config.service.maintenance;
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let mut conn = self.db.acquire().await?;
        if !rows::take(&mut conn, task.as_str(), &self.identity, now, until).await? {
            return Err(MaintenanceError::Busy(task.as_str()));
        }
        drop(conn);
        let started = Instant::now();
        let result = match task {
            Task::Retention => self.retention(&settings.retention).await,
            Task::Sessions => self.sessions().await,
            Task::Optimize => self.optimize().await,
            Task::Backup => self.backup(&settings.backup).await,
        };
        let took = started.elapsed();
        let ran = match result {
            Ok(detail) => Ran { succeeded: true, detail },
            Err(e) => Ran { succeeded: false, detail: e.to_string() },
        };
        let outcome = if ran.succeeded { "succeeded" } else { "failed" };
        let millis = i64::try_from(took.as_millis()).unwrap_or(i64::MAX);
        let mut conn = self.db.acquire().await?;
        rows::finish(&mut conn, task.as_str(), &self.identity, outcome, millis, &ran.detail, Utc::now()).await?;
        let labels = TaskOutcomeLabels { task: task.as_str().into(), outcome: outcome.into() };
        self.metrics.maintenance_runs.get_or_create(&labels).inc();
        self.metrics
            .maintenance_duration_seconds
            .get_or_create(&TaskLabels { task: task.as_str().into() })
            .set(took.as_secs_f64());
        if ran.succeeded {
            tracing::info!(task = task.as_str(), took = ?took, detail = ran.detail, "maintenance task done");
        } else {
            tracing::warn!(task = task.as_str(), took = ?took, error = ran.detail, "maintenance task failed");
        }
        Ok(ran)
    }

    /// Every task with its schedule and its last run, if it ran.
    pub async fn status(&self) -> Result<Vec<TaskStatus>, MaintenanceError> {
        let settings = self.config.current().map(|s| s.config.service.maintenance.clone()).unwrap_or_default();
        let mut known = rows::all(&mut *self.db.acquire().await?).await?;
        Ok(Task::ALL
            .into_iter()
            .map(|task| TaskStatus {
                task,
                schedule: task.schedule(&settings).to_owned(),
                row: known.iter().position(|r| r.task == task.as_str()).map(|i| known.swap_remove(i)),
            })
            .collect())
    }

    async fn retention(&self, keep: &RetentionSettings) -> Result<String, MaintenanceError> {
        let now = Utc::now();
        let cutoff = |days: u32| (days > 0).then(|| now - chrono::Duration::days(i64::from(days)));
        let mut tx = crate::db::write(&self.db).await?;
        let mut done = Vec::new();
        if let Some(before) = cutoff(keep.conversations_days) {
            let n = conversations::delete_untouched_since(&mut tx, before).await?;
            done.push(format!("{n} conversations"));
        }
        if let Some(before) = cutoff(keep.job_runs_days) {
            let n = jobs::delete_runs_ended_before(&mut tx, before).await?;
            done.push(format!("{n} job runs"));
        }
        if let Some(before) = cutoff(keep.audit_days) {
            let n = audit::delete_before(&mut tx, before).await?;
            done.push(format!("{n} audit entries"));
        }
        if let Some(before) = cutoff(keep.config_history_days) {
            let n = config_reloads::delete_before(&mut tx, before).await?;
            done.push(format!("{n} config reloads"));
        }
        tx.commit().await?;
        Ok(if done.is_empty() {
            "every window is 0 days: nothing to delete".into()
        } else {
            format!("deleted {}", done.join(", "))
        })
    }

    async fn sessions(&self) -> Result<String, MaintenanceError> {
        let n = sessions::delete_ended(&mut *self.db.acquire().await?, Utc::now()).await?;
        Ok(format!("forgot {n} ended sessions"))
    }

    async fn optimize(&self) -> Result<String, MaintenanceError> {
        let mut conn = self.db.acquire().await?;
        sqlx::query("PRAGMA optimize").execute(&mut *conn).await?;
        let (busy, frames, moved): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&mut *conn).await?;
        Ok(if busy == 0 {
            format!("optimized; checkpointed {moved} of {frames} WAL frames and truncated the WAL")
        } else {
            format!("optimized; checkpointed {moved} of {frames} WAL frames (readers kept the rest)")
        })
    }

    async fn backup(&self, settings: &BackupSettings) -> Result<String, MaintenanceError> {
        let dir = if settings.dir.is_absolute() { settings.dir.clone() } else { self.data_dir.join(&settings.dir) };
        let name = format!("{BACKUP_PREFIX}{}{BACKUP_SUFFIX}", Utc::now().format(BACKUP_TIME));
        let written = crate::db::backup::backup(&self.db, &dir.join(&name)).await?;
        let removed = rotate(&dir, settings.keep as usize)?;
        Ok(format!(
            "{name}: {:.1} MB in {:.1?}, integrity ok; {removed} older removed",
            written.bytes as f64 / 1e6,
            written.took
        ))
    }

    /// Runs the tasks on their schedules until `shutdown`, starting again with the new
    /// schedules whenever a config reload changes them.
    pub async fn schedule(self: Arc<Self>, shutdown: CancellationToken) {
        let mut changes = self.config.subscribe();
        loop {
            let settings = changes.borrow_and_update().as_ref().map(|s| s.config.service.maintenance.clone());
            let mut scheduler = match &settings {
                Some(settings) => match self.start(settings).await {
                    Ok(scheduler) => Some(scheduler),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the maintenance schedules");
                        None
                    }
                },
                None => None,
            };
            let stop = loop {
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() {
                            break true;
                        }
                        let now = changes.borrow().as_ref().map(|s| s.config.service.maintenance.clone());
                        if now.is_some() && now != settings {
                            break false;
                        }
                    }
                    () = shutdown.cancelled() => break true,
                }
            };
            if let Some(scheduler) = scheduler.as_mut()
                && let Err(e) = scheduler.shutdown().await
            {
                tracing::warn!(error = %e, "stopping the maintenance schedules");
            }
            if stop {
                return;
            }
        }
    }

    async fn start(self: &Arc<Self>, settings: &MaintenanceSettings) -> Result<JobScheduler, JobSchedulerError> {
        let scheduler = JobScheduler::new().await?;
        for task in Task::ALL {
            let expression = task.schedule(settings);
            if expression.is_empty() {
                continue;
            }
            let this = self.clone();
            // tokio-cron-scheduler wants a seconds field first.
            let job = Job::new_async(format!("0 {expression}"), move |_, _| {
                let this = this.clone();
                Box::pin(async move {
                    match this.run(task).await {
                        Ok(_) => {}
                        Err(MaintenanceError::Busy(_)) => {
                            tracing::debug!(task = task.as_str(), "maintenance task taken by another replica");
                        }
                        Err(e) => tracing::warn!(task = task.as_str(), error = %e, "maintenance task not run"),
                    }
                })
            })?;
            scheduler.add(job).await?;
        }
        scheduler.start().await?;
        Ok(scheduler)
    }
}

const BACKUP_PREFIX: &str = "promptops-";
const BACKUP_SUFFIX: &str = ".db";
/// Backup names carry their UTC time to the millisecond, so they sort by age.
const BACKUP_TIME: &str = "%Y%m%dT%H%M%S%.3fZ";

/// Deletes all but the newest `keep` scheduled backups in `dir` (their names sort by
/// time); returns how many went. Other files are never touched.
fn rotate(dir: &Path, keep: usize) -> Result<usize, MaintenanceError> {
    let io = |source| MaintenanceError::Io { path: dir.to_owned(), source };
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.strip_prefix(BACKUP_PREFIX)
                    .and_then(|rest| rest.strip_suffix(BACKUP_SUFFIX))
                    .is_some_and(|stamp| chrono::NaiveDateTime::parse_from_str(stamp, BACKUP_TIME).is_ok())
            })
        })
        .collect();
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    for old in &backups[..excess] {
        std::fs::remove_file(old).map_err(|source| MaintenanceError::Io { path: old.clone(), source })?;
    }
    Ok(excess)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_newest_backups_and_never_touches_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "promptops-20261201T031700.000Z.db",
            "promptops-20261202T031700.000Z.db",
            "promptops-20261203T031700.000Z.db",
            "promptops-20261204T031700.000Z.db",
            "promptops-before-upgrade.db",
            "promptops-20261205T031700.000Z.db.partial",
            "notes.txt",
        ];
        for name in names {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        assert_eq!(rotate(dir.path(), 2).unwrap(), 2);
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(
            left,
            [
                "notes.txt",
                "promptops-20261203T031700.000Z.db",
                "promptops-20261204T031700.000Z.db",
                "promptops-20261205T031700.000Z.db.partial",
                "promptops-before-upgrade.db",
            ]
        );
    }

    #[tokio::test]
    async fn each_scheduled_task_is_registered_on_its_cron_and_an_empty_schedule_on_none() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = crate::db::connect(&url).await.unwrap();
        let config = Arc::new(ConfigStore::new());
        let maintenance = Arc::new(Maintenance::new(db, config, Arc::new(Metrics::new()), &url, "test".into()));
        let hourly = MaintenanceSettings {
            retention: RetentionSettings { schedule: "7 * * * *".into(), ..RetentionSettings::default() },
            sessions: crate::config::model::TaskSchedule { schedule: String::new() },
            optimize: crate::config::model::TaskSchedule { schedule: String::new() },
            backup: BackupSettings::default(),
        };
        let mut scheduler = maintenance.start(&hourly).await.unwrap();
        let next = scheduler.time_till_next_job().await.unwrap().expect("the retention job");
        let now = Utc::now();
        let expected = (67 - i64::from(chrono::Timelike::minute(&now))) % 60;
        let minutes = (next.as_secs_f64() / 60.0).ceil() as i64 % 60;
        assert!((minutes - expected).abs() <= 1, "next run in {next:?} at minute 7 of the hour (now {now})");
        scheduler.shutdown().await.unwrap();
        let mut none = maintenance
            .start(&MaintenanceSettings {
                retention: RetentionSettings { schedule: String::new(), ..RetentionSettings::default() },
                ..hourly
            })
            .await
            .unwrap();
        assert_eq!(none.time_till_next_job().await.unwrap(), None, "empty schedules: nothing registered");
        none.shutdown().await.unwrap();
    }

    #[test]
    fn schedules_are_five_field_cron_or_empty_for_never() {
        assert_eq!(schedule_problem(""), None);
        assert_eq!(schedule_problem("17 3 * * *"), None);
        assert!(schedule_problem("0 17 3 * * *").unwrap().contains("five fields"));
        assert!(schedule_problem("61 3 * * *").is_some());
    }
}
