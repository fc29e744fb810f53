//! Kubernetes integration tests against a real kube-apiserver + etcd (scripts/k8s-test-env),
//! the real `kubectl` and promptops as the real binary, with the scripted mock LLM. A custom
//! harness starts the control plane once, runs each test in a fresh namespace, and stops it.
//! `cargo test --test k8s [name-filter]`.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod cluster;
#[path = "../support/mcp_servers.rs"]
mod mcp_servers;
#[path = "../support/mock_llm.rs"]
mod mock_llm;
#[path = "../support/stub_atlassian.rs"]
mod stub_atlassian;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike as _, Timelike as _, Utc};
use serde_json::Value;
use sqlx::SqlitePool;

use cluster::{Cluster, Promptops, ROOT, Start};
use mock_llm::{MockLlm, Script};
use stub_atlassian::StubAtlassian;

type Test = fn(Arc<Cluster>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

fn main() -> ExitCode {
    let tests: Vec<(&str, Test)> = vec![
        ("examples_become_ready_run_on_annotation_and_leave_nothing_on_delete", |c| Box::pin(examples(c))),
        ("invalid_specs_are_refused_or_reported_not_ready", |c| Box::pin(invalid_specs(c))),
        ("controller_recovers_after_the_api_server_restarts", |c| Box::pin(api_server_restart(c))),
        ("a_run_killed_midway_is_retried_after_restart", |c| Box::pin(killed_mid_run(c))),
        ("two_replicas_run_each_firing_exactly_once_across_a_leader_kill", |c| Box::pin(two_replicas(c))),
        ("several_watched_namespaces_work_and_others_are_left_alone", |c| Box::pin(several_namespaces(c))),
    ];
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let selected: Vec<_> =
        tests.into_iter().filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f))).collect();
    println!("\nrunning {} kubernetes tests", selected.len());
    if selected.is_empty() {
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let started = Instant::now();
    let cluster = Arc::new(Cluster::up());
    println!("control plane up in {:.1?}", started.elapsed());
    let mut failed = Vec::new();
    for (name, test) in selected {
        let began = Instant::now();
        let outcome = runtime.block_on(async { tokio::spawn(test(cluster.clone())).await });
        match outcome {
            Ok(()) => println!("test {name} ... ok ({:.1?})", began.elapsed()),
            Err(e) => {
                println!("test {name} ... FAILED ({:.1?}): {e}", began.elapsed());
                failed.push(name);
            }
        }
    }
    drop(cluster);
    if failed.is_empty() {
        println!("\nkubernetes tests: all passed in {:.1?}", started.elapsed());
        ExitCode::SUCCESS
    } else {
        println!("\nkubernetes tests FAILED: {failed:?}");
        ExitCode::FAILURE
    }
}

/// One promptops process with its own data directory and mock LLM, for one namespace.
struct Solo {
    promptops: Promptops,
    llm: MockLlm,
    data: tempfile::TempDir,
}

impl Solo {
    async fn start(cluster: &Cluster, namespace: &str) -> Self {
        Self::start_with(cluster, namespace, None).await
    }

    /// With mcp-atlassian at `mcp`.
    async fn start_with(cluster: &Cluster, namespace: &str, mcp: Option<&str>) -> Self {
        let llm = mock().await;
        let data = tempfile::tempdir().unwrap();
        let start = Start { cluster, namespace, data_dir: data.path(), llm: &llm.base, identity: "solo", mcp };
        let promptops = Promptops::start(&start).await;
        Self { promptops, llm, data }
    }
}

async fn mock() -> MockLlm {
    MockLlm::start_with_default(Script::Echo { delay: Duration::from_millis(2) }).await
}

async fn database(dir: &std::path::Path) -> SqlitePool {
    SqlitePool::connect(&format!("sqlite://{}/promptops.db", dir.display())).await.unwrap()
}

async fn count(db: &SqlitePool, sql: &'static str, bind: &str) -> i64 {
    sqlx::query_scalar(sql).bind(bind).fetch_one(db).await.unwrap()
}

fn uid(cluster: &Cluster, namespace: &str, resource: &str) -> String {
    cluster.json(&["get", resource, "-n", namespace])["metadata"]["uid"].as_str().unwrap().to_owned()
}

