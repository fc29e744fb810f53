//! Benchmark of the controller and the scheduler, run with `cargo bench --bench controller`
//! (release build of the real `promptops` binary against a real kube-apiserver + etcd from
//! scripts/k8s-test-env, and the scripted mock LLM). Prints figures; asserts nothing about
//! speed.
//!
//! 1. 1,000 PromptJobs created through the API (32 at a time, as `kubectl apply` of a big
//!    file would): time from each create to its `Ready=True` seen on a watch — total,
//!    p50, p99 per object, and from the last create to the last `Ready`. Three sets: plain
//!    jobs (an inline prompt, no Secret); realistic jobs (a `promptRef` and a
//!    `credentialsSecretRef`) whose Prompt and Secret exist before them; and realistic jobs
//!    whose Prompt and Secret are created after the last job (a directory applied in name
//!    order, say).
//! 2. 100 jobs firing every minute with two replicas sharing one SQLite file: delay from
//!    each firing's scheduled instant to its run starting, over the 100 firings of one
//!    minute.
//! 3. `kill -9` of the leader between two minutes: the firings of the next minute that
//!    were lost (no run) or doubled (more than one run), and their delay.
//!
//! `CONTROLLER_BENCH_PARTS` (default `1,2,3`) picks the parts; 3 needs 2. `PROMPTOPS_BIN`
//! runs another build of promptops (an earlier commit's, for a before/after in one run).
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::large_futures)]

#[allow(dead_code)]
#[path = "../tests/k8s/cluster.rs"]
mod cluster;
#[path = "../tests/support/mock_llm.rs"]
mod mock_llm;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike as _, Utc};
use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, watcher};
use promptops::controller::resources::{Prompt, PromptJob, PromptJobSpec};
use sqlx::SqlitePool;

use cluster::{Cluster, Promptops, Start};
use mock_llm::{MockLlm, Script};

const OBJECTS: usize = 1000;
const FIRING_JOBS: usize = 100;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cluster = Cluster::up();
    let ns = cluster.namespace("bench");
    let llm = MockLlm::start_with_default(Script::Echo { delay: Duration::from_millis(1) }).await;
    let data = tempfile::tempdir().unwrap();
    let start = Start {
        cluster: &cluster,
        namespace: &ns,
        data_dir: data.path(),
        llm: &llm.base,
        identity: "replica-a",
        mcp: None,
    };
    let mut a = Promptops::start(&start).await;
    let mut b = Promptops::start(&Start { identity: "replica-b", ..start }).await;
    let client = kube_client(&cluster).await;
    let jobs: Api<PromptJob> = Api::namespaced(client.clone(), &ns);

    let parts = std::env::var("CONTROLLER_BENCH_PARTS").unwrap_or_else(|_| "1,2,3".into());
    let parts: Vec<&str> = parts.split(',').map(str::trim).collect();
    if parts.contains(&"1") {
        println!("\n1. {OBJECTS} PromptJobs created → Ready=True (two replicas, one leads)");
        println!("   a. plain: an inline prompt, no Secret");
        ready_benchmark(&client, &ns, "plain", Dependencies::None).await;
        println!("   b. realistic, the Prompt and the Secret created before the jobs");
        ready_benchmark(&client, &ns, "early", Dependencies::First).await;
        println!("   c. realistic, the Prompt and the Secret created after the last job");
        ready_benchmark(&client, &ns, "late", Dependencies::Last).await;
    }
    if !parts.contains(&"2") {
        return;
    }

    println!("\n2. {FIRING_JOBS} jobs firing every minute: scheduled instant → run started");
    wait_until_second(5, 40).await;
    for i in 0..FIRING_JOBS {
        let spec = spec("* * * * *", &format!("tick {i}"));
        jobs.create(&PostParams::default(), &PromptJob::new(&format!("tick-{i:03}"), spec)).await.unwrap();
    }
    let db = SqlitePool::connect(&format!("sqlite://{}/promptops.db", data.path().display())).await.unwrap();
    let first = next_minute(Utc::now());
    wait_for_runs(&db, first, FIRING_JOBS).await;
    report_delays(&db, first).await;

    if !parts.contains(&"3") {
        return;
    }
    println!("\n3. kill -9 of the leader, then the next minute's firings");
    let holder = cluster.json(&["get", "lease/promptops-controller", "-n", &ns])["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_owned();
    let killed_at = Utc::now();
    if holder == "replica-a" {
        a.kill();
    } else {
        b.kill();
    }
    println!("   killed {holder} at :{:02}", killed_at.second());
    let second = next_minute(killed_at);
    let deadline = Instant::now() + Duration::from_secs(150);
    while Utc::now() < second + chrono::Duration::seconds(20) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (expected, recorded, distinct): (i64, i64, i64) = {
        let recorded: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM job_runs WHERE trigger = 'schedule' AND scheduled_for = ?")
                .bind(second)
                .fetch_one(&db)
                .await
                .unwrap();
        let distinct: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT job_id) FROM job_runs WHERE trigger = 'schedule' AND scheduled_for = ?",
        )
        .bind(second)
        .fetch_one(&db)
        .await
        .unwrap();
        (FIRING_JOBS as i64, recorded, distinct)
    };
    let asked = llm.requests();
    println!(
        "   firings due at {}: expected {expected}, lost {}, doubled {} (LLM asked {asked} times for {} runs in all)",
        second.format("%H:%M:%S"),
        expected - distinct,
        recorded - distinct,
        total_runs(&db).await
    );
    report_delays(&db, second).await;
    println!(
        "\n   goals: 1,000 Ready < 10 s, p50 < 200 ms; realistic jobs all Ready within 2 s of the last create, \
         the controller adding ≤ 100 ms p50 over the API server; firing delay < 1 s; zero lost or doubled"
    );
    drop(a);
    drop(b);
}

