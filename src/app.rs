//! Builds the running service from its settings and runs its tasks until shutdown.
//! Wiring only: every rule lives in the part it belongs to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use axum::serve::ListenerExt as _;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::audit::AuditLog;
use crate::auth::AuthService;
use crate::auth::keys::Keyring;
use crate::auth::session::SessionService;
use crate::auth::throttle::LoginThrottle;
use crate::auth::users::UserService;
use crate::auth::vault::TokenVault;
use crate::chat::ChatService;
use crate::config::{ConfigReloader, ConfigStore, Env, WatchOptions, watcher};
use crate::controller;
use crate::db;
use crate::jobs::delivery::{self, Deliverer};
use crate::jobs::runner::Runner;
use crate::jobs::scheduler::{self, Scheduler};
use crate::jobs::{Activity, Credentials, JobStore, queue};
use crate::llm::LlmClient;
use crate::maintenance::Maintenance;
use crate::mcp::McpManager;
use crate::prompts::PromptLibrary;
use crate::settings::{SecuritySettings, ServeSettings};
use crate::telemetry::metrics::Metrics;
use crate::web::context::WebContext;
use crate::web::{self, AppState, Exposure};

/// A service that is bound and loaded but not yet serving. Tests build one on port 0.
pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    watch: WatchOptions,
    shutdown_timeout: Duration,
    /// The job queue's own pool on the same database file.
    queue_pool: sqlx::SqlitePool,
    /// The cluster and how to run the controller on it, when one is in use.
    cluster: Option<(kube::Client, controller::Options)>,
    scheduler: Arc<Scheduler>,
    runner: Arc<Runner>,
    deliverer: Arc<Deliverer>,
    credentials: Arc<Credentials>,
    /// The database's in-use lock (none for an in-memory database).
    _in_use: Option<db::backup::InUse>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("listener", &self.listener)
            .field("cluster", &self.cluster.as_ref().map(|(_, options)| options))
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Opens and migrates the database, loads the config once, sets up the services,
    /// creates the first admin on an empty database and binds the listeners.
    /// An invalid config does not stop the start: `/readyz` stays 503 until a valid one
    /// arrives, as a ConfigMap fix would deliver it.
    pub async fn build(settings: &ServeSettings, env: Arc<dyn Env>) -> anyhow::Result<Self> {
        // Held for as long as this process serves: `promptops restore` refuses meanwhile.
        let in_use = db::backup::hold(&settings.database.database_url)?;
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
        let maintenance = Arc::new(Maintenance::new(
            pool.clone(),
            store.clone(),
            metrics.clone(),
            &settings.database.database_url,
            format!("{}-{}", replica_host(), &uuid::Uuid::new_v4().simple().to_string()[..8]),
        ));

        let keyring = Arc::new(load_keyring(&settings.security)?);
        let audit = AuditLog::new(pool.clone());
        let auth = Arc::new(AuthService {
            users: UserService::new(pool.clone(), audit.clone(), settings.security.bcrypt_cost),
            sessions: SessionService::new(
                pool.clone(),
                keyring.clone(),
                settings.web.session_ttl,
                settings.web.session_max_lifetime,
            ),
            throttle: LoginThrottle::new(),
            oidc: crate::auth::oidc::OidcService::new(pool.clone()),
            audit: audit.clone(),
        });
        let bootstrap_password = settings.web.bootstrap_admin_password.clone().map(SecretString::from);
        if let Some(generated) = auth.bootstrap_admin(bootstrap_password).await? {
            // The Argo CD pattern: the one time a secret is deliberately written to the log.
            tracing::warn!(
                username = "admin",
                password = generated.expose_secret(),
                "created the first admin account with a generated password; sign in and change it under Settings \
                 (it is not shown again; set PROMPTOPS_BOOTSTRAP_ADMIN_PASSWORD to choose it instead)"
            );
        }
        let vault = Arc::new(TokenVault::new(pool.clone(), keyring, audit));
        let mcp = Arc::new(McpManager::new(vault.clone(), metrics.clone()));
        let llm = Arc::new(LlmClient::new());
        let prompts = Arc::new(PromptLibrary::new(pool.clone(), store.clone()));
        let agent = Arc::new(Agent::new(llm, mcp.clone(), metrics.clone()));
        let chat =
            Arc::new(ChatService::new(pool.clone(), store.clone(), prompts.clone(), agent.clone(), metrics.clone()));
        let activity = Arc::new(Activity::new(metrics.clone()));
        let jobs =
            Arc::new(JobStore::new(pool.clone(), prompts.clone(), AuditLog::new(pool.clone()), activity.clone()));
        let credentials = Arc::new(Credentials::default());
        let runner = Arc::new(Runner::new(
            pool.clone(),
            store.clone(),
            prompts.clone(),
            agent,
            activity.clone(),
            credentials.clone(),
        ));
        let scheduler = Arc::new(Scheduler::new(pool.clone(), activity.clone()));
        let queue_pool = db::connect_with(&settings.database.database_url, 2).await?;
        if !settings.skip_migrations {
            queue::setup(&queue_pool).await.context("creating the job queue's tables")?;
        }
        let cluster = match controller::connect(settings.controller.controller).await? {
            Some(client) => {
                credentials.use_source(Arc::new(controller::ClusterSecrets::new(client.clone())));
                let options = controller_options(&settings.controller, &client).await;
                tracing::info!(
                    namespaces = if options.watch_namespaces.is_empty() {
                        "(all)".to_owned()
                    } else {
                        options.watch_namespaces.join(",")
                    },
                    lease = format!("{}/{}", options.lease_namespace, options.lease_name),
                    identity = options.identity,
                    "Kubernetes cluster found: the controller will run"
                );
                Some((client, options))
            }
            None => None,
        };
        let interrupted = chat.recover().await?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "answers cut off by the last stop were marked failed (their text so far is kept)"
            );
        }

        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let metrics_listener = match settings.web.metrics_listen {
            Some(addr) => {
                Some(TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (metrics)"))?)
            }
            None => None,
        };
        let public_url = match &settings.web.public_url {
            Some(url) => url.clone(),
            None => format!("http://{}", listener.local_addr()?).parse().context("the listen address as a URL")?,
        };
        let deliverer = Arc::new(Deliverer::new(
            pool.clone(),
            store.clone(),
            mcp.clone(),
            activity,
            credentials.clone(),
            AuditLog::new(pool.clone()),
            public_url.origin().ascii_serialization(),
        ));
        let client_ip_header = settings
            .web
            .client_ip_header
            .as_deref()
            .map(http::HeaderName::try_from)
            .transpose()
            .context("--client-ip-header is not a valid header name")?;
        Ok(Self {
            listener,
            metrics_listener,
            state: AppState {
                db: pool,
                config: store,
                reloader,
                metrics,
                auth,
                vault,
                chat,
                jobs,
                prompts,
                controller: Arc::new(if cluster.is_some() {
                    controller::Health::enabled()
                } else {
                    controller::Health::disabled()
                }),
                mcp,
                web: Arc::new(WebContext::new(&public_url, client_ip_header)),
                maintenance,
            },
            watch: WatchOptions { debounce: settings.config_debounce, poll_interval: settings.config_poll_interval },
            shutdown_timeout: settings.shutdown_timeout,
            queue_pool,
            cluster,
            scheduler,
            runner,
            deliverer,
            credentials,
            _in_use: in_use,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The scheduler, to fire due jobs by hand (tests and benchmarks).
    pub fn scheduler(&self) -> Arc<Scheduler> {
        self.scheduler.clone()
    }

    /// Where Kubernetes jobs read their Secrets: the cluster's, or (tests without one) a
    /// source of the caller's.
    pub fn credentials(&self) -> Arc<Credentials> {
        self.credentials.clone()
    }

    /// The delivery worker, to deliver due deliveries by hand (tests).
    pub fn deliverer(&self) -> Arc<Deliverer> {
        self.deliverer.clone()
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests (bounded by
    /// the shutdown timeout), stops the watcher and closes the database. Returns an
    /// error when a task that must run for the whole life of the process stopped early.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            listener,
            metrics_listener,
            state,
            watch,
            shutdown_timeout,
            queue_pool,
            cluster,
            scheduler,
            runner,
            deliverer,
            credentials: _,
            _in_use,
        } = self;
        let db = state.db.clone();
        let addr = listener.local_addr()?;

        let mut watcher = tokio::spawn(watcher::run(state.reloader.clone(), watch, shutdown.child_token()));
        let background = shutdown.child_token();
        let (jobs, prompts) = (state.jobs.clone(), state.prompts.clone());
        let worker = tokio::spawn(queue::work(queue_pool.clone(), runner, background.clone()));
        let delivering = tokio::spawn(delivery::run(deliverer, background.clone()));
        // Without a cluster this replica always schedules; with one, only while it leads.
        let (leading, following) = tokio::sync::watch::channel(cluster.is_none());
        let scheduler = tokio::spawn(scheduler::run(scheduler, following, background.clone()));
        let housekeeping = tokio::spawn(state.maintenance.clone().schedule(background.clone()));
        let health = state.controller.clone();
        let controller = cluster.map(|(client, options)| {
            tokio::spawn(controller::run(client, options, jobs, prompts, leading, health, background.clone()))
        });
        let exposure = if metrics_listener.is_some() { Exposure::AllButMetrics } else { Exposure::All };
        let mut ops = metrics_listener
            .map(|ops| tokio::spawn(serve(ops, web::router(state.clone(), Exposure::OpsOnly), &shutdown)));
        let mut server = tokio::spawn(serve(listener, web::router(state, exposure), &shutdown));
        tracing::info!(%addr, "promptops is serving");

        let (mut server_done, mut watcher_done) = (false, false);
        let ops_stopped = async {
            match ops.as_mut() {
                Some(handle) => handle.await,
                None => std::future::pending().await,
            }
        };
        let failure = tokio::select! {
            biased;
            () = shutdown.cancelled() => None,
            result = ops_stopped => Some(anyhow!("the metrics listener stopped unexpectedly: {result:?}")),
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
        if let Some(ops) = ops {
            ops.abort();
        }
        if !watcher_done {
            // The watcher stops on the cancelled token at its next await point.
            let _stopped = watcher.await;
        }
        // Runs in progress stop with the process; the queue hands them out again.
        let stopping = async {
            if let Some(controller) = controller {
                match controller.await {
                    Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "the controller stopped with an error"),
                    Err(e) => tracing::warn!(error = %e, "the controller task died"),
                    Ok(Ok(())) => {}
                }
            }
            let _ = scheduler.await;
            let _ = housekeeping.await;
            let _ = worker.await;
            let _ = delivering.await;
        };
        if tokio::time::timeout(shutdown_timeout, stopping).await.is_err() {
            tracing::warn!("the controller, scheduler or job worker did not stop in time");
        }
        queue_pool.close().await;
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

/// One axum server on `listener` until `shutdown`, with client addresses available.
fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: &CancellationToken,
) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
    let stop = shutdown.clone();
    async move {
        // No Nagle: a streamed token must not wait for the client's delayed ACK (~40 ms).
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    }
}

/// Where the controller watches, where its Lease lives and who this replica is.
async fn controller_options(
    settings: &crate::settings::ControllerSettings,
    client: &kube::Client,
) -> controller::Options {
    let pod_namespace = tokio::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").await.ok();
    let lease_namespace = settings
        .lease_namespace
        .clone()
        .or_else(|| pod_namespace.map(|ns| ns.trim().to_owned()))
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let host = replica_host();
    let identity = settings.identity.clone().unwrap_or_else(|| {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}", &suffix[..8])
    });
    controller::Options {
        watch_namespaces: settings.watch_namespace.clone(),
        lease_namespace,
        lease_name: settings.lease_name.clone(),
        identity,
        lease_duration: settings.lease_duration,
    }
}

/// The Pod's (or the machine's) name, for this replica's names in leases.
fn replica_host() -> String {
    std::env::var("POD_NAME").or_else(|_| std::env::var("HOSTNAME")).unwrap_or_else(|_| "promptops".into())
}

/// The configured keys, or on a laptop a key generated into the key file (loudly).
pub fn load_keyring(settings: &SecuritySettings) -> anyhow::Result<Keyring> {
    if let Some(spec) = &settings.encryption_keys {
        return Ok(Keyring::parse(spec)?);
    }
    let (keyring, created) = Keyring::load_or_create(&settings.key_file)?;
    if created {
        tracing::warn!(
            key_file = %settings.key_file.display(),
            "NO ENCRYPTION KEYS CONFIGURED: generated a key into the key file. Tokens and sessions depend on it: \
             back it up, and in a cluster set PROMPTOPS_ENCRYPTION_KEYS from a Secret instead"
        );
    } else {
        tracing::warn!(
            key_file = %settings.key_file.display(),
            "using the generated key file; set PROMPTOPS_ENCRYPTION_KEYS for production"
        );
    }
    Ok(keyring)
}
