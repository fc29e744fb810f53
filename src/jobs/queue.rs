//! The durable run queue: apalis on the same SQLite file, under its own pool (apalis tunes
//! the pragmas of the connections it is given) and its own migration table. A run is
//! queued in the transaction that records it, so the two cannot disagree; the task's
//! idempotency key (run id + attempt) is unique, so an attempt is queued once.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use apalis_sqlite::{Config, SqlitePool, SqliteStorage};
use serde::{Deserialize, Serialize};
use sqlx::SqliteConnection;
use tokio_util::sync::CancellationToken;

use super::runner::Runner;

/// The queue's name in apalis's `Jobs` table. Fixed: the default (the Rust type path)
/// would orphan queued runs whenever the type moved.
pub const QUEUE: &str = "promptops.job-runs";
/// How often an idle worker looks for due runs.
const POLL: Duration = Duration::from_millis(200);
/// A worker that misses two heartbeats is dead; its runs go back in the queue.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Attempts apalis itself makes at delivering a task (a run's own retries are separate).
const DELIVERIES: usize = 3;

/// One attempt of a run, as queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTask {
    pub run_id: String,
    pub attempt: i64,
}

/// Creates apalis's tables (idempotent); call before anything is queued.
pub async fn setup(pool: &SqlitePool) -> Result<(), apalis_sqlite::Error> {
    SqliteStorage::setup(pool).await
}

/// Queues an attempt of a run, to start after `delay`, inside the caller's transaction.
pub async fn push(
    conn: &mut SqliteConnection,
    run_id: &str,
    attempt: i64,
    delay: Duration,
) -> Result<(), apalis_sqlite::Error> {
    let task = RunTask { run_id: run_id.to_owned(), attempt };
    let bytes = serde_json::to_vec(&task).map_err(apalis_sqlite::Error::JsonError)?;
    let task = TaskBuilder::new(bytes)
        .run_after(delay)
        .max_attempts(DELIVERIES)
        .idempotency_key(format!("{run_id}#{attempt}"))
        .build();
    apalis_sqlite::queries::push_tasks(conn, QUEUE, &[task]).await
}

/// Runs queued attempts until `shutdown`; every replica runs one worker.
pub async fn work(pool: SqlitePool, jobs: Arc<Runner>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = Config::default().queue(QUEUE).heartbeat_interval(HEARTBEAT).missed_heartbeats(2);
    let storage = SqliteStorage::<RunTask>::new(&pool).with_config(config).poll_with_interval(POLL);
    // A name of its own per process: apalis re-queues the tasks of workers that stopped
    // beating, and a restarted process must not be mistaken for the one that died.
    let name = format!("promptops-{}", uuid::Uuid::new_v4().simple());
    let worker = WorkerBuilder::new(name).backend(storage).data(jobs).build(handle);
    let stop = async move {
        shutdown.cancelled().await;
        Ok::<(), std::io::Error>(())
    };
    worker.run_until(stop).await.map_err(|e| anyhow::anyhow!("job worker: {e}"))
}

async fn handle(task: RunTask, jobs: Data<Arc<Runner>>) -> Result<(), BoxDynError> {
    jobs.execute(&task.run_id, task.attempt).await.map_err(|e| Box::new(e) as BoxDynError)
}