fn ready_reason(value: &Value) -> Option<(String, String)> {
    let condition = value["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?;
    Some((condition["status"].as_str()?.to_owned(), condition["reason"].as_str()?.to_owned()))
}

/// `--watch-namespace a,b`: both are reconciled, a third is not touched.
async fn several_namespaces(cluster: Arc<Cluster>) {
    let (a, b, c) = (cluster.namespace("watch-a"), cluster.namespace("watch-b"), cluster.namespace("watch-c"));
    let watched = format!("{a},{b}");
    let llm = mock().await;
    let data = tempfile::tempdir().unwrap();
    let _promptops = Promptops::start(&Start {
        cluster: &cluster,
        namespace: &watched,
        data_dir: data.path(),
        llm: &llm.base,
        identity: "multi",
        mcp: None,
    })
    .await;
    for ns in [&a, &b, &c] {
        cluster.kubectl_ok(&["apply", "-n", ns, "-f", &format!("{ROOT}/examples/kubernetes/")]);
    }
    for ns in [&a, &b] {
        cluster.kubectl_ok(&[
            "wait",
            "-n",
            ns,
            "--for=condition=Ready",
            "prompt/open-blockers",
            "promptjob/pay-blockers-weekly",
            "--timeout=60s",
        ]);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = cluster.json(&["get", "pjob/pay-blockers-weekly", "-n", &c]);
    assert!(left["status"].is_null() && left["metadata"]["finalizers"].is_null(), "{left:#}");
    let db = database(data.path()).await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scheduled_jobs WHERE namespace = ?")
        .bind(&c)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing from {c} in the database");
}

/// The done-when of the issue, step by step as a platform engineer does it.
async fn examples(cluster: Arc<Cluster>) {
    let ns = cluster.namespace("examples");
    // Jira and Confluence (the stub, behind the real mcp-atlassian) know the example
    // Secret's token as a bot account.
    let jira = StubAtlassian::start().await;
    jira.add_user("replace-with-a-jira-personal-access-token", "jira-bot", "Jira Bot");
    let base = jira.base.clone();
    let mcp = tokio::task::spawn_blocking(move || mcp_servers::start_atlassian(&base)).await.unwrap();
    let Solo { llm, data, promptops } = Solo::start_with(&cluster, &ns, Some(&mcp.url)).await;

    // A replica is ready before it leads; once it holds the Lease, ready means the
    // leader's caches are synced, and /readyz says so.
    let start = Instant::now();
    loop {
        let lease =
            cluster.kubectl(&["get", "lease/promptops-controller", "-n", &ns, "-o", "jsonpath={.spec.holderIdentity}"]);
        let leading = lease.stdout == b"solo";
        let readyz = reqwest::get(format!("{}/readyz?verbose", promptops.base)).await.unwrap().text().await.unwrap();
        if leading && readyz.contains("[+]controller ok") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "leading: {leading}; {readyz}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.kubectl_ok(&["apply", "-n", &ns, "-f", &format!("{ROOT}/examples/kubernetes/")]);
    cluster.kubectl_ok(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Ready",
        "prompt/open-blockers",
        "promptjob/pay-blockers-weekly",
        "--timeout=60s",
    ]);

    // kubectl get shows the columns a platform engineer reads.
    let table = cluster.kubectl_ok(&["get", "pjob", "-n", &ns]);
    let header = table.lines().next().unwrap();
    for column in
        ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "LAST RUN", "RESULT", "DELIVERED", "NEXT RUN", "READY", "AGE"]
    {
        assert!(header.contains(column), "{column} missing from {header:?}");
    }
    let row = table.lines().nth(1).unwrap();
    for cell in ["pay-blockers-weekly", "0 9 * * MON", "Europe/Berlin", "false", "True"] {
        assert!(row.contains(cell), "{cell} missing from {row:?}");
    }
    let job = cluster.json(&["get", "pjob/pay-blockers-weekly", "-n", &ns]);
    let next: DateTime<Utc> = job["status"]["nextRunTime"].as_str().unwrap().parse().unwrap();
    let berlin = next.with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!((berlin.weekday(), berlin.hour(), berlin.minute(), berlin.second()), (chrono::Weekday::Mon, 9, 0, 0));
    assert!(row.contains(job["status"]["nextRunTime"].as_str().unwrap()), "NEXT RUN shows the status value: {row}");
    assert!(cluster.kubectl_ok(&["get", "promptops", "-n", &ns]).contains("pay-blockers-weekly"), "category works");

    // The run-now annotation runs it once, against the mock LLM.
    cluster.kubectl_ok(&["annotate", "-n", &ns, "pjob/pay-blockers-weekly", "promptops.dev/run-now=first"]);
    let done = cluster.wait_for(
        "the first run",
        &["get", "pjob/pay-blockers-weekly", "-n", &ns],
        Duration::from_secs(60),
        |v| v["status"]["lastRun"]["result"] == "Succeeded",
    );
    let message = done["status"]["lastRun"]["message"].as_str().unwrap();
    assert!(message.contains("Jira project PAY"), "the rendered prompt reached the LLM: {message}");
    assert_eq!(done["status"]["lastHandledRunNow"], "first");

    // The summary lands where the team reads it: a page for the day and a comment.
    let delivered = cluster.wait_for(
        "the deliveries",
        &["get", "pjob/pay-blockers-weekly", "-n", &ns],
        Duration::from_secs(60),
        |v| v["status"]["lastRun"]["delivered"] == "2/2",
    );
    let deliveries = delivered["status"]["lastRun"]["deliveries"].as_array().unwrap().clone();
    assert!(deliveries.iter().all(|d| d["state"] == "delivered" && d["link"].is_string()), "{deliveries:?}");
    let table = cluster.kubectl_ok(&["get", "pjob", "-n", &ns]);
    assert!(table.lines().nth(1).unwrap().contains("Succeeded"), "{table}");
    assert!(table.lines().nth(1).unwrap().contains("2/2"), "DELIVERED: {table}");
    let today = Utc::now().with_timezone(&chrono_tz::Europe::Berlin).format("%Y-%m-%d");
    let title = format!("PAY blockers {today}");
    let pages = jira.pages_titled("PAY", &title);
    assert_eq!(pages.len(), 1, "{:?}", jira.all_pages());
    assert_eq!(pages[0].author, "jira-bot", "written with the Secret's token");
    let marked = |jira: &StubAtlassian| {
        jira.comments("PAY-7").into_iter().filter(|c| c.body.contains("promptops-delivery:")).count()
    };
    assert_eq!(marked(&jira), 1);

    // A reconcile without a new value does not run it again; a new value does.
    cluster.kubectl_ok(&["label", "-n", &ns, "pjob/pay-blockers-weekly", "touched=yes"]);
    cluster.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "-n",
        &ns,
        "pjob/pay-blockers-weekly",
        "promptops.dev/run-now=second",
    ]);
    let first_id = done["status"]["lastRun"]["id"].as_str().unwrap().to_owned();
    cluster.wait_for("the second run", &["get", "pjob/pay-blockers-weekly", "-n", &ns], Duration::from_secs(60), |v| {
        v["status"]["lastRun"]["id"] != first_id.as_str() && v["status"]["lastRun"]["result"] == "Succeeded"
    });
    cluster.wait_for(
        "the second deliveries",
        &["get", "pjob/pay-blockers-weekly", "-n", &ns],
        Duration::from_secs(60),
        |v| v["status"]["lastRun"]["id"] != first_id.as_str() && v["status"]["lastRun"]["delivered"] == "2/2",
    );
    let pages = jira.pages_titled("PAY", &title);
    assert_eq!((pages.len(), pages[0].version), (1, 2), "the day's page replaced, not doubled");
    assert_eq!(marked(&jira), 2, "one comment per run");
    drop(mcp);
    let job_uid = uid(&cluster, &ns, "pjob/pay-blockers-weekly");
    let db = database(data.path()).await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM job_runs WHERE job_id = ?", &job_uid).await, 2);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM job_runs WHERE job_id = ? AND status = 'succeeded'", &job_uid).await,
        2
    );
    assert_eq!(llm.requests(), 2, "each run asked the LLM once");

    let reasons: Vec<String> = cluster.events(&ns).into_iter().map(|(reason, _)| reason).collect();
    for reason in ["Scheduled", "RunRequested", "RunStarted", "RunSucceeded", "Loaded", "DeliverySucceeded"] {
        assert!(reasons.iter().any(|r| r == reason), "no {reason} Event in {reasons:?}");
    }

    // Deleting leaves nothing behind: the finalizer removes the rows first.
    let prompt_uid = uid(&cluster, &ns, "prompt/open-blockers");
    cluster.kubectl_ok(&["delete", "-n", &ns, "pjob/pay-blockers-weekly", "prompt/open-blockers", "--timeout=60s"]);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM scheduled_jobs WHERE id = ?", &job_uid).await, 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM job_runs WHERE job_id = ?", &job_uid).await, 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM prompt_resources WHERE uid = ?", &prompt_uid).await, 0);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM Jobs WHERE status NOT IN ('Done', 'Failed', 'Killed') AND job_type = ?",
            "promptops.job-runs"
        )
        .await,
        0,
        "no queued work left"
    );
    drop(promptops);
}

