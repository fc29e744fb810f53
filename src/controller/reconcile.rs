//! Reconcilers: make the database and the scheduler match a resource, then write what
//! happened into its status (and Events for transitions). Apply and Cleanup are idempotent;
//! Cleanup works whether or not Apply ever ran.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt as _};
use serde_json::json;

use super::resources::{
    DeliveryStatus, LastRun, Prompt, PromptJob, PromptJobStatus, PromptSpec, PromptStatus, RUN_NOW_ANNOTATION,
    SecretKeyRef,
};
use super::{Context, FIELD_MANAGER, FINALIZER};
use crate::db::repositories::deliveries::DeliveryRow;
use crate::jobs::{DeliveryState, JobDefinition, JobError, JobState, RunStatus, Source, Trigger};
use crate::prompts::{PromptError, PromptRef};

/// The longest a job's status goes without a look (runs on other replicas).
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a job that cannot be scheduled (a Secret missing, say) is looked at again.
const PROBLEM_RESYNC: Duration = Duration::from_secs(30);
/// Problems that are other objects not there (yet).
const DEPENDENCIES: [&str; 3] = ["PromptNotFound", "CredentialsMissing", "DeliverySecretMissing"];
/// How long a new job waits for them before its status says what is missing.
const QUIET_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Jobs(#[from] JobError),
    #[error(transparent)]
    Prompts(#[from] PromptError),
    #[error("finalizer patch: {0}")]
    Finalizer(#[source] serde_json::Error),
    #[error("the resource has no {0}")]
    Incomplete(&'static str),
}

/// Where a resource stands with respect to the cleanup finalizer.
enum Stage {
    /// Alive, finalizer in place (added now if it was missing): make it so.
    Apply,
    /// Being deleted with the finalizer still on: clean up, then let it go.
    Cleanup,
    /// Being deleted and already released.
    Gone,
}

/// Puts the finalizer on a live resource in the same reconcile that applies it (kube's
/// `finalizer` helper adds it and waits for the next watch event, one API round trip more
/// per new object), or says it is time to clean up. JSON patches with a `test` first, so
/// a stale copy fails instead of overwriting another party's finalizers.
async fn stage<K>(api: &Api<K>, object: &K) -> Result<Stage, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let finalizers = object.finalizers();
    let has = finalizers.iter().any(|f| f == FINALIZER);
    if object.meta().deletion_timestamp.is_some() {
        return Ok(if has { Stage::Cleanup } else { Stage::Gone });
    }
    if !has {
        let patch = if finalizers.is_empty() {
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ])
        } else {
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
                {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
            ])
        };
        patch_json(api, object, patch).await?;
    }
    Ok(Stage::Apply)
}

/// Takes the finalizer off after cleanup; the API server then deletes the resource.
async fn release<K>(api: &Api<K>, object: &K) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(index) = object.finalizers().iter().position(|f| f == FINALIZER) else { return Ok(()) };
    let path = format!("/metadata/finalizers/{index}");
    patch_json(api, object, json!([{"op": "test", "path": path, "value": FINALIZER}, {"op": "remove", "path": path}]))
        .await
}

async fn patch_json<K>(api: &Api<K>, object: &K, patch: serde_json::Value) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch: json_patch::Patch = serde_json::from_value(patch).map_err(Error::Finalizer)?;
    api.patch::<()>(&object.name_any(), &PatchParams::default(), &Patch::Json(patch)).await?;
    Ok(())
}

pub(crate) async fn prompt(prompt: Arc<Prompt>, context: Arc<Context>) -> Result<Action, Error> {
    let namespace = prompt.namespace().ok_or(Error::Incomplete("namespace"))?;
    let key = format!("Prompt/{namespace}/{}", prompt.name_any());
    let api: Api<Prompt> = Api::namespaced(context.shared.client.clone(), &namespace);
    let action = match stage(&api, &*prompt).await? {
        Stage::Apply => apply_prompt(&prompt, &context).await?,
        Stage::Cleanup => {
            let uid = prompt.uid().ok_or(Error::Incomplete("uid"))?;
            context.shared.prompts.remove_resource(&uid).await?;
            release(&api, &*prompt).await?;
            Action::await_change()
        }
        Stage::Gone => Action::await_change(),
    };
    recovered(&context, &key);
    Ok(action)
}

