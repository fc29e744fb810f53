//! Builds the running service from its settings and runs its tasks until shutdown.
//! Wiring only: every rule lives in the part it belongs to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigReloader, ConfigStore, Env, WatchOptions, watcher};
use crate::db;
use crate::settings::ServeSettings;
use crate::telemetry::metrics::Metrics;
use crate::web::{self, AppState};

/// A service that is bound and loaded but not yet serving. Tests build one on port 0.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    state: AppState,
    reloader: Arc<ConfigReloader>,
    watch: WatchOptions,
    shutdown_timeout: Duration,
}

impl Application {
    /// Opens and migrates the database, loads the config once and binds the listener.
    /// An invalid config does not stop the start: `/readyz` stays 503 until a valid one
    /// arrives, as a ConfigMap fix would deliver it.
    pub async fn build(settings: &ServeSettings, env: Arc<dyn Env>) -> anyhow::Result<Self> {
        let pool = db::connect(&settings.database.database_url).await?;
        if settings.skip_migrations {
            tracing::info!("skipping database migrations (--skip-migrations)");
        } else {
            db::migrate(&pool).await?;
        }

        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(ConfigStore::new());
        let reloader =
            ConfigReloader::new(settings.config_dir.clone(), env, store.clone(), pool.clone(), metrics.clone())
                .await
                .context("reading the config history from the database (is it migrated?)")?;
        let reloader = Arc::new(reloader);
        reloader.reload().await;

        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        Ok(Self {
            listener,
            state: AppState { db: pool, config: store, metrics },
            reloader,
            watch: WatchOptions { debounce: settings.config_debounce, poll_interval: settings.config_poll_interval },
            shutdown_timeout: settings.shutdown_timeout,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests (bounded by
    /// the shutdown timeout), stops the watcher and closes the database. Returns an
    /// error when a task that must run for the whole life of the process stopped early.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self { listener, state, reloader, watch, shutdown_timeout } = self;
        let db = state.db.clone();
        let addr = listener.local_addr()?;

        let mut watcher = tokio::spawn(watcher::run(reloader, watch, shutdown.child_token()));
        let server_stop = shutdown.clone();
        let mut server = tokio::spawn(async move {
            axum::serve(listener, web::router(state)).with_graceful_shutdown(server_stop.cancelled_owned()).await
        });
        tracing::info!(%addr, "promptops is serving");

        let (mut server_done, mut watcher_done) = (false, false);
        let failure = tokio::select! {
            biased;
            () = shutdown.cancelled() => None,
            result = &mut server => {
                server_done = true;
                Some(match result {
                    Ok(Ok(())) => anyhow!("the web server stopped unexpectedly"),
                    Ok(Err(e)) => anyhow!(e).context("the web server failed"),
                    Err(e) => anyhow!("the web server task died: {e}"),
                })
            }
            result = &mut watcher => {
                watcher_done = true;
                Some(anyhow!("the config watcher stopped unexpectedly: {result:?}"))
            }
        };
        shutdown.cancel();

        if !server_done {
            tracing::info!(timeout = ?shutdown_timeout, "shutting down: draining in-flight requests");
            if tokio::time::timeout(shutdown_timeout, &mut server).await.is_err() {
                tracing::warn!("in-flight requests did not finish in time; cutting them");
                server.abort();
            }
        }
        if !watcher_done {
            // The watcher stops on the cancelled token at its next await point.
            let _stopped = watcher.await;
        }
        db.close().await;
        match failure {
            None => {
                tracing::info!("promptops stopped");
                Ok(())
            }
            Some(e) => Err(e),
        }
    }
}