async fn invalid_specs(cluster: Arc<Cluster>) {
    let ns = cluster.namespace("invalid");
    let Solo { llm: _llm, data: _data, promptops: _promptops } = Solo::start(&cluster, &ns).await;
    let job = |name: &str, spec: &str| {
        format!("apiVersion: promptops.dev/v1alpha1\nkind: PromptJob\nmetadata:\n  name: {name}\nspec:\n{spec}")
    };

    // What the schema and CEL can say is refused by the API server itself.
    let refused = cluster.apply(&ns, &job("words", "  schedule: every monday\n  prompt: hi\n"));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("five-field cron"), "{refused:?}");
    let refused =
        cluster.apply(&ns, &job("both", "  schedule: '0 9 * * *'\n  prompt: hi\n  promptRef:\n    name: x\n"));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("exactly one of promptRef and prompt"), "{refused:?}");
    let refused = cluster.apply(&ns, &job("neither", "  schedule: '0 9 * * *'\n"));
    assert!(!refused.status.success(), "a job without a prompt is refused");

    // What only the controller can tell shows as Ready=False with a reason and an Event.
    cluster.apply_ok(&ns, &job("bad-minute", "  schedule: '61 * * * *'\n  prompt: hi\n"));
    cluster.apply_ok(&ns, &job("bad-zone", "  schedule: '0 9 * * *'\n  timeZone: Mars/Olympus\n  prompt: hi\n"));
    cluster.apply_ok(&ns, &job("no-prompt", "  schedule: '0 9 * * *'\n  promptRef:\n    name: later\n"));
    cluster.apply_ok(
        &ns,
        &job("no-secret", "  schedule: '0 9 * * *'\n  prompt: hi\n  credentialsSecretRef:\n    name: missing\n"),
    );
    cluster.apply_ok(&ns, &job("paused", "  schedule: '0 9 * * *'\n  prompt: hi\n  suspend: true\n"));
    for (name, reason) in [
        ("bad-minute", "InvalidSchedule"),
        ("bad-zone", "InvalidTimeZone"),
        ("no-prompt", "PromptNotFound"),
        ("no-secret", "CredentialsMissing"),
        ("paused", "Suspended"),
    ] {
        let value =
            cluster.wait_for(name, &["get", &format!("pjob/{name}"), "-n", &ns], Duration::from_secs(60), |v| {
                ready_reason(v).is_some()
            });
        assert_eq!(ready_reason(&value), Some(("False".into(), reason.into())), "{name}: {value:#}");
        assert!(value["status"]["nextRunTime"].is_null(), "{name} is not scheduled");
    }
    let out = cluster.kubectl(&["wait", "-n", &ns, "--for=condition=Ready=False", "pjob/bad-minute", "--timeout=5s"]);
    assert!(out.status.success(), "kubectl wait sees Ready=False");
    let events = cluster.events(&ns);
    let invalid = events.iter().find(|(reason, _)| reason == "InvalidSchedule").expect("an InvalidSchedule Event");
    assert!(invalid.1.contains("61 * * * *"), "the Event says what is wrong: {invalid:?}");

    // Creating the missing Prompt re-triggers the job that uses it.
    cluster.apply_ok(
        &ns,
        "apiVersion: promptops.dev/v1alpha1\nkind: Prompt\nmetadata:\n  name: later\nspec:\n  template: hello\n",
    );
    cluster.kubectl_ok(&["wait", "-n", &ns, "--for=condition=Ready", "pjob/no-prompt", "--timeout=30s"]);
    // A Prompt whose template uses an undeclared variable is not loaded.
    cluster.apply_ok(
        &ns,
        "apiVersion: promptops.dev/v1alpha1\nkind: Prompt\nmetadata:\n  name: sloppy\nspec:\n  template: 'hi {{who}}'\n",
    );
    let sloppy = cluster.wait_for("sloppy", &["get", "prompt/sloppy", "-n", &ns], Duration::from_secs(30), |v| {
        ready_reason(v).is_some()
    });
    assert_eq!(ready_reason(&sloppy), Some(("False".into(), "InvalidTemplate".into())));
    // The missing Secret appears: the job, looked at again within 30 s, becomes Ready.
    cluster.kubectl_ok(&["create", "secret", "generic", "missing", "-n", &ns, "--from-literal=token=abc123"]);
    cluster.kubectl_ok(&["wait", "-n", &ns, "--for=condition=Ready", "pjob/no-secret", "--timeout=60s"]);
    // Fixing the schedule makes it Ready.
    cluster.apply_ok(&ns, &job("bad-minute", "  schedule: '1 * * * *'\n  prompt: hi\n"));
    cluster.kubectl_ok(&["wait", "-n", &ns, "--for=condition=Ready", "pjob/bad-minute", "--timeout=30s"]);
}