async fn apply_prompt(prompt: &Prompt, context: &Context) -> Result<Action, Error> {
    let uid = prompt.uid().ok_or(Error::Incomplete("uid"))?;
    let namespace = prompt.namespace().ok_or(Error::Incomplete("namespace"))?;
    let spec = &prompt.spec;
    let name = prompt.name_any();
    let declared = spec.to_prompt(&name);
    let (status, reason, message) = match PromptSpec::problem_of(&declared) {
        Some((reason, problem)) => ("False", reason, problem),
        None => {
            context.shared.prompts.apply_resource(&uid, &namespace, &name, &declared).await?;
            ("True", "Loaded", "in the prompt library".to_owned())
        }
    };
    let old = prompt.status.clone().unwrap_or_default();
    let status = PromptStatus {
        conditions: vec![ready(old.conditions.first(), status, reason, &message, prompt.metadata.generation)],
        observed_generation: prompt.metadata.generation,
    };
    if status != old {
        if old.conditions.first().map(|c| (&c.status, &c.reason))
            != Some((&status.conditions[0].status, &status.conditions[0].reason))
        {
            let kind = if status.conditions[0].status == "True" { EventType::Normal } else { EventType::Warning };
            publish(context, prompt, kind, reason, &message);
        }
        let api: Api<Prompt> = Api::namespaced(context.shared.client.clone(), &prompt.namespace().unwrap_or_default());
        let patch = json!({"apiVersion": "promptops.dev/v1alpha1", "kind": "Prompt", "status": status});
        api.patch_status(&prompt.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    }
    Ok(Action::await_change())
}

pub(crate) async fn prompt_job(job: Arc<PromptJob>, context: Arc<Context>) -> Result<Action, Error> {
    let namespace = job.namespace().ok_or(Error::Incomplete("namespace"))?;
    let key = format!("PromptJob/{namespace}/{}", job.name_any());
    let api: Api<PromptJob> = Api::namespaced(context.shared.client.clone(), &namespace);
    let action = match stage(&api, &*job).await? {
        Stage::Apply => apply_job(&job, &context).await?,
        Stage::Cleanup => {
            let uid = job.uid().ok_or(Error::Incomplete("uid"))?;
            context.shared.jobs.remove(&uid).await?;
            release(&api, &*job).await?;
            tracing::info!(job = job.name_any(), namespace = job.namespace(), "job removed with its runs");
            Action::await_change()
        }
        Stage::Gone => Action::await_change(),
    };
    recovered(&context, &key);
    Ok(action)
}

async fn apply_job(job: &PromptJob, context: &Context) -> Result<Action, Error> {
    let uid = job.uid().ok_or(Error::Incomplete("uid"))?;
    let namespace = job.namespace().ok_or(Error::Incomplete("namespace"))?;
    let name = job.name_any();
    let spec = &job.spec;

    // Why the job cannot be scheduled, most fundamental first.
    let mut problem = spec.problem();
    if problem.is_none()
        && let Some(reference) = &spec.prompt_ref
    {
        // Before the first list, every Prompt would look missing.
        let _closed = context.prompts_seen.wait_until_ready().await;
        let seen = context.prompts_seen.get(&ObjectRef::new(&reference.name).within(&namespace));
        // A Prompt being deleted is on its way out; its removal is not told to the jobs.
        if seen.is_none_or(|p| p.meta().deletion_timestamp.is_some()) {
            problem = Some((
                "PromptNotFound",
                format!("Prompt {:?} does not exist in namespace {namespace}", reference.name),
            ));
        }
    }
    if problem.is_none()
        && let Some(reference) = &spec.credentials_secret_ref
        && !has_secret_key(context, &namespace, reference).await?
    {
        problem = Some((
            "CredentialsMissing",
            format!("Secret {:?} with key {:?} does not exist in namespace {namespace}", reference.name, reference.key),
        ));
    }
    if problem.is_none()
        && let Some(first) =
            crate::jobs::delivery::check_targets(&spec.deliver, &spec.variables, false).into_iter().next()
    {
        problem = Some(("InvalidDelivery", first));
    }
    for hook in spec.deliver.iter().filter_map(|t| t.webhook.as_ref()) {
        let Some(reference) = hook.secret_ref.as_ref().filter(|_| problem.is_none()) else { continue };
        if !has_secret_key(context, &namespace, reference).await? {
            problem = Some((
                "DeliverySecretMissing",
                format!(
                    "Secret {:?} with key {:?} (a webhook's signing key) does not exist in namespace {namespace}",
                    reference.name, reference.key
                ),
            ));
        }
    }
    let row = context
        .shared
        .jobs
        .apply(JobDefinition {
            id: uid.clone(),
            source: Source::Kubernetes,
            namespace: Some(namespace.clone()),
            name: name.clone(),
            owner_id: None,
            schedule: spec.schedule.clone(),
            time_zone: spec.time_zone.clone(),
            prompt_ref: spec
                .prompt_ref
                .as_ref()
                .map(|r| PromptRef::Resource { namespace: namespace.clone(), name: r.name.clone() }.to_string()),
            prompt: spec.prompt.clone(),
            variables: spec.variables.clone(),
            suspended: spec.suspend,
            concurrency_policy: spec.concurrency_policy,
            starting_deadline_seconds: spec.starting_deadline_seconds,
            retry_limit: spec.retries.limit,
            retry_backoff_seconds: spec.retries.backoff_seconds,
            secret: spec.credentials_secret_ref.as_ref().map(|s| (s.name.clone(), s.key.clone())),
            allowed_write_tools: spec.allowed_write_tools.clone(),
            deliver: spec.deliver.clone(),
            problem: problem.as_ref().map(|(_, message)| message.clone()),
        })
        .await?;

    let old = job.status.clone().unwrap_or_default();
    // A new value of the run-now annotation runs the job once; the run's key makes a
    // repeated reconcile (or another replica) harmless.
    let run_now = job.annotations().get(RUN_NOW_ANNOTATION).filter(|v| !v.is_empty()).cloned();
    if let Some(value) = &run_now
        && old.last_handled_run_now.as_ref() != Some(value)
        && let Some(run) = context.shared.jobs.run_now(&row, Trigger::Annotation, &format!("run-now:{value}")).await?
    {
        publish(
            context,
            job,
            EventType::Normal,
            "RunRequested",
            &format!("run {} queued by the {RUN_NOW_ANNOTATION} annotation", run.id),
        );
    }

    let state = context.shared.jobs.state(row).await?;
    let (condition_status, reason, message) = match (&problem, spec.suspend) {
        (Some((reason, message)), _) => ("False", *reason, message.clone()),
        (None, true) => ("False", "Suspended", "suspended: no runs are scheduled".to_owned()),
        (None, false) => (
            "True",
            "Scheduled",
            match state.job.next_run_at {
                Some(next) => format!("next run at {}", next.to_rfc3339()),
                None => "scheduled".to_owned(),
            },
        ),
    };
    let status = PromptJobStatus {
        conditions: vec![ready(old.conditions.first(), condition_status, reason, &message, job.metadata.generation)],
        observed_generation: job.metadata.generation,
        next_run_time: state.job.next_run_at,
        last_schedule_time: state.job.last_schedule_at,
        last_run: state.last_finished.as_ref().map(|run| last_run(run, &state.deliveries)),
        active: state.open.iter().filter(|r| r.status == RunStatus::Running).map(|r| r.id.clone()).collect(),
        last_handled_run_now: run_now.or(old.last_handled_run_now.clone()),
    };
    // A directory applied at once creates jobs before the Prompts and Secrets they name: a
    // new job waits for those quietly for a few seconds (each appearing triggers it)
    // instead of writing a status and an Event that the next second takes back.
    let waits_quietly = problem.as_ref().is_some_and(|(reason, _)| DEPENDENCIES.contains(reason))
        && old.conditions.is_empty()
        && job
            .metadata
            .creation_timestamp
            .as_ref()
            .is_some_and(|t| Utc::now().timestamp() - t.0.as_second() < QUIET_FOR.as_secs().cast_signed());
    if waits_quietly {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if status != old {
        report_transitions(context, job, &old, &status).await;
        let api: Api<PromptJob> = Api::namespaced(context.shared.client.clone(), &namespace);
        let patch = json!({"apiVersion": "promptops.dev/v1alpha1", "kind": "PromptJob", "status": status});
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    }
    // A Prompt or an awaited Secret appearing triggers a reconcile; this is the fallback.
    if problem.is_some() {
        return Ok(Action::requeue(PROBLEM_RESYNC));
    }
    Ok(Action::requeue(requeue_after(&state)))
}

/// Whether the Secret a spec names exists with the key it names.
async fn has_secret_key(context: &Context, namespace: &str, reference: &SecretKeyRef) -> Result<bool, Error> {
    Ok(context.shared.secrets.has_key(namespace, &reference.name, &reference.key).await?)
}

/// Back soon after the next firing (to show the run), at the latest after `RESYNC`.
fn requeue_after(state: &JobState) -> Duration {
    let until_next =
        state.job.next_run_at.and_then(|next| (next - Utc::now()).to_std().ok()).map(|d| d + Duration::from_secs(2));
    until_next.unwrap_or(RESYNC).min(RESYNC)
}

/// Events for what changed between two statuses: readiness, runs started and ended.
async fn report_transitions(context: &Context, job: &PromptJob, old: &PromptJobStatus, new: &PromptJobStatus) {
    let (before, after) = (old.conditions.first(), &new.conditions[0]);
    if before.map(|c| (&c.status, &c.reason)) != Some((&after.status, &after.reason)) {
        let kind = if after.status == "True" { EventType::Normal } else { EventType::Warning };
        publish(context, job, kind, &after.reason, &after.message);
    }
    for id in new.active.iter().filter(|id| !old.active.contains(id)) {
        publish(context, job, EventType::Normal, "RunStarted", &format!("run {id} started"));
    }
    if let Some(run) = &new.last_run
        && old.last_run.as_ref().map(|r| &r.id) != Some(&run.id)
    {
        let message = format!("run {}: {}", run.id, run.message.as_deref().unwrap_or(""));
        if run.result == "Succeeded" {
            publish(context, job, EventType::Normal, "RunSucceeded", &message);
        } else {
            publish(context, job, EventType::Warning, "RunFailed", &message);
        }
    }
    let Some(run) = &new.last_run else { return };
    let before = old.last_run.as_ref().filter(|r| r.id == run.id).map_or(&[][..], |r| &r.deliveries[..]);
    for delivery in &run.deliveries {
        let was = before.iter().find(|d| d.target == delivery.target).map(|d| d.state.as_str());
        if was == Some(delivery.state.as_str()) {
            continue;
        }
        match delivery.state.as_str() {
            "delivered" => {
                let to = delivery.link.as_deref().map(|l| format!(": {l}")).unwrap_or_default();
                let note = format!("run {} delivered to {}{to}", run.id, delivery.target);
                publish(context, job, EventType::Normal, "DeliverySucceeded", &note);
            }
            "failed" => {
                let why = delivery.error.as_deref().unwrap_or("failed");
                let note = format!("run {} not delivered to {}: {why}", run.id, delivery.target);
                publish(context, job, EventType::Warning, "DeliveryFailed", &note);
            }
            _ => {}
        }
    }
}

fn last_run(run: &crate::db::repositories::jobs::RunRow, deliveries: &[DeliveryRow]) -> LastRun {
    let succeeded = run.status == RunStatus::Succeeded;
    let text = if succeeded { run.output.as_str() } else { run.error.as_deref().unwrap_or("failed") };
    let first_line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('>')).unwrap_or("");
    let (short, cut) = crate::text::prefix(first_line, 200);
    LastRun {
        id: run.id.clone(),
        start_time: run.started_at.unwrap_or(run.created_at),
        completion_time: run.finished_at,
        result: if succeeded { "Succeeded" } else { "Failed" }.into(),
        message: Some(if cut { format!("{short}…") } else { short.to_owned() }),
        delivered: (!deliveries.is_empty()).then(|| {
            let done = deliveries.iter().filter(|d| d.state == DeliveryState::Delivered).count();
            format!("{done}/{}", deliveries.len())
        }),
        deliveries: deliveries
            .iter()
            .map(|d| DeliveryStatus {
                target: d.target_name.clone(),
                state: d.state.as_str().to_owned(),
                attempts: d.attempts,
                link: d.link.clone(),
                error: d.last_error.clone().filter(|_| d.state != DeliveryState::Delivered),
            })
            .collect(),
    }
}

/// The `Ready` condition; its transition time moves only when its status does.
fn ready(old: Option<&Condition>, status: &str, reason: &str, message: &str, generation: Option<i64>) -> Condition {
    let since = old
        .filter(|c| c.type_ == "Ready" && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::from_second(Utc::now().timestamp()).unwrap_or_default()));
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: since,
        observed_generation: generation,
    }
}

