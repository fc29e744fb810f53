//! The scheduler: while this replica leads (or always, without Kubernetes), it sleeps until
//! the earliest due firing, then records and queues it. A firing is claimed by moving the
//! job's `next_run_at` on only if it still holds the value read, and recorded under a
//! unique key, so two schedulers — a stale leader and a new one — cannot run it twice.
//! Missed firings follow CronJob: the latest one runs, unless it is later than
//! `startingDeadlineSeconds`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use sqlx::SqlitePool;

use super::{Activity, ConcurrencyPolicy, JobError, RunStatus, Schedule, Trigger, new_run, queue};
use crate::db::repositories::jobs::{self, JobRow, RunOutcome};

/// The longest the scheduler sleeps without looking (jobs changed by another replica).
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Due jobs handled per pass.
const BATCH: i64 = 500;

/// Records and queues due firings.
#[derive(Debug)]
pub struct Scheduler {
    db: SqlitePool,
    activity: Arc<Activity>,
}

/// Fires due jobs while `leading` is true, until `shutdown`.
pub async fn run(jobs: Arc<Scheduler>, mut leading: watch::Receiver<bool>, shutdown: CancellationToken) {
    loop {
        if !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
            }
            continue;
        }
        let wait = match jobs.fire_due().await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::error!(error = %e, "the scheduler cannot read or record firings; trying again");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = jobs.activity.wake.notified() => {}
            changed = leading.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}

impl Scheduler {
    pub fn new(db: SqlitePool, activity: Arc<Activity>) -> Self {
        Self { db, activity }
    }

    /// Fires every due job; returns how long to sleep until the next one.
    pub async fn fire_due(&self) -> Result<Duration, JobError> {
        loop {
            let now = Utc::now();
            let due = jobs::due(&mut *self.db.acquire().await?, now, BATCH).await?;
            let full = due.len() as i64 == BATCH;
            for job in due {
                if let Err(e) = self.fire(&job, now).await {
                    tracing::error!(job = job.name, error = %e, "cannot record a firing");
                }
            }
            if !full {
                break;
            }
        }
        let next = jobs::next_due(&mut *self.db.acquire().await?).await?;
        Ok(match next {
            Some(next) => (next - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(MAX_SLEEP),
            None => MAX_SLEEP,
        })
    }

    async fn fire(&self, job: &JobRow, now: DateTime<Utc>) -> Result<(), JobError> {
        let Some(due_at) = job.next_run_at else { return Ok(()) };
        let mut tx = crate::db::write(&self.db).await?;
        let schedule = match Schedule::parse(&job.schedule, &job.time_zone) {
            Ok(schedule) => schedule,
            Err(_) => {
                jobs::advance(&mut tx, &job.id, due_at, None, None).await?;
                tx.commit().await?;
                return Ok(());
            }
        };
        // The most recent firing that was due; earlier missed ones are not made up.
        let scheduled = schedule.latest_between(due_at - chrono::Duration::milliseconds(1), now).unwrap_or(due_at);
        let next = schedule.next_after(now);
        if !jobs::advance(&mut tx, &job.id, due_at, next, Some(scheduled)).await? {
            return Ok(()); // another scheduler took this firing
        }
        let key = format!("{}@{}", job.id, scheduled.to_rfc3339());
        let late = now - scheduled;
        let too_late = job.starting_deadline_seconds.is_some_and(|d| late > chrono::Duration::seconds(d));
        let open = jobs::open_runs(&mut tx, &job.id).await?;
        let mut replaced = Vec::new();
        let skip = if too_late {
            Some(format!("missed: it could not start within startingDeadlineSeconds ({} s late)", late.num_seconds()))
        } else if !open.is_empty() && job.concurrency_policy == ConcurrencyPolicy::Forbid {
            Some("skipped: the previous run was still running (concurrencyPolicy Forbid)".to_owned())
        } else {
            None
        };
        if let Some(reason) = skip {
            let run = new_run(&job.id, key, Trigger::Schedule, scheduled, RunStatus::Queued);
            if jobs::insert_run(&mut tx, &run).await? {
                let outcome = RunOutcome {
                    status: RunStatus::Skipped,
                    output: "",
                    error: Some(&reason),
                    prompt_tokens: None,
                    completion_tokens: None,
                    tool_calls: &[],
                };
                jobs::finish(&mut tx, &run.id, &outcome).await?;
            }
            tx.commit().await?;
            self.activity.count(RunStatus::Skipped);
            tracing::info!(job = job.name, %scheduled, reason, "firing skipped");
            self.activity.changed(job);
            return Ok(());
        }
        if job.concurrency_policy == ConcurrencyPolicy::Replace {
            for run in open {
                let outcome = RunOutcome {
                    status: RunStatus::Cancelled,
                    output: &run.output,
                    error: Some("replaced by a newer run (concurrencyPolicy Replace)"),
                    prompt_tokens: run.prompt_tokens,
                    completion_tokens: run.completion_tokens,
                    tool_calls: &run.tool_calls,
                };
                jobs::finish(&mut tx, &run.id, &outcome).await?;
                replaced.push(run.id);
            }
        }
        let run = new_run(&job.id, key, Trigger::Schedule, scheduled, RunStatus::Queued);
        if jobs::insert_run(&mut tx, &run).await? {
            queue::push(&mut tx, &run.id, 1, Duration::ZERO).await.map_err(JobError::Queue)?;
        }
        tx.commit().await?;
        for id in replaced {
            self.activity.cancel(&id);
        }
        self.activity.metrics.job_schedule_delay_seconds.observe((Utc::now() - scheduled).as_seconds_f64().max(0.0));
        tracing::info!(job = job.name, %scheduled, run = run.id, "firing queued");
        self.activity.changed(job);
        Ok(())
    }
}