async fn api_server_restart(cluster: Arc<Cluster>) {
    let ns = cluster.namespace("restart");
    let Solo { llm: _llm, data: _data, mut promptops } = Solo::start(&cluster, &ns).await;
    let job = |name: &str| {
        format!(
            "apiVersion: promptops.dev/v1alpha1\nkind: PromptJob\nmetadata:\n  name: {name}\nspec:\n  schedule: '0 9 * * *'\n  prompt: 'say {name}'\n"
        )
    };
    cluster.apply_ok(&ns, &job("before"));
    cluster.kubectl_ok(&["wait", "-n", &ns, "--for=condition=Ready", "pjob/before", "--timeout=60s"]);

    cluster.down_api();
    tokio::time::sleep(Duration::from_secs(8)).await; // longer than the Lease: leadership is lost
    cluster.up_api();
    assert!(promptops.child.try_wait().unwrap().is_none(), "promptops survived the outage:\n{}", promptops.log_text());

    cluster.apply_ok(&ns, &job("after"));
    cluster.kubectl_ok(&["wait", "-n", &ns, "--for=condition=Ready", "pjob/after", "--timeout=90s"]);
    cluster.kubectl_ok(&["annotate", "-n", &ns, "pjob/before", "promptops.dev/run-now=1"]);
    cluster.wait_for("a run after the restart", &["get", "pjob/before", "-n", &ns], Duration::from_secs(60), |v| {
        v["status"]["lastRun"]["result"] == "Succeeded"
    });
    assert!(promptops.child.try_wait().unwrap().is_none());
    promptops.kill();
}

