//! Job results delivered: Jira comments and Confluence pages through the real mcp-atlassian
//! in front of the stub, webhooks to a receiver that checks the signature, and a
//! conversation of the owner. Each delivery once, even when a worker died between writing
//! and recording; outages retried, refusals not; private addresses refused.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use promptops::jobs::model::Target;
use promptops::jobs::{ConcurrencyPolicy, JobDefinition, SecretSource, Source};
use serde_json::{Value, json};

use crate::helpers::{AppOptions, Session, TestApp, edited_config, spawn_chat_app_with};
use crate::jobs::{finished_run, run_now};
use crate::mcp_servers::{McpProcess, start_atlassian};
use crate::mock_llm::MockLlm;
use crate::stub_atlassian::StubAtlassian;

/// The signing key the receiver checks, as the webhook's Secret holds it.
const SIGNING_KEY: &str = "webhook-signing-key-42";

struct World {
    app: TestApp,
    _llm: MockLlm,
    jira: StubAtlassian,
    _mcp: McpProcess,
    hooks: Receiver,
}

/// promptops with the mock LLM, the real mcp-atlassian in front of the stub, quick retries,
/// and a webhook receiver.
async fn world() -> World {
    let jira = StubAtlassian::start().await;
    let base = jira.base.clone();
    let mcp = tokio::task::spawn_blocking(move || start_atlassian(&base)).await.unwrap();
    let url = mcp.url.clone();
    let files = edited_config(|c| {
        c["mcp_servers"]["atlassian"]["url"] = json!(url);
        c["delivery"] = json!({"retry_backoff": "200ms", "max_attempts": 4});
    });
    let (app, llm) = spawn_chat_app_with(AppOptions { files, ..AppOptions::default() }).await;
    app.credentials.use_source(Arc::new(FixedSecrets));
    World { app, _llm: llm, jira, _mcp: mcp, hooks: Receiver::start().await }
}

/// Secrets as a cluster would give them: `team-pay/jira` holds Alice's token and
/// `team-pay/hook` the signing key.
#[derive(Debug)]
struct FixedSecrets;

impl SecretSource for FixedSecrets {
    fn token<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<secrecy::SecretString, String>> {
        let value = match (namespace, name, key) {
            ("team-pay", "jira", "token") => Ok("alice-pat"),
            ("team-pay", "hook", "key") => Ok(SIGNING_KEY),
            _ => Err(format!("Secret {name} has no key {key:?}")),
        };
        Box::pin(std::future::ready(value.map(|v| secrecy::SecretString::from(v.to_owned()))))
    }
}

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
struct Hook {
    headers: HeaderMap,
    body: Bytes,
}

impl Hook {
    fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    }
}

/// A webhook receiver on a loopback port that records every request.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Hook>>>,
}

impl Receiver {
    async fn start() -> Self {
        let got: Arc<Mutex<Vec<Hook>>> = Arc::default();
        let seen = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(Hook { headers, body });
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, got }
    }

    fn got(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }
}