/// What the jobs of one Ready run refer to, and when those objects are created.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dependencies {
    /// Inline prompts, no Secret.
    None,
    /// A Prompt and a credentials Secret, created before the first job.
    First,
    /// The same, created right after the last job.
    Last,
}

/// A Prompt and a Secret named after `prefix`, as a team would declare them for its jobs.
async fn create_dependencies(client: &kube::Client, namespace: &str, prefix: &str) {
    let prompts: Api<Prompt> = Api::namespaced(client.clone(), namespace);
    let prompt: Prompt = serde_json::from_value(serde_json::json!({
        "apiVersion": "promptops.dev/v1alpha1", "kind": "Prompt",
        "metadata": {"name": format!("{prefix}-summary")},
        "spec": {"title": "Weekly summary", "template": "Summarise the week of {{project}}.",
                 "variables": [{"name": "project", "required": true}]},
    }))
    .unwrap();
    prompts.create(&PostParams::default(), &prompt).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{prefix}-bot")},
        "stringData": {"token": "bench-token"},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
}

fn realistic_spec(prefix: &str) -> PromptJobSpec {
    serde_json::from_value(serde_json::json!({
        "schedule": "0 9 * * MON",
        "promptRef": {"name": format!("{prefix}-summary")},
        "variables": {"project": "PAY"},
        "credentialsSecretRef": {"name": format!("{prefix}-bot"), "key": "token"},
    }))
    .unwrap()
}

fn spec(schedule: &str, prompt: &str) -> PromptJobSpec {
    serde_json::from_value(serde_json::json!({"schedule": schedule, "prompt": prompt})).unwrap()
}