async fn killed_mid_run(cluster: Arc<Cluster>) {
    let ns = cluster.namespace("killed");
    // Slow enough to kill it mid-answer: 30 words, 300 ms apart.
    let llm = MockLlm::start_with_default(Script::Echo { delay: Duration::from_millis(300) }).await;
    let data = tempfile::tempdir().unwrap();
    let start = Start {
        cluster: &cluster,
        namespace: &ns,
        data_dir: data.path(),
        llm: &llm.base,
        identity: "first",
        mcp: None,
    };
    let mut first = Promptops::start(&start).await;
    let words: Vec<String> = (1..=30).map(|i| format!("w{i}")).collect();
    cluster.apply_ok(
        &ns,
        &format!(
            "apiVersion: promptops.dev/v1alpha1\nkind: PromptJob\nmetadata:\n  name: slow\nspec:\n  schedule: '0 9 * * *'\n  prompt: '{}'\n  retries:\n    limit: 1\n    backoffSeconds: 1\n",
            words.join(" ")
        ),
    );
    cluster.kubectl_ok(&["wait", "-n", &ns, "--for=condition=Ready", "pjob/slow", "--timeout=60s"]);
    let job_uid = uid(&cluster, &ns, "pjob/slow");
    cluster.kubectl_ok(&["annotate", "-n", &ns, "pjob/slow", "promptops.dev/run-now=1"]);
    let db = database(data.path()).await;
    let began = Instant::now();
    while count(&db, "SELECT COUNT(*) FROM job_runs WHERE job_id = ? AND status = 'running'", &job_uid).await == 0 {
        assert!(began.elapsed() < Duration::from_secs(30), "the run never started:\n{}", first.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.kill();

    let second = Promptops::start(&Start { identity: "second", ..start }).await;
    let began = Instant::now();
    loop {
        let row: (String, i64, Option<String>) =
            sqlx::query_as("SELECT status, attempt, error FROM job_runs WHERE job_id = ?")
                .bind(&job_uid)
                .fetch_one(&db)
                .await
                .unwrap();
        if row.0 == "succeeded" {
            assert_eq!(row.1, 2, "the second attempt finished it");
            assert!(second.log_text().contains("a run's process stopped before it finished"), "{}", second.log_text());
            break;
        }
        assert!(row.0 != "failed", "retries.limit 1 allows one more attempt: {row:?}");
        assert!(began.elapsed() < Duration::from_secs(90), "the run stayed {row:?}:\n{}", second.log_text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cluster.wait_for("status after the retry", &["get", "pjob/slow", "-n", &ns], Duration::from_secs(30), |v| {
        v["status"]["lastRun"]["result"] == "Succeeded"
    });
}

async fn two_replicas(cluster: Arc<Cluster>) {
    const JOBS: usize = 10;
    let ns = cluster.namespace("replicas");
    let llm = mock().await;
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
    // All jobs are created within one minute, so they share their firing minutes.
    let second = Utc::now().second();
    if second > 45 {
        tokio::time::sleep(Duration::from_secs(u64::from(62 - second))).await;
    }
    let mut yaml = String::new();
    for i in 0..JOBS {
        yaml.push_str(&format!(
            "---\napiVersion: promptops.dev/v1alpha1\nkind: PromptJob\nmetadata:\n  name: every-minute-{i}\nspec:\n  schedule: '* * * * *'\n  prompt: 'tick {i}'\n"
        ));
    }
    cluster.apply_ok(&ns, &yaml);
    cluster.kubectl_ok(&["wait", "-n", &ns, "--for=condition=Ready", "pjob", "--all", "--timeout=60s"]);
    let db = database(data.path()).await;
    let runs = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM job_runs WHERE trigger = 'schedule' AND status = 'succeeded'",
        )
        .fetch_one(&db)
        .await
        .unwrap()
    };
    let wait_runs = |target: i64| async move {
        let began = Instant::now();
        while runs().await < target {
            assert!(began.elapsed() < Duration::from_secs(100), "only {} of {target} firings ran", runs().await);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    wait_runs(JOBS as i64).await;

    // Kill the leader without warning; the other replica takes over the next minute.
    let holder = cluster.json(&["get", "lease/promptops-controller", "-n", &ns])["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_owned();
    if holder == "replica-a" {
        a.kill();
    } else {
        b.kill();
    }
    wait_runs(2 * JOBS as i64).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // let any double firing show

    let doubled: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT job_id, scheduled_for FROM job_runs GROUP BY job_id, scheduled_for HAVING COUNT(*) > 1)",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(doubled, 0, "no firing was recorded twice");
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_runs").fetch_one(&db).await.unwrap();
    assert_eq!(total as usize, llm.requests(), "every recorded run asked the LLM exactly once");
    let per_minute: Vec<(String, i64)> =
        sqlx::query_as("SELECT scheduled_for, COUNT(*) FROM job_runs GROUP BY scheduled_for ORDER BY scheduled_for")
            .fetch_all(&db)
            .await
            .unwrap();
    for (minute, runs) in &per_minute {
        assert_eq!(*runs as usize, JOBS, "minute {minute}: every job fired once");
    }
    assert!(per_minute.len() >= 2, "{per_minute:?}");
}
