//! The Kubernetes controller: kube-rs controllers for `Prompt` and `PromptJob` that mirror
//! the resources into the database and the scheduler, write status (server-side apply,
//! one field manager) and Events back, and clean up through finalizers. Only the replica
//! holding the `coordination.k8s.io` Lease reconciles and schedules; every replica serves.

mod reconcile;
pub mod resources;
mod secrets;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::Controller;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, ResourceExt as _};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio_stream::wrappers::BroadcastStream;
use tokio_util::sync::CancellationToken;

use crate::jobs::JobStore;
use crate::prompts::PromptLibrary;
use resources::{Prompt, PromptJob};

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "promptops";
/// The finalizer that lets the controller remove rows and schedules before a resource goes.
pub const FINALIZER: &str = "promptops.dev/cleanup";

/// Whether to run the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// When a cluster is reachable (in a pod, or through a kubeconfig).
    Auto,
    /// Always; failing to reach a cluster stops the start.
    On,
    /// Never; scheduling covers personal jobs only.
    Off,
}

/// Where the controller looks and how it elects a leader.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch these namespaces only; all when empty.
    pub watch_namespaces: Vec<String>,
    /// Namespace and name of the Lease.
    pub lease_namespace: String,
    pub lease_name: String,
    /// This replica's name in the Lease and in Events.
    pub identity: String,
    pub lease_duration: Duration,
}

/// The controller as `/readyz` sees it.
#[derive(Debug, Default)]
pub struct Health {
    enabled: bool,
    leading: std::sync::atomic::AtomicBool,
    synced: std::sync::atomic::AtomicBool,
}

impl Health {
    pub fn enabled() -> Self {
        Self { enabled: true, ..Self::default() }
    }

    pub fn disabled() -> Self {
        Self::default()
    }

    /// `None` without a controller; a follower is ready at once, the leader once both
    /// kinds are listed into its caches.
    pub fn check(&self) -> Option<Result<(), String>> {
        use std::sync::atomic::Ordering::Acquire;
        if !self.enabled {
            return None;
        }
        let leading = self.leading.load(Acquire);
        Some(if !leading || self.synced.load(Acquire) {
            Ok(())
        } else {
            Err("the controller is listing Prompts and PromptJobs into its caches".into())
        })
    }

    fn lead(&self, leading: bool) {
        use std::sync::atomic::Ordering::Release;
        self.synced.store(false, Release);
        self.leading.store(leading, Release);
    }
}

/// What the reconcilers of every namespace scope share while this replica runs.
pub(crate) struct Shared {
    pub client: Client,
    pub jobs: Arc<JobStore>,
    pub prompts: Arc<PromptLibrary>,
    /// Events to publish, in order, by `publish_events`.
    pub events: tokio::sync::mpsc::UnboundedSender<(Event, ObjectReference)>,
    /// Consecutive failures per object, for the error backoff.
    pub failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    pub secrets: secrets::SecretKeys,
}

/// What the reconcilers of one namespace scope (or all namespaces) see.
pub(crate) struct Context {
    pub shared: Arc<Shared>,
    /// The scope's Prompts as their watch has delivered them: a job's `promptRef` is
    /// checked here, not with a GET per reconcile.
    pub prompts_seen: Store<Prompt>,
}

/// A client for the cluster this process can reach, if any: in-cluster config, else
/// `KUBECONFIG` / `~/.kube/config`.
pub async fn connect(mode: Mode) -> anyhow::Result<Option<Client>> {
    if mode == Mode::Off {
        return Ok(None);
    }
    // kube builds its TLS config from the process's default provider: aws-lc-rs, as
    // everything else here uses.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let attempt = async {
        let client = Client::try_default().await?;
        client.apiserver_version().await?;
        anyhow::Ok(client)
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(client)) => Ok(Some(client)),
        Ok(Err(e)) if mode == Mode::Auto => {
            tracing::info!(reason = %e, "no Kubernetes cluster reachable; the controller is off (--controller auto)");
            Ok(None)
        }
        Err(_) if mode == Mode::Auto => {
            tracing::info!("no Kubernetes cluster answered within 10 s; the controller is off (--controller auto)");
            Ok(None)
        }
        Ok(Err(e)) => Err(e.context("--controller on, but the cluster cannot be reached")),
        Err(_) => Err(anyhow::anyhow!("--controller on, but the cluster did not answer within 10 s")),
    }
}