async fn kube_client(cluster: &Cluster) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&cluster.kubeconfig).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn ready_benchmark(client: &kube::Client, namespace: &str, prefix: &str, dependencies: Dependencies) {
    let jobs: Api<PromptJob> = Api::namespaced(client.clone(), namespace);
    let jobs = &jobs;
    let job_spec = match dependencies {
        Dependencies::None => spec("0 9 * * MON", "summarise the week"),
        Dependencies::First | Dependencies::Last => realistic_spec(prefix),
    };
    if dependencies == Dependencies::First {
        create_dependencies(client, namespace, prefix).await;
    }
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let ready: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = {
        let (ready, seen, prefix) = (ready.clone(), seen.clone(), format!("{prefix}-"));
        let stream = watcher(jobs.clone(), watcher::Config::default()).applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Ok(Some(job)) = stream.try_next().await {
                if !job.metadata.name.as_deref().unwrap_or_default().starts_with(&prefix) {
                    continue;
                }
                seen.lock().unwrap().entry(job.metadata.name.clone().unwrap_or_default()).or_insert_with(Instant::now);
                let is_ready = job
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.first())
                    .is_some_and(|c| c.type_ == "Ready" && c.status == "True");
                if is_ready {
                    let name = job.metadata.name.clone().unwrap_or_default();
                    ready.lock().unwrap().entry(name).or_insert_with(Instant::now);
                    if ready.lock().unwrap().len() >= OBJECTS {
                        return;
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let began = Instant::now();
    futures_util::stream::iter(0..OBJECTS)
        .for_each_concurrent(32, |i| {
            let (jobs, created, job_spec) = (jobs.clone(), created.clone(), job_spec.clone());
            async move {
                let name = format!("{prefix}-{i:04}");
                let job = PromptJob::new(&name, job_spec);
                let sent = Instant::now();
                jobs.create(&PostParams::default(), &job).await.unwrap();
                created.lock().unwrap().insert(name, sent);
            }
        })
        .await;
    if dependencies == Dependencies::Last {
        create_dependencies(client, namespace, prefix).await;
    }
    let all_created = began.elapsed();
    tokio::time::timeout(Duration::from_secs(300), watch).await.expect("1,000 Ready within 5 minutes").unwrap();
    let total = began.elapsed();
    let (created, ready, seen) = (created.lock().unwrap(), ready.lock().unwrap(), seen.lock().unwrap());
    let since_created = |events: &HashMap<String, Instant>| {
        let mut latencies: Vec<Duration> = created
            .iter()
            .filter_map(|(name, sent)| events.get(name).map(|at| at.saturating_duration_since(*sent)))
            .collect();
        latencies.sort();
        latencies
    };
    let (latencies, baseline) = (since_created(&ready), since_created(&seen));
    println!(
        "   all {OBJECTS} created in {all_created:.2?}; all Ready after {total:.2?}, {} after the last create",
        ms(total.saturating_sub(all_created))
    );
    println!(
        "   per object create → Ready: p50 {}, p90 {}, p99 {}, max {}",
        ms(percentile(&latencies, 50)),
        ms(percentile(&latencies, 90)),
        ms(percentile(&latencies, 99)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    println!(
        "   baseline, create → first seen on a watch (the API server alone): p50 {}, p99 {}; \
         the controller adds p50 {}",
        ms(percentile(&baseline, 50)),
        ms(percentile(&baseline, 99)),
        ms(percentile(&latencies, 50).saturating_sub(percentile(&baseline, 50)))
    );
}

/// Milliseconds, the unit every figure here is printed in.
fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) * p) / 100]
}

async fn wait_until_second(from: u32, to: u32) {
    loop {
        let second = Utc::now().second();
        if (from..=to).contains(&second) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn next_minute(after: DateTime<Utc>) -> DateTime<Utc> {
    let truncated = after.with_second(0).unwrap().with_nanosecond(0).unwrap();
    truncated + chrono::Duration::minutes(1)
}

async fn wait_for_runs(db: &SqlitePool, scheduled: DateTime<Utc>, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let started: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM job_runs WHERE trigger = 'schedule' AND scheduled_for = ? AND started_at IS NOT NULL",
        )
        .bind(scheduled)
        .fetch_one(db)
        .await
        .unwrap();
        if started as usize >= count || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn report_delays(db: &SqlitePool, scheduled: DateTime<Utc>) {
    let rows: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT created_at, started_at FROM job_runs WHERE trigger = 'schedule' AND scheduled_for = ?")
            .bind(scheduled)
            .fetch_all(db)
            .await
            .unwrap();
    let to_duration = |at: DateTime<Utc>| (at - scheduled).to_std().unwrap_or_default();
    let mut queued: Vec<Duration> = rows.iter().map(|(created, _)| to_duration(*created)).collect();
    let mut started: Vec<Duration> = rows.iter().filter_map(|(_, s)| s.map(to_duration)).collect();
    queued.sort();
    started.sort();
    println!(
        "   {} firings at {}: queued p50 {} / max {}; started p50 {}, p99 {}, max {}",
        rows.len(),
        scheduled.format("%H:%M:%S"),
        ms(percentile(&queued, 50)),
        ms(queued.last().copied().unwrap_or_default()),
        ms(percentile(&started, 50)),
        ms(percentile(&started, 99)),
        ms(started.last().copied().unwrap_or_default())
    );
}

async fn total_runs(db: &SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM job_runs").fetch_one(db).await.unwrap()
}