/// Queues an Event; a single task publishes them in order, off the reconcile's path.
fn publish<K>(context: &Context, object: &K, type_: EventType, reason: &str, note: &str)
where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(crate::text::prefix(note, 1000).0.to_owned()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if context.shared.events.send((event, object.object_ref(&()))).is_err() {
        tracing::warn!(reason, "the Event publisher has stopped; Event dropped");
    }
}

/// A reconcile went through: the object's next failure starts the backoff afresh.
fn recovered(context: &Context, key: &str) {
    context.shared.failures.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
}

/// Retries a failing object with a doubling delay: 1 s, 2 s, 4 s … up to 5 minutes.
fn backoff(context: &Context, key: &str, error: &Error, kind: &str) -> Action {
    let mut failures = context.shared.failures.lock().unwrap_or_else(PoisonError::into_inner);
    let count = failures.entry(key.to_owned()).or_insert(0);
    *count = count.saturating_add(1);
    let delay = Duration::from_secs(1u64 << (*count - 1).min(8)).min(Duration::from_secs(300));
    tracing::warn!(object = key, kind, error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

#[allow(clippy::needless_pass_by_value, reason = "the signature kube-runtime's error policy takes")]
pub(crate) fn prompt_error(prompt: Arc<Prompt>, error: &Error, context: Arc<Context>) -> Action {
    backoff(
        &context,
        &format!("Prompt/{}/{}", prompt.namespace().unwrap_or_default(), prompt.name_any()),
        error,
        "Prompt",
    )
}

#[allow(clippy::needless_pass_by_value, reason = "the signature kube-runtime's error policy takes")]
pub(crate) fn prompt_job_error(job: Arc<PromptJob>, error: &Error, context: Arc<Context>) -> Action {
    backoff(
        &context,
        &format!("PromptJob/{}/{}", job.namespace().unwrap_or_default(), job.name_any()),
        error,
        "PromptJob",
    )
}

/// The reconcilers against a fake API server (a tower service answering from fixtures and
/// recording every request) and a real SQLite file: what they write, where, and why.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::sync::Mutex;

    use kube::Client;
    use kube::client::Body;
    use serde_json::Value;

    use kube::runtime::watcher;

    use super::*;
    use crate::audit::AuditLog;
    use crate::config::ConfigStore;
    use crate::controller::Shared;
    use crate::controller::secrets::SecretKeys;
    use crate::jobs::{Activity, JobStore};
    use crate::prompts::PromptLibrary;
    use crate::telemetry::metrics::Metrics;

    /// One request the reconciler sent.
    #[derive(Debug, Clone)]
    struct Call {
        method: String,
        path: String,
        body: Value,
    }

    /// Objects by API path; GET answers them (or 404), PATCH answers the object patched.
    #[derive(Clone, Default)]
    struct FakeApi {
        objects: Arc<Mutex<HashMap<String, Value>>>,
        calls: Arc<Mutex<Vec<Call>>>,
    }

    impl FakeApi {
        fn with(objects: &[(&str, Value)]) -> Self {
            let fake = Self::default();
            fake.objects.lock().unwrap().extend(objects.iter().map(|(p, v)| ((*p).to_owned(), v.clone())));
            fake
        }

        fn client(&self) -> Client {
            let fake = self.clone();
            let service = tower::service_fn(move |request: http::Request<Body>| {
                let fake = fake.clone();
                async move { Ok::<_, Infallible>(fake.answer(request).await) }
            });
            Client::new(service, "default")
        }

        async fn answer(&self, request: http::Request<Body>) -> http::Response<Body> {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let path = parts.uri.path().to_owned();
            let call = Call {
                method: parts.method.to_string(),
                path: path.clone(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            self.calls.lock().unwrap().push(call);
            let object = self.objects.lock().unwrap().get(path.trim_end_matches("/status")).cloned();
            let (status, body) = match object {
                Some(object) => (200, object),
                None => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": "not found", "reason": "NotFound", "code": 404}),
                ),
            };
            http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap()
        }

        fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }

        /// The body of the last status write to `path`.
        fn status_written(&self, path: &str) -> Value {
            let calls = self.calls();
            let call = calls.iter().rev().find(|c| c.method == "PATCH" && c.path == format!("{path}/status"));
            call.unwrap_or_else(|| panic!("no status written to {path}: {calls:?}")).body["status"].clone()
        }
    }

    struct Fixture {
        context: Arc<Context>,
        events: tokio::sync::mpsc::UnboundedReceiver<(Event, k8s_openapi::api::core::v1::ObjectReference)>,
        _dir: tempfile::TempDir,
    }

    async fn fixture(api: &FakeApi) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        crate::db::migrate(&db).await.unwrap();
        let prompts = Arc::new(PromptLibrary::new(db.clone(), Arc::new(ConfigStore::new())));
        let activity = Arc::new(Activity::new(Arc::new(Metrics::new())));
        let jobs = Arc::new(JobStore::new(db.clone(), prompts.clone(), AuditLog::new(db), activity));
        let (events, received) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            client: api.client(),
            jobs,
            prompts,
            events,
            failures: Mutex::new(HashMap::new()),
            secrets: SecretKeys::new(api.client()),
        });
        let (prompts_seen, mut watched) = kube::runtime::reflector::store();
        watched.apply_watcher_event(&watcher::Event::Init);
        for object in api.objects.lock().unwrap().values().filter(|o| o["kind"] == "Prompt") {
            watched.apply_watcher_event(&watcher::Event::InitApply(serde_json::from_value(object.clone()).unwrap()));
        }
        watched.apply_watcher_event(&watcher::Event::InitDone);
        Fixture { context: Arc::new(Context { shared, prompts_seen }), events: received, _dir: dir }
    }

    const PROMPTS: &str = "/apis/promptops.dev/v1alpha1/namespaces/team-a/prompts";
    const JOBS: &str = "/apis/promptops.dev/v1alpha1/namespaces/team-a/promptjobs";

    fn prompt_object(name: &str, spec: &Value, finalizers: &[&str]) -> Value {
        json!({"apiVersion": "promptops.dev/v1alpha1", "kind": "Prompt",
               "metadata": {"name": name, "namespace": "team-a", "uid": format!("uid-{name}"), "generation": 1,
                            "finalizers": finalizers},
               "spec": spec})
    }

    fn job_object(name: &str, spec: &Value) -> Value {
        json!({"apiVersion": "promptops.dev/v1alpha1", "kind": "PromptJob",
               "metadata": {"name": name, "namespace": "team-a", "uid": format!("uid-{name}"), "generation": 2,
                            "finalizers": [FINALIZER]},
               "spec": spec})
    }

    fn ready_of(status: &Value) -> (String, String, String) {
        let condition = &status["conditions"][0];
        assert_eq!(condition["type"], "Ready", "{status}");
        let text = |key: &str| condition[key].as_str().unwrap_or_default().to_owned();
        (text("status"), text("reason"), text("message"))
    }

    #[tokio::test]
    async fn a_new_prompt_gets_the_finalizer_joins_the_library_and_says_loaded() {
        let spec = json!({"template": "Summarise {{project}}.", "variables": [{"name": "project", "required": true}]});
        let object = prompt_object("standup", &spec, &[]);
        let api = FakeApi::with(&[(&format!("{PROMPTS}/standup"), object.clone())]);
        let mut fixture = fixture(&api).await;
        let action = prompt_reconcile(&fixture, object).await;
        assert_eq!(action, Action::await_change());

        let calls = api.calls();
        assert_eq!((calls[0].method.as_str(), calls[0].path.as_str()), ("PATCH", &*format!("{PROMPTS}/standup")));
        assert_eq!(
            calls[0].body,
            json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                   {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]),
            "the finalizer goes on with a test first, so a stale copy cannot overwrite others'"
        );
        let status = api.status_written(&format!("{PROMPTS}/standup"));
        assert_eq!(ready_of(&status), ("True".into(), "Loaded".into(), "in the prompt library".into()));
        assert_eq!(status["observedGeneration"], 1);
        let reference = PromptRef::parse("team-a/standup").unwrap();
        let stored = fixture.context.shared.prompts.find(&reference, None).await.unwrap();
        assert_eq!((stored.title.as_str(), stored.template.as_str()), ("standup", "Summarise {{project}}."));
        let (event, _) = fixture.events.try_recv().expect("an Event for becoming Ready");
        assert_eq!(event.reason, "Loaded");
    }

    #[tokio::test]
    async fn an_invalid_prompt_is_not_ready_with_the_libraries_own_reason_and_stays_out() {
        let object = prompt_object("sloppy", &json!({"template": "Hi {{who}}", "title": "Sloppy"}), &[FINALIZER]);
        let api = FakeApi::with(&[(&format!("{PROMPTS}/sloppy"), object.clone())]);
        let mut fixture = fixture(&api).await;
        prompt_reconcile(&fixture, object).await;

        assert!(api.calls().iter().all(|c| c.path.ends_with("/status")), "the finalizer was there: {:?}", api.calls());
        let status = api.status_written(&format!("{PROMPTS}/sloppy"));
        let expected = "template: uses {{who}}, which is not declared in variables";
        assert_eq!(ready_of(&status), ("False".into(), "InvalidTemplate".into(), expected.into()));
        let reference = PromptRef::parse("team-a/sloppy").unwrap();
        assert!(fixture.context.shared.prompts.find(&reference, None).await.is_err());
        let (event, _) = fixture.events.try_recv().unwrap();
        assert_eq!((event.reason.as_str(), event.type_), ("InvalidTemplate", EventType::Warning));
    }

    #[tokio::test]
    async fn a_deleted_prompt_leaves_the_library_and_releases_its_finalizer() {
        let mut object = prompt_object("gone", &json!({"template": "x"}), &["other.example/keep", FINALIZER]);
        let api = FakeApi::with(&[(&format!("{PROMPTS}/gone"), object.clone())]);
        let fixture = fixture(&api).await;
        prompt_reconcile(&fixture, object.clone()).await;
        object["metadata"]["deletionTimestamp"] = json!("2026-12-03T10:00:00Z");
        prompt_reconcile(&fixture, object).await;

        let reference = PromptRef::parse("team-a/gone").unwrap();
        assert!(fixture.context.shared.prompts.find(&reference, None).await.is_err());
        let last = api.calls().pop().unwrap();
        assert_eq!(
            last.body,
            json!([{"op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER},
                   {"op": "remove", "path": "/metadata/finalizers/1"}]),
            "only our finalizer goes, by index, tested first"
        );
    }

    #[tokio::test]
    async fn a_job_whose_prompt_is_missing_is_stored_unscheduled_and_looked_at_again_soon() {
        let spec = json!({"schedule": "0 9 * * MON", "timeZone": "Europe/Berlin", "promptRef": {"name": "later"}});
        let object = job_object("weekly", &spec);
        let api = FakeApi::with(&[(&format!("{JOBS}/weekly"), object.clone())]);
        let fixture = fixture(&api).await;
        let action = job_reconcile(&fixture, object).await;
        assert_eq!(action, Action::requeue(PROBLEM_RESYNC));

        assert!(api.calls().iter().all(|c| c.method != "GET"), "the watched Prompts answer: {:?}", api.calls());
        let status = api.status_written(&format!("{JOBS}/weekly"));
        let message = "Prompt \"later\" does not exist in namespace team-a";
        assert_eq!(ready_of(&status), ("False".into(), "PromptNotFound".into(), message.into()));
        assert!(status["nextRunTime"].is_null(), "{status}");
        let row = fixture.context.shared.jobs.get(0, "uid-weekly").await.unwrap();
        assert_eq!(row.problem.as_deref(), Some(message));
        assert_eq!(row.prompt_ref.as_deref(), Some("team-a/later"), "a full reference to the Prompt");
        assert_eq!(row.next_run_at, None);
    }

    #[tokio::test]
    async fn a_new_job_waits_quietly_for_its_prompt_for_a_few_seconds_and_then_says_what_is_missing() {
        let spec = json!({"schedule": "0 9 * * MON", "promptRef": {"name": "later"}});
        for (age, quiet) in [(0, true), (4, true), (6, false)] {
            let mut object = job_object("weekly", &spec);
            let created =
                (Utc::now() - chrono::Duration::seconds(age)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            object["metadata"]["creationTimestamp"] = json!(created);
            let api = FakeApi::with(&[(&format!("{JOBS}/weekly"), object.clone())]);
            let fixture = fixture(&api).await;
            let action = job_reconcile(&fixture, object).await;
            let wrote = api.calls().iter().any(|c| c.path.ends_with("/status"));
            assert_eq!((wrote, action == Action::requeue(Duration::from_secs(1))), (!quiet, quiet), "{age} s old");
            let row = fixture.context.shared.jobs.get(0, "uid-weekly").await.unwrap();
            assert!(row.problem.is_some() && row.next_run_at.is_none(), "stored unscheduled either way");
        }
    }

    #[tokio::test]
    async fn a_job_with_a_bad_delivery_target_or_a_missing_webhook_secret_is_not_ready_with_the_reason() {
        let cases = [
            (
                json!([{"name": "c", "conversation": {}}]),
                "InvalidDelivery",
                "delivery target \"c\": a conversation target is for personal jobs (a PromptJob has no owner)",
            ),
            (
                json!([{"name": "j", "jiraComment": {"issue": "{{project}}-7"}}]),
                "InvalidDelivery",
                "delivery target \"j\": issue: {{project}} is neither one of the job's variables nor date",
            ),
            (
                json!([{"name": "h", "webhook": {"url": "https://hooks.example/x", "secretRef": {"name": "hook", "key": "k"}}}]),
                "DeliverySecretMissing",
                "Secret \"hook\" with key \"k\" (a webhook's signing key) does not exist in namespace team-a",
            ),
        ];
        for (deliver, reason, message) in cases {
            let spec = json!({"schedule": "0 9 * * MON", "prompt": "Hi", "deliver": deliver});
            let object = job_object("weekly", &spec);
            let api = FakeApi::with(&[(&format!("{JOBS}/weekly"), object.clone())]);
            let fixture = fixture(&api).await;
            assert_eq!(job_reconcile(&fixture, object).await, Action::requeue(PROBLEM_RESYNC));
            let status = api.status_written(&format!("{JOBS}/weekly"));
            assert_eq!(ready_of(&status), ("False".into(), reason.into(), message.into()), "{deliver}");
            assert_eq!(fixture.context.shared.jobs.get(0, "uid-weekly").await.unwrap().next_run_at, None);
        }
    }

    #[tokio::test]
    async fn a_valid_job_is_scheduled_in_its_zone_and_its_status_names_the_next_run() {
        let spec = json!({"schedule": "0 9 * * MON", "timeZone": "Europe/Berlin", "prompt": "Hi",
                          "variables": {"project": "PAY"}, "concurrencyPolicy": "Replace"});
        let object = job_object("monday", &spec);
        let api = FakeApi::with(&[(&format!("{JOBS}/monday"), object.clone())]);
        let fixture = fixture(&api).await;
        let action = job_reconcile(&fixture, object.clone()).await;
        assert!(action != Action::requeue(PROBLEM_RESYNC), "{action:?}");

        let status = api.status_written(&format!("{JOBS}/monday"));
        let (ready, reason, message) = ready_of(&status);
        assert_eq!((ready.as_str(), reason.as_str()), ("True", "Scheduled"));
        let next: chrono::DateTime<Utc> = serde_json::from_value(status["nextRunTime"].clone()).unwrap();
        let local = next.with_timezone(&chrono_tz::Europe::Berlin);
        assert_eq!(local.format("%a %H:%M").to_string(), "Mon 09:00");
        assert_eq!(message, format!("next run at {}", next.to_rfc3339()));
        assert_eq!(status["observedGeneration"], 2);
        let row = fixture.context.shared.jobs.get(0, "uid-monday").await.unwrap();
        assert_eq!(row.concurrency_policy, crate::jobs::ConcurrencyPolicy::Replace);
        assert_eq!(row.variables.0.get("project").map(String::as_str), Some("PAY"));

        // Nothing changed: the next reconcile writes no status.
        let mut same = object;
        same["status"] = status;
        let before = api.calls().len();
        job_reconcile(&fixture, same).await;
        assert!(api.calls()[before..].iter().all(|c| c.method != "PATCH"), "{:?}", &api.calls()[before..]);
    }

    fn secret_object(name: &str, keys: &[&str]) -> Value {
        let data: serde_json::Map<String, Value> = keys.iter().map(|k| ((*k).to_owned(), json!("dG9rZW4="))).collect();
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "team-a"}, "data": data})
    }

    const SECRETS: &str = "/api/v1/namespaces/team-a/secrets";

    #[tokio::test]
    async fn jobs_naming_one_watched_prompt_and_one_secret_read_the_prompt_from_the_watch_and_the_secret_once() {
        let prompt = prompt_object("summary", &json!({"template": "Summarise."}), &[FINALIZER]);
        let spec = json!({"schedule": "0 9 * * MON", "promptRef": {"name": "summary"},
                          "credentialsSecretRef": {"name": "bot", "key": "token"}});
        let jobs: Vec<Value> = (0..20).map(|i| job_object(&format!("weekly-{i}"), &spec)).collect();
        let mut objects =
            vec![(format!("{PROMPTS}/summary"), prompt), (format!("{SECRETS}/bot"), secret_object("bot", &["token"]))];
        objects.extend(jobs.iter().map(|j| (format!("{JOBS}/{}", j["metadata"]["name"].as_str().unwrap()), j.clone())));
        let objects: Vec<(&str, Value)> = objects.iter().map(|(p, v)| (p.as_str(), v.clone())).collect();
        let api = FakeApi::with(&objects);
        let fixture = fixture(&api).await;
        futures_util::future::join_all(jobs.into_iter().map(|job| job_reconcile(&fixture, job))).await;

        for i in 0..20 {
            let status = api.status_written(&format!("{JOBS}/weekly-{i}"));
            assert_eq!(ready_of(&status).1, "Scheduled", "{status}");
        }
        let gets: Vec<String> = api.calls().into_iter().filter(|c| c.method == "GET").map(|c| c.path).collect();
        assert_eq!(gets, [format!("{SECRETS}/bot")], "one GET of the Secret for 20 jobs, none of the Prompt");
    }

    #[tokio::test]
    async fn a_secret_a_job_waits_for_is_looked_for_by_name_and_reported_once_when_it_appears() {
        let api = FakeApi::default();
        let fixture = fixture(&api).await;
        let secrets = &fixture.context.shared.secrets;
        assert!(!secrets.has_key("team-a", "bot", "token").await.unwrap());
        let start = std::time::Instant::now();
        let rounds = std::sync::atomic::AtomicU64::new(0);
        let later = || start + Duration::from_secs(2 * (1 + rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        assert!(secrets.poll_once(later()).await.is_empty(), "still missing");
        api.objects.lock().unwrap().insert(format!("{SECRETS}/bot"), secret_object("bot", &["other"]));
        let appeared = secrets.poll_once(later()).await;
        assert_eq!(appeared, [("team-a".to_owned(), "bot".to_owned())], "it changed: its jobs look again");
        assert!(secrets.poll_once(later()).await.is_empty(), "and it left the waiting list");
        assert!(!secrets.has_key("team-a", "bot", "token").await.unwrap(), "the key is still missing");
        api.objects.lock().unwrap().insert(format!("{SECRETS}/bot"), secret_object("bot", &["other", "token"]));
        assert_eq!(secrets.poll_once(later()).await.len(), 1, "the key appearing is a change too");
        assert!(secrets.has_key("team-a", "bot", "token").await.unwrap());
        let asked = api.calls().iter().filter(|c| c.method == "GET").count();
        assert!(secrets.poll_once(later()).await.is_empty());
        assert_eq!(api.calls().iter().filter(|c| c.method == "GET").count(), asked, "nothing waits: nothing asked");
    }

    async fn prompt_reconcile(fixture: &Fixture, object: Value) -> Action {
        let object: Prompt = serde_json::from_value(object).unwrap();
        prompt(Arc::new(object), fixture.context.clone()).await.unwrap()
    }

    async fn job_reconcile(fixture: &Fixture, object: Value) -> Action {
        let object: PromptJob = serde_json::from_value(object).unwrap();
        prompt_job(Arc::new(object), fixture.context.clone()).await.unwrap()
    }
}