/// Competes for the Lease; while it is held, runs both controllers and tells the scheduler
/// (through `leading`) to fire. Returns at `shutdown`, releasing the Lease.
pub async fn run(
    client: Client,
    options: Options,
    jobs: Arc<JobStore>,
    prompts: Arc<PromptLibrary>,
    leading: watch::Sender<bool>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let lease_seconds = options.lease_duration.as_secs().max(2);
    let manager = LeaseManagerBuilder::new(client.clone(), &options.lease_name)
        .with_namespace(&options.lease_namespace)
        .with_identity(&options.identity)
        .with_duration(lease_seconds)
        .with_grace((lease_seconds / 3).max(1))
        .with_field_manager(FIELD_MANAGER)
        .build()
        .await?;
    let (mut held, lease_task) = manager.watch().await;
    let reporter = Reporter { controller: "promptops".into(), instance: Some(options.identity.clone()) };
    let (events, queued) = tokio::sync::mpsc::unbounded_channel();
    let publisher = tokio::spawn(publish_events(Recorder::new(client.clone(), reporter), queued));
    let shared = Arc::new(Shared {
        client: client.clone(),
        jobs: jobs.clone(),
        prompts,
        events,
        failures: std::sync::Mutex::new(std::collections::HashMap::new()),
        secrets: secrets::SecretKeys::new(client.clone()),
    });
    loop {
        if !*held.borrow_and_update() {
            tokio::select! {
                changed = held.changed() => {
                    if changed.is_err() {
                        anyhow::bail!("the leader election stopped: {:?}", lease_task.await);
                    }
                    continue;
                }
                () = shutdown.cancelled() => break,
            }
        }
        tracing::info!(identity = options.identity, lease = options.lease_name, "leading: reconciling and scheduling");
        leading.send_replace(true);
        health.lead(true);
        let term = shutdown.child_token();
        let controllers =
            tokio::spawn(watch_all(shared.clone(), options.watch_namespaces.clone(), health.clone(), term.clone()));
        let stepped_down = loop {
            tokio::select! {
                changed = held.changed() => {
                    if changed.is_err() || !*held.borrow_and_update() {
                        break true;
                    }
                }
                () = shutdown.cancelled() => break false,
            }
        };
        leading.send_replace(false);
        health.lead(false);
        term.cancel();
        let _stopped = controllers.await;
        if stepped_down {
            tracing::warn!(identity = options.identity, "lost the Lease: stopped reconciling and scheduling");
        } else {
            break;
        }
    }
    drop(held); // releases the Lease for the next leader
    let _released = lease_task.await;
    drop(shared);
    let _published = publisher.await;
    Ok(())
}

/// Publishes queued Events one after the other until every sender is gone.
async fn publish_events(
    recorder: Recorder,
    mut queued: tokio::sync::mpsc::UnboundedReceiver<(Event, ObjectReference)>,
) {
    while let Some((event, object)) = queued.recv().await {
        if let Err(e) = recorder.publish(&event, &object).await {
            tracing::warn!(error = %e, reason = event.reason, "cannot publish an Event");
        }
    }
}