/// The receiver's check: `sha256=` HMAC over `<timestamp>.<body>` with the shared key.
fn signed_correctly(hook: &Hook) -> bool {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SIGNING_KEY.as_bytes()).unwrap();
    mac.update(hook.header("x-promptops-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&hook.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    hook.header("x-promptops-signature") == expected
}

fn targets(json: Value) -> Vec<Target> {
    serde_json::from_value(json).unwrap()
}

/// A PromptJob as the controller would store it: Alice's token from `team-pay/jira`.
async fn cluster_job(app: &TestApp, name: &str, deliver: Vec<Target>) -> String {
    let definition = JobDefinition {
        id: format!("uid-{name}"),
        source: Source::Kubernetes,
        namespace: Some("team-pay".into()),
        name: name.into(),
        owner_id: None,
        schedule: "0 9 * * MON".into(),
        time_zone: "UTC".into(),
        prompt_ref: None,
        prompt: Some("Summarise the open blockers of PAY.".into()),
        variables: BTreeMap::from([("project".into(), "PAY".into())]),
        suspended: false,
        concurrency_policy: ConcurrencyPolicy::Forbid,
        starting_deadline_seconds: None,
        retry_limit: 0,
        retry_backoff_seconds: 60,
        secret: Some(("jira".into(), "token".into())),
        allowed_write_tools: Vec::new(),
        deliver,
        problem: None,
    };
    app.state.jobs.apply(definition).await.unwrap().id
}

/// Polls a run's deliveries until none is pending; returns them by target.
async fn settled(session: &Session, job: &str, run: &str) -> BTreeMap<String, Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let detail = session.json(&format!("/api/v1/jobs/{job}/runs/{run}")).await;
        let list = detail["deliveries"].as_array().cloned().unwrap_or_default();
        if !list.is_empty() && list.iter().all(|d| d["state"] != "pending") {
            return list.into_iter().map(|d| (d["target"].as_str().unwrap().to_owned(), d)).collect();
        }
        assert!(tokio::time::Instant::now() < deadline, "deliveries still pending after 30 s: {detail}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Comments on PAY-7 that carry a promptops delivery mark.
fn delivered_comments(jira: &StubAtlassian) -> Vec<String> {
    jira.comments("PAY-7").into_iter().map(|c| c.body).filter(|b| b.contains("promptops-delivery:")).collect()
}

/// What a worker killed between writing and recording leaves: the write done, the row pending.
async fn as_if_the_worker_died_before_recording(app: &TestApp, delivery_id: &str) {
    sqlx::query("UPDATE deliveries SET state = 'pending', next_attempt_at = ?, lease_until = NULL WHERE id = ?")
        .bind(chrono::Utc::now())
        .bind(delivery_id)
        .execute(&app.state.db)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_run_is_delivered_to_a_jira_comment_and_a_signed_webhook_once_even_after_a_crash() {
    let w = world().await;
    let admin = w.app.admin().await;
    let deliver = targets(json!([
        {"name": "pay-7", "jiraComment": {"issue": "{{project}}-7"}},
        {"name": "team-hook", "webhook": {"url": w.hooks.url, "secretRef": {"name": "hook", "key": "key"}}},
    ]));
    let job = cluster_job(&w.app, "weekly-blockers", deliver).await;
    let run = run_now(&admin, &job).await;
    assert_eq!(finished_run(&admin, &job, &run).await["status"], "succeeded");
    let deliveries = settled(&admin, &job, &run).await;
    let (comment, hook) = (&deliveries["pay-7"], &deliveries["team-hook"]);
    assert_eq!(comment["state"], "delivered", "{comment}");
    assert_eq!(comment["kind"], "jiraComment");
    assert_eq!(hook["state"], "delivered", "{hook}");

    // The comment: once, by Alice (the job's token), linking back to the run, with its mark.
    let comments = delivered_comments(&w.jira);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].contains(&format!("promptops-delivery:{}", comment["id"].as_str().unwrap())));
    assert!(comments[0].contains(&format!("/jobs/{job}#run-{run}")), "{}", comments[0]);
    let writes = w.jira.writes();
    assert_eq!(writes.len(), 1, "one write to Jira");
    assert_eq!(writes[0].authorization.as_deref(), Some("Bearer alice-pat"));
    assert!(comment["link"].as_str().unwrap().contains("focusedCommentId="), "{comment}");

    // The webhook: signed with the Secret's key, keyed by the delivery's id.
    let got = w.hooks.got();
    assert_eq!(got.len(), 1);
    assert!(signed_correctly(&got[0]), "the receiver's HMAC check passes");
    assert_eq!(got[0].header("idempotency-key"), hook["id"].as_str().unwrap());
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["run"]["id"], run.as_str());
    assert_eq!(body["job"]["name"], "weekly-blockers");
    assert!(!body["output"].as_str().unwrap().is_empty());

    // The worker died after both writes, before recording them: the next try finds the
    // comment by its mark and writes nothing; the webhook is sent again with the same key,
    // so the receiver can tell the replay.
    for delivery in [comment, hook] {
        as_if_the_worker_died_before_recording(&w.app, delivery["id"].as_str().unwrap()).await;
    }
    assert_eq!(w.app.deliverer.deliver_due().await.unwrap(), 2);
    let again = settled(&admin, &job, &run).await;
    assert_eq!(again["pay-7"]["state"], "delivered");
    assert_eq!(again["pay-7"]["link"], comment["link"], "the same comment");
    assert_eq!(delivered_comments(&w.jira).len(), 1, "no second comment");
    assert_eq!(w.jira.writes().len(), 1, "no second write to Jira");
    let got = w.hooks.got();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].header("idempotency-key"), got[0].header("idempotency-key"), "a replay, recognisable");
    assert!(signed_correctly(&got[1]));

    // Each delivery is in the audit log as the write it implied.
    let audit = admin.json("/api/v1/admin/audit?action=job.deliver").await;
    let text = audit.to_string();
    assert!(text.contains("target pay-7 (jiraComment)") && text.contains("target team-hook (webhook)"), "{text}");
    w.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_jira_outage_is_retried_until_delivered_once_and_a_refusal_fails_at_once_until_delivered_again() {
    let w = world().await;
    let admin = w.app.admin().await;
    let job =
        cluster_job(&w.app, "blockers", targets(json!([{"name": "pay-7", "jiraComment": {"issue": "PAY-7"}}]))).await;

    // An outage: the first tries fail and are tried again; delivered once Jira is back.
    w.jira.set_outage(true);
    let run = run_now(&admin, &job).await;
    finished_run(&admin, &job, &run).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let pending = loop {
        let detail = admin.json(&format!("/api/v1/jobs/{job}/runs/{run}")).await;
        let delivery = detail["deliveries"][0].clone();
        if delivery["attempts"].as_i64().unwrap_or(0) >= 2 {
            break delivery;
        }
        assert!(tokio::time::Instant::now() < deadline, "no retry: {detail}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pending["state"], "pending", "an outage is tried again: {pending}");
    assert!(pending["error"].as_str().unwrap().contains("503"), "{pending}");
    w.jira.set_outage(false);
    let delivered = settled(&admin, &job, &run).await;
    assert_eq!(delivered["pay-7"]["state"], "delivered", "{}", delivered["pay-7"]);
    assert_eq!(delivered_comments(&w.jira).len(), 1);

    // A refusal (403): failed after one try, not tried again, shown with the reason.
    w.jira.set_write_status(Some(403));
    let refused_run = run_now(&admin, &job).await;
    finished_run(&admin, &job, &refused_run).await;
    let refused = settled(&admin, &job, &refused_run).await["pay-7"].clone();
    assert_eq!(refused["state"], "failed", "{refused}");
    assert_eq!(refused["attempts"], 1, "a 403 is not tried again");
    assert!(refused["error"].as_str().unwrap().contains("permission"), "Jira's own reason: {refused}");
    assert_eq!(delivered_comments(&w.jira).len(), 1, "nothing written");
    let page = admin.get(&format!("/jobs/{job}")).await.text().await.unwrap();
    assert!(page.contains("Deliver again") && page.contains("data-state=\"failed\""), "the page offers it");

    // Deliver again, once the permission is fixed.
    w.jira.set_write_status(None);
    let retry = format!("/api/v1/jobs/{job}/runs/{refused_run}/deliveries/pay-7/retry");
    assert_eq!(admin.post(&retry, &json!({})).await.status(), 202);
    assert_eq!(settled(&admin, &job, &refused_run).await["pay-7"]["state"], "delivered");
    assert_eq!(delivered_comments(&w.jira).len(), 2, "one comment per run");
    assert_eq!(admin.post(&retry, &json!({})).await.status(), 422, "only a failed delivery is tried again");
    let user = w.app.user("bea").await;
    assert_eq!(user.post(&retry, &json!({})).await.status(), 403, "a Kubernetes job's delivery is an admin's");
    w.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_personal_job_delivers_to_a_conversation_of_its_owner_and_refuses_private_webhooks() {
    let w = world().await;
    let ada = w.app.user("ada").await;
    let made = ada
        .post(
            "/api/v1/jobs",
            &json!({"name": "Digest", "schedule": "0 9 * * *", "prompt": "What changed?", "deliver": [
                {"name": "mine", "conversation": {}},
                {"name": "internal", "webhook": {"url": "https://10.20.30.40/hook"}},
                {"name": "metadata", "webhook": {"url": "http://169.254.169.254/latest/meta-data"}},
            ]}),
        )
        .await;
    assert_eq!(made.status(), 201, "{}", made.text().await.unwrap());
    let job = made.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let first = run_now(&ada, &job).await;
    finished_run(&ada, &job, &first).await;
    let deliveries = settled(&ada, &job, &first).await;
    let conversation = deliveries["mine"]["link"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    for name in ["internal", "metadata"] {
        let refused = &deliveries[name];
        assert_eq!(refused["state"], "failed", "{refused}");
        assert_eq!(refused["attempts"], 1);
        assert!(refused["error"].as_str().unwrap().contains("refused"), "{refused}");
    }
    let second = run_now(&ada, &job).await;
    finished_run(&ada, &job, &second).await;
    let again = settled(&ada, &job, &second).await;
    assert!(again["mine"]["link"].as_str().unwrap().ends_with(&format!("/c/{conversation}")), "the same one");
    let shown = ada.json(&format!("/api/v1/conversations/{conversation}")).await;
    let roles: Vec<&str> = shown["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"], "each run appended once");
    let bea = w.app.user("bea").await;
    assert_eq!(bea.get(&format!("/api/v1/conversations/{conversation}")).await.status(), 404, "private");

    let invalid = [
        (json!([{"name": "x"}]), "exactly one of"),
        (json!([{"name": "x", "slack": {}}]), "unknown field"),
        (
            json!([{"name": "x", "webhook": {"url": "https://h.example/x", "secretRef": {"name": "s"}}}]),
            "cannot name a Secret",
        ),
        (json!([{"name": "x", "jiraComment": {"issue": "{{nope}}-1"}}]), "neither one of the job's variables"),
        (json!([{"name": "x", "webhook": {"url": "ftp://h.example/"}}]), "must be https"),
    ];
    for (deliver, reason) in invalid {
        let body = json!({"name": "Bad", "schedule": "0 9 * * *", "prompt": "x", "deliver": deliver});
        let response = ada.post("/api/v1/jobs", &body).await;
        assert_eq!(response.status(), 422, "{deliver}");
        let text = response.text().await.unwrap();
        assert!(text.contains(reason), "{deliver}: {text}");
    }
    w.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_confluence_page_is_created_then_replaced_and_found_again_after_a_crash() {
    let w = world().await;
    let admin = w.app.admin().await;
    let deliver = targets(json!([{"name": "wiki", "confluencePage":
        {"space": "{{project}}", "title": "Blockers {{date}}", "mode": "replace"}}]));
    let job = cluster_job(&w.app, "wiki-blockers", deliver).await;
    let title = format!("Blockers {}", chrono::Utc::now().format("%Y-%m-%d"));

    let first = run_now(&admin, &job).await;
    finished_run(&admin, &job, &first).await;
    let created = settled(&admin, &job, &first).await["wiki"].clone();
    assert_eq!(created["state"], "delivered", "{created}");
    let pages = w.jira.pages_titled("PAY", &title);
    assert_eq!(pages.len(), 1, "{:?}", w.jira.all_pages());
    assert!(pages[0].body.contains(&format!("promptops-delivery:{}", created["id"].as_str().unwrap())));
    assert_eq!(pages[0].author, "alice", "written with the job's token");
    assert!(created["link"].as_str().unwrap().contains(&pages[0].id), "{created}");

    // A second run the same day replaces the body of the same page.
    let second = run_now(&admin, &job).await;
    finished_run(&admin, &job, &second).await;
    let replaced = settled(&admin, &job, &second).await["wiki"].clone();
    assert_eq!(replaced["state"], "delivered", "{replaced}");
    let pages = w.jira.pages_titled("PAY", &title);
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].version, 2);
    assert!(pages[0].body.contains(&format!("promptops-delivery:{}", replaced["id"].as_str().unwrap())));

    // Died after the update, before recording it: found by its mark, not written again.
    as_if_the_worker_died_before_recording(&w.app, replaced["id"].as_str().unwrap()).await;
    assert_eq!(w.app.deliverer.deliver_due().await.unwrap(), 1);
    assert_eq!(settled(&admin, &job, &second).await["wiki"]["state"], "delivered");
    assert_eq!(w.jira.pages_titled("PAY", &title)[0].version, 2, "no third version");
    assert!(w.jira.unknown().is_empty(), "{:?}", w.jira.unknown());

    // mode create refuses a title that is taken, at once.
    let create =
        targets(json!([{"name": "wiki", "confluencePage": {"space": "PAY", "title": title, "mode": "create"}}]));
    let strict = cluster_job(&w.app, "wiki-strict", create).await;
    let run = run_now(&admin, &strict).await;
    finished_run(&admin, &strict, &run).await;
    let refused = settled(&admin, &strict, &run).await["wiki"].clone();
    assert_eq!(refused["state"], "failed");
    assert!(refused["error"].as_str().unwrap().contains("exists already"), "{refused}");
    w.app.stop().await.unwrap();
}
