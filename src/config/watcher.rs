//! Decides when to reload: filesystem events on the config directory (debounced) and a
//! slow poll that covers lost events. Works with kubelet's `..data` symlink swap, in-place
//! writes and editors' write-then-rename alike, because it reacts to any event at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::reload::ConfigReloader;

/// Timing of the watcher.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Quiet time after the last event before the directory is read.
    pub debounce: Duration,
    /// Interval of the fallback poll (also re-establishes a lost watch).
    pub poll_interval: Duration,
}

/// Runs until `shutdown` is cancelled.
pub async fn run(reloader: Arc<ConfigReloader>, options: WatchOptions, shutdown: CancellationToken) {
    let dir = reloader.dir().to_path_buf();
    let wake = Arc::new(Notify::new());
    let lost = Arc::new(AtomicBool::new(false));
    let mut watcher = start_watch(&dir, &wake, &lost);
    // Whatever changed between the first load and the watch being in place.
    reloader.reload().await;
    let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + options.poll_interval, options.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = wake.notified() => {
                if !settle(&wake, options.debounce, &shutdown).await {
                    break;
                }
                reloader.reload().await;
            }
            _ = poll.tick() => {
                if watcher.is_none() || lost.swap(false, Ordering::Relaxed) {
                    watcher = start_watch(&dir, &wake, &lost);
                }
                reloader.reload().await;
            }
        }
    }
    tracing::debug!("config watcher stopped");
}

/// Waits until no event arrived for `debounce`. False when shutting down.
async fn settle(wake: &Notify, debounce: Duration, shutdown: &CancellationToken) -> bool {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(debounce) => return true,
            () = wake.notified() => {}
        }
    }
}

/// Watches `dir` itself (not single files: a watch on a file dies with the first
/// symlink swap). Failure is logged and left to the poll to retry.
fn start_watch(dir: &Path, wake: &Arc<Notify>, lost: &Arc<AtomicBool>) -> Option<RecommendedWatcher> {
    let handler = {
        let wake = wake.clone();
        let lost = lost.clone();
        let dir: PathBuf = dir.to_path_buf();
        move |event: notify::Result<notify::Event>| {
            match event {
                // Our own reads of the files show up as access events: reacting to them
                // would re-read the directory forever.
                Ok(event) if matches!(event.kind, EventKind::Access(_)) => return,
                Ok(event) => {
                    if matches!(event.kind, EventKind::Remove(_)) && event.paths.iter().any(|p| p == &dir) {
                        lost.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "config watch error; relying on polling until it is re-established");
                    lost.store(true, Ordering::Relaxed);
                }
            }
            wake.notify_one();
        }
    };
    let watched = notify::recommended_watcher(handler).and_then(|mut watcher| {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    match watched {
        Ok(watcher) => {
            tracing::debug!(dir = %dir.display(), "watching the config directory");
            Some(watcher)
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the config directory; polling only");
            None
        }
    }
}