/// Both controllers for every watched namespace (or one pair over all namespaces) and the
/// look-out for awaited Secrets until `stop`; the caches count as synced once every pair
/// has listed both kinds.
async fn watch_all(shared: Arc<Shared>, namespaces: Vec<String>, health: Arc<Health>, stop: CancellationToken) {
    let scopes: Vec<Option<String>> =
        if namespaces.is_empty() { vec![None] } else { namespaces.into_iter().map(Some).collect() };
    let unsynced = Arc::new(std::sync::atomic::AtomicUsize::new(scopes.len()));
    let pairs = scopes.into_iter().map(|scope| {
        let (health, unsynced) = (health.clone(), unsynced.clone());
        let on_synced = move || {
            if unsynced.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                health.synced.store(true, std::sync::atomic::Ordering::Release);
            }
        };
        controllers(shared.clone(), scope, on_synced, stop.clone())
    });
    tokio::join!(futures_util::future::join_all(pairs), shared.secrets.poll(stop.clone()));
}

/// Both controllers for one namespace (`None`: all) until `stop`. One watch of Prompts
/// feeds the Prompt controller, the job controller's triggers and the jobs' `promptRef`
/// checks, so a job never sees a Prompt its trigger has not seen yet.
async fn controllers(
    shared: Arc<Shared>,
    namespace: Option<String>,
    on_synced: impl FnOnce(),
    stop: CancellationToken,
) {
    let client = shared.client.clone();
    let (prompts, prompt_jobs): (Api<Prompt>, Api<PromptJob>) = match &namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    // Lists served by the API server's watch cache (resourceVersion=0): right after an API
    // server restart a consistent list can report a resource version older than the new
    // cache holds, and the watch that follows then fails with 410 Gone again and again.
    let config = watcher::Config::default().any_semantic();
    let (prompt_store, prompt_writer) = reflector::store_shared(1024);
    let subscribe = || prompt_writer.subscribe().expect("a shared store hands out subscribers");
    let (for_prompts, for_jobs) = (subscribe(), subscribe());
    let prompt_watch = watcher(prompts, config.clone())
        .backoff(watch_backoff())
        .reflect_shared(prompt_writer)
        .take_until(stop.clone().cancelled_owned())
        .for_each(|event| async move {
            if let Err(e) = event {
                tracing::debug!(error = %e, "prompt watch");
            }
        });
    let context = Arc::new(Context { shared: shared.clone(), prompts_seen: prompt_store.clone() });
    let prompt_controller = Controller::for_shared_stream(for_prompts, prompt_store.clone())
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile::prompt, reconcile::prompt_error, context.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "prompt reconcile");
            }
        });

    let job_controller = Controller::new(prompt_jobs, config.clone());
    let store = job_controller.store();
    let job_store = store.clone();
    let synced = async move {
        if prompt_store.wait_until_ready().await.is_ok() && job_store.wait_until_ready().await.is_ok() {
            on_synced();
        }
    };
    // Runs starting and ending (here or on another replica through the database) change
    // status: such changes come back as reconcile requests.
    // A lagging receiver only misses notifications; the periodic requeue catches up.
    let scope = namespace.clone();
    let changes = BroadcastStream::new(shared.jobs.subscribe()).filter_map(move |change| {
        let scope = scope.clone();
        async move {
            let change = change.ok()?;
            let ns = change.namespace.filter(|ns| scope.as_ref().is_none_or(|scope| scope == ns))?;
            Some(ObjectRef::<PromptJob>::new(&change.name).within(&ns))
        }
    });
    // Awaited Secrets that appeared: every job of the scope naming one looks again.
    let secrets_store = store.clone();
    let secrets_appeared = BroadcastStream::new(shared.secrets.subscribe())
        .filter_map(move |secret| {
            let (scope, store) = (namespace.clone(), secrets_store.clone());
            async move {
                let (ns, name) = secret.ok().filter(|(ns, _)| scope.as_ref().is_none_or(|scope| scope == ns))?;
                let waiting = store
                    .state()
                    .into_iter()
                    .filter(|job| job.namespace().as_deref() == Some(&ns) && job.spec.secret_names().any(|s| s == name))
                    .map(|job| ObjectRef::from_obj(&*job))
                    .collect::<Vec<_>>();
                Some(futures_util::stream::iter(waiting))
            }
        })
        .flatten();
    let job_controller = job_controller
        .watches_shared_stream(for_jobs.filter(changed_for_jobs()), move |prompt: Arc<Prompt>| {
            let namespace = prompt.namespace();
            let name = prompt.name_any();
            store
                .state()
                .into_iter()
                .filter(|job| {
                    job.namespace() == namespace && job.spec.prompt_ref.as_ref().is_some_and(|r| r.name == name)
                })
                .map(|job| ObjectRef::from_obj(&*job))
                .collect::<Vec<_>>()
        })
        .reconcile_on(changes)
        .reconcile_on(secrets_appeared)
        .trigger_backoff(watch_backoff())
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile::prompt_job, reconcile::prompt_job_error, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "prompt job reconcile");
            }
        });
    tokio::join!(prompt_watch, prompt_controller, job_controller, synced);
}

/// Whether a Prompt's watch event matters to the jobs naming it: it is new, its spec
/// changed (a new generation) or it is being deleted; not its finalizer or status being
/// written, which would otherwise reconcile every such job twice more per Prompt.
fn changed_for_jobs() -> impl FnMut(&Arc<Prompt>) -> std::future::Ready<bool> {
    let mut seen: std::collections::HashMap<String, (Option<i64>, bool)> = std::collections::HashMap::new();
    move |prompt| {
        let now = (prompt.metadata.generation, prompt.metadata.deletion_timestamp.is_some());
        let key = prompt.uid().unwrap_or_default();
        std::future::ready(seen.insert(key, now) != Some(now))
    }
}

/// How soon a failed watch is tried again: 0.5 s doubling to at most 5 s (kube's default
/// goes to 30 s, which after an API server restart leaves the controller deaf for a minute).
fn watch_backoff() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .into()
}

/// Job tokens read from Secrets through the cluster's API, for the runner.
#[derive(Clone)]
pub struct ClusterSecrets {
    client: Client,
}

impl ClusterSecrets {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl std::fmt::Debug for ClusterSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecrets")
    }
}

impl crate::jobs::SecretSource for ClusterSecrets {
    fn token<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<secrecy::SecretString, String>> {
        Box::pin(async move {
            let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(self.client.clone(), namespace);
            let secret = secrets.get_opt(name).await.map_err(|e| format!("cannot read Secret {name}: {e}"))?;
            let value = secret
                .and_then(|s| s.data)
                .and_then(|mut data| data.remove(key))
                .ok_or_else(|| format!("Secret {name} has no key {key:?}"))?;
            let token = String::from_utf8(value.0).map_err(|_| format!("key {key:?} of Secret {name} is not text"))?;
            Ok(secrecy::SecretString::from(token.trim().to_owned()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_events_reach_the_jobs_when_the_prompt_is_new_changed_or_leaving_only() {
        let mut matters = changed_for_jobs();
        let mut prompt: Prompt = serde_json::from_value(serde_json::json!({
            "apiVersion": "promptops.dev/v1alpha1", "kind": "Prompt",
            "metadata": {"name": "summary", "namespace": "team-a", "uid": "u1", "generation": 1},
            "spec": {"template": "Summarise."},
        }))
        .unwrap();
        let mut step = |prompt: &Prompt| matters(&Arc::new(prompt.clone())).into_inner();
        assert!(step(&prompt), "new");
        prompt.metadata.finalizers = Some(vec![FINALIZER.into()]);
        assert!(!step(&prompt), "our finalizer");
        prompt.status = Some(resources::PromptStatus::default());
        assert!(!step(&prompt), "our status");
        prompt.metadata.generation = Some(2);
        assert!(step(&prompt), "a new spec");
        prompt.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(step(&prompt), "leaving");
        assert!(!step(&prompt), "still leaving");
    }
}
