//! Scheduled jobs through the API and the pages: personal jobs made, listed, run now (the
//! worker runs them against the mock LLM), paused, resumed and deleted; strictly per user;
//! Kubernetes jobs read-only; run output sanitised on the page.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Timelike as _;

use promptops::jobs::ConcurrencyPolicy;
use promptops::jobs::{JobDefinition, Source};
use promptops::prompts::Prompt;
use serde_json::{Value, json};

use crate::helpers::{Session, TestApp, spawn_app, spawn_chat_app};

/// Creates a personal job with inline text; returns its id.
pub(crate) async fn personal_job(session: &Session, name: &str, prompt: &str) -> String {
    let response =
        session.post("/api/v1/jobs", &json!({"name": name, "schedule": "0 9 * * MON-FRI", "prompt": prompt})).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

/// Runs a job now; returns the run's id.
pub(crate) async fn run_now(session: &Session, job: &str) -> String {
    let response = session.post(&format!("/api/v1/jobs/{job}/run"), &json!({})).await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    response.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_owned()
}

/// Polls a run until it has ended; returns it.
pub(crate) async fn finished_run(session: &Session, job: &str, run: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let value = session.json(&format!("/api/v1/jobs/{job}/runs/{run}")).await;
        if !matches!(value["status"].as_str(), Some("queued" | "running")) {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "run still open after 20 s: {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["error"]["message"].as_str().unwrap_or_default().to_owned())
}

/// A PromptJob's definition as the controller would give it.
fn kubernetes_definition(id: &str, name: &str, schedule: &str, prompt: &str) -> JobDefinition {
    JobDefinition {
        id: id.into(),
        source: Source::Kubernetes,
        namespace: Some("team-pay".into()),
        name: name.into(),
        owner_id: None,
        schedule: schedule.into(),
        time_zone: "UTC".into(),
        prompt_ref: None,
        prompt: Some(prompt.into()),
        variables: BTreeMap::new(),
        suspended: false,
        concurrency_policy: ConcurrencyPolicy::Forbid,
        starting_deadline_seconds: None,
        retry_limit: 0,
        retry_backoff_seconds: 60,
        secret: None,
        allowed_write_tools: Vec::new(),
        deliver: Vec::new(),
        problem: None,
    }
}

/// A PromptJob as the controller would store it.
async fn kubernetes_job(app: &TestApp) -> String {
    let definition = kubernetes_definition("uid-nightly", "nightly-report", "0 2 * * *", "Summarise yesterday.");
    let job = app.state.jobs.apply(JobDefinition { time_zone: "Europe/Berlin".into(), ..definition }).await.unwrap();
    job.id
}

#[tokio::test]
async fn invalid_personal_jobs_are_refused_with_the_reason() {
    let app = spawn_app().await;
    let ada = app.user("ada").await;
    let cases = [
        (json!({"name": "x", "schedule": "0 9 * *", "prompt": "hi"}), "it needs five fields"),
        (json!({"name": "x", "schedule": "61 * * * *", "prompt": "hi"}), "invalid schedule"),
        (
            json!({"name": "x", "schedule": "0 9 * * *", "time_zone": "Mars/Olympus", "prompt": "hi"}),
            "unknown time zone",
        ),
        (json!({"name": "x", "schedule": "0 9 * * *", "prompt_ref": "blockers", "prompt": "hi"}), "not both"),
        (json!({"name": "x", "schedule": "0 9 * * *"}), "not both"),
        (json!({"name": "  ", "schedule": "0 9 * * *", "prompt": "hi"}), "needs a name"),
        (json!({"name": "x", "schedule": "0 9 * * *", "prompt_ref": "nope"}), "no prompt named"),
        (json!({"name": "x", "schedule": "0 9 * * *", "prompt_ref": "blockers"}), "needs a value for project"),
    ];
    for (body, reason) in cases {
        let (status, message) = error_of(ada.post("/api/v1/jobs", &body).await).await;
        assert_eq!(status, 422, "{body}: {message}");
        assert!(message.contains(reason), "{body}: {message:?} should say {reason:?}");
    }
    let missing = ada.post("/api/v1/jobs", &json!({"name": "x"})).await;
    assert_eq!(missing.status(), 422, "a missing field is refused by the JSON reader");
    assert_eq!(ada.json("/api/v1/jobs").await, json!([]), "nothing was made");

    let saved = ada
        .post(
            "/api/v1/jobs",
            &json!({"name": "PAY blockers", "schedule": "0 9 * * MON", "time_zone": "Europe/Berlin",
                    "prompt_ref": "blockers", "variables": {"project": "PAY"}}),
        )
        .await;
    assert_eq!(saved.status(), 201);
    let saved: Value = saved.json().await.unwrap();
    assert_eq!(saved["prompt_ref"], "blockers");
    assert_eq!(saved["variables"], json!({"project": "PAY"}));
    assert_eq!(saved["time_zone"], "Europe/Berlin");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_personal_job_runs_now_pauses_resumes_and_is_deleted_with_its_runs() {
    let (app, _mock) = spawn_chat_app().await;
    let ada = app.user("ada").await;
    let job = personal_job(&ada, "Morning digest", "List what changed overnight.").await;

    let list = ada.json("/api/v1/jobs").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let listed = &list[0];
    assert_eq!(listed["id"], job.as_str());
    assert_eq!(listed["name"], "Morning digest");
    assert_eq!(listed["source"], "personal");
    assert_eq!(listed["time_zone"], "UTC", "the default time zone");
    assert_eq!(listed["editable"], true);
    assert_eq!(listed["suspended"], false);
    assert!(listed["next_run_at"].is_string(), "{listed}");

    let run = run_now(&ada, &job).await;
    let done = finished_run(&ada, &job, &run).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["trigger"], "manual");
    // The run has no Jira token, so a notice saying the tools are off comes first.
    assert!(done["output"].as_str().unwrap().ends_with("\n\nYou said: List what changed overnight."), "{done}");
    assert!(done["html"].as_str().unwrap().contains("<p>You said: List what changed overnight.</p>"), "{done}");
    assert_eq!(done["tool_calls"], json!([]));
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    let runs = ada.json(&format!("/api/v1/jobs/{job}/runs")).await;
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["id"], run.as_str());
    assert!(runs[0].get("tool_calls").is_none() && runs[0].get("idempotency_key").is_none());

    let paused = ada.patch(&format!("/api/v1/jobs/{job}"), &json!({"suspended": true})).await;
    assert_eq!(paused.status(), 200);
    let paused: Value = paused.json().await.unwrap();
    assert_eq!(paused["suspended"], true);
    assert!(paused["next_run_at"].is_null(), "{paused}");
    let resumed: Value =
        ada.patch(&format!("/api/v1/jobs/{job}"), &json!({"suspended": false})).await.json().await.unwrap();
    assert_eq!(resumed["suspended"], false);
    assert!(resumed["next_run_at"].is_string(), "{resumed}");
    let bad = ada.patch(&format!("/api/v1/jobs/{job}"), &json!({"paused": true})).await;
    assert_eq!(bad.status(), 422, "unknown fields are refused");

    let deleted = ada.delete(&format!("/api/v1/jobs/{job}")).await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(ada.get(&format!("/api/v1/jobs/{job}")).await.status(), 404);
    assert_eq!(ada.get(&format!("/api/v1/jobs/{job}/runs")).await.status(), 404);
    assert_eq!(ada.json("/api/v1/jobs").await, json!([]));
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_runs WHERE job_id = ?")
        .bind(&job)
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(left, 0, "the runs went with the job");
    assert_eq!(ada.delete(&format!("/api/v1/jobs/{job}")).await.status(), 404);
    // Every change is in the audit log, with who did it.
    let admin = app.admin().await;
    let audit = admin.json("/api/v1/admin/audit?action=job.").await;
    let mut actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    actions.sort_unstable();
    assert_eq!(actions, ["job.create", "job.delete", "job.pause", "job.resume", "job.run"], "{audit}");
    assert!(
        audit["entries"].as_array().unwrap().iter().all(|e| e["actor"] == "ada" && e["target"] == "Morning digest")
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn personal_jobs_are_strictly_per_user() {
    let (app, _mock) = spawn_chat_app().await;
    let ada = app.user("ada").await;
    let bob = app.user("bob").await;
    let job = personal_job(&ada, "Ada's digest", "hello").await;
    let run = run_now(&ada, &job).await;

    assert_eq!(bob.json("/api/v1/jobs").await, json!([]));
    for path in [
        format!("/api/v1/jobs/{job}"),
        format!("/api/v1/jobs/{job}/runs"),
        format!("/api/v1/jobs/{job}/runs/{run}"),
        format!("/jobs/{job}"),
    ] {
        assert_eq!(bob.get(&path).await.status(), 404, "GET {path}");
    }
    assert_eq!(bob.post(&format!("/api/v1/jobs/{job}/run"), &json!({})).await.status(), 404);
    assert_eq!(bob.patch(&format!("/api/v1/jobs/{job}"), &json!({"suspended": true})).await.status(), 404);
    assert_eq!(bob.delete(&format!("/api/v1/jobs/{job}")).await.status(), 404);
    assert_eq!(bob.form(&format!("/jobs/{job}/delete"), &[]).await.status(), 404);
    // Not even an admin sees another person's personal job.
    let admin = app.admin().await;
    assert_eq!(admin.get(&format!("/api/v1/jobs/{job}")).await.status(), 404);
    assert_eq!(admin.post(&format!("/api/v1/jobs/{job}/run"), &json!({})).await.status(), 404);

    // A run id of another job is not found under this one.
    let other = personal_job(&ada, "Second", "again").await;
    assert_eq!(ada.get(&format!("/api/v1/jobs/{other}/runs/{run}")).await.status(), 404);
    assert_eq!(ada.get(&format!("/api/v1/jobs/{job}")).await.status(), 200, "still there");
    finished_run(&ada, &job, &run).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_api_demands_a_session_and_the_csrf_token() {
    let app = spawn_app().await;
    for path in ["/api/v1/jobs", "/api/v1/prompts", "/api/v1/jobs/x/runs"] {
        assert_eq!(app.get(path).await.status(), 401, "GET {path}");
    }
    let anonymous = app.client.post(format!("{}/api/v1/jobs", app.base)).json(&json!({})).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    let ada = app.user("ada").await;
    let body = json!({"name": "x", "schedule": "0 9 * * *", "prompt": "hi"});
    let forged = ada.client.post(format!("{}/api/v1/jobs", app.base)).json(&body).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    let job = personal_job(&ada, "Mine", "hi").await;
    let forged = ada.client.post(format!("{}/api/v1/jobs/{job}/run", app.base)).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    let forged = ada.client.delete(format!("{}/api/v1/jobs/{job}", app.base)).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    let form = ada.client.post(format!("{}/jobs/{job}/pause", app.base)).form(&[("x", "y")]).send().await.unwrap();
    assert_eq!(form.status(), 403, "a page form without the token");
    assert_eq!(ada.json(&format!("/api/v1/jobs/{job}")).await["suspended"], false);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn kubernetes_jobs_and_prompts_are_read_only() {
    let (app, _mock) = spawn_chat_app().await;
    let job = kubernetes_job(&app).await;
    let weekly: Prompt = serde_json::from_value(json!({
        "title": "Weekly summary",
        "description": "What happened this week.",
        "template": "Summarise {{project}}.",
        "variables": [{"name": "project", "required": true}],
    }))
    .unwrap();
    app.state.prompts.apply_resource("uid-prompt", "team-pay", "weekly", &weekly).await.unwrap();
    let ada = app.user("ada").await;

    let prompts = ada.json("/api/v1/prompts").await;
    let names: Vec<(&str, &str)> = prompts
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["source"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("blockers", "file"), ("release-notes", "file"), ("team-pay/weekly", "kubernetes")]);

    let list = ada.json("/api/v1/jobs").await;
    assert_eq!(list[0]["id"], job.as_str());
    assert_eq!(list[0]["source"], "kubernetes");
    assert_eq!(list[0]["namespace"], "team-pay");
    assert_eq!(list[0]["editable"], false);

    let (status, message) =
        error_of(ada.patch(&format!("/api/v1/jobs/{job}"), &json!({"suspended": true})).await).await;
    assert_eq!(
        (status, message.as_str()),
        (409, "this job is managed by Kubernetes; change its PromptJob resource instead")
    );
    assert_eq!(error_of(ada.delete(&format!("/api/v1/jobs/{job}")).await).await.0, 409);
    let (status, message) = error_of(ada.post(&format!("/api/v1/jobs/{job}/run"), &json!({})).await).await;
    assert_eq!((status, message.as_str()), (403, "only an admin may run a job managed by Kubernetes from here"));
    assert_eq!(ada.json(&format!("/api/v1/jobs/{job}/runs")).await, json!([]));

    let page = ada.get(&format!("/jobs/{job}")).await.text().await.unwrap();
    assert!(page.contains("Managed by Kubernetes (team-pay/nightly-report)"), "{page}");
    for button in ["Run now", ">Pause<", ">Delete<"] {
        assert!(!page.contains(button), "no {button} for a user on a Kubernetes job");
    }
    let library = ada.get("/prompts").await.text().await.unwrap();
    assert!(library.contains("Weekly summary") && library.contains("Kubernetes · team-pay"), "{library}");
    assert!(library.contains("Open blockers of a project") && library.contains("prompts.json"));

    let admin = app.admin().await;
    let page = admin.get(&format!("/jobs/{job}")).await.text().await.unwrap();
    assert!(page.contains("Run now") && !page.contains(">Pause<"), "admins may run it, not edit it");
    let run = run_now(&admin, &job).await;
    assert_eq!(admin.json(&format!("/api/v1/jobs/{job}/runs")).await[0]["id"], run.as_str());
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_pages_list_show_and_act_on_jobs_and_output_is_sanitised() {
    let (app, _mock) = spawn_chat_app().await;
    let ada = app.user("ada").await;

    let page = ada.get("/jobs").await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("No jobs yet") && page.contains("New personal job"));
    assert_eq!(ada.get("/prompts").await.status(), 200);

    // A refused form comes back with the reason and what was typed.
    let refused = ada
        .form(
            "/jobs",
            &[
                ("name", "Shouty"),
                ("schedule", "not cron"),
                ("time_zone", "UTC"),
                ("prompt_ref", ""),
                ("prompt", "kept text"),
            ],
        )
        .await;
    assert_eq!(refused.status(), 422);
    let refused = refused.text().await.unwrap();
    assert!(refused.contains("Invalid schedule &#34;not cron&#34;"), "{refused}");
    assert!(refused.contains(r#"value="Shouty""#) && refused.contains(">kept text</textarea>"));

    // Variables are taken from the chosen saved prompt only.
    let saved = ada
        .form(
            "/jobs",
            &[
                ("name", "Blockers"),
                ("schedule", "0 9 * * MON"),
                ("time_zone", "Europe/Berlin"),
                ("prompt_ref", "blockers"),
                ("var.blockers.project", "PAY"),
                ("var.release-notes.project", "OTHER"),
                ("prompt", ""),
            ],
        )
        .await;
    assert_eq!(saved.status(), 303);
    let jobs = ada.json("/api/v1/jobs").await;
    assert_eq!(jobs[0]["variables"], json!({"project": "PAY"}));

    let attack = "Say <script>alert(1)</script> and [x](javascript:alert(2))";
    let created = ada
        .form("/jobs", &[("name", "Sneaky"), ("schedule", "*/5 * * * *"), ("prompt_ref", ""), ("prompt", attack)])
        .await;
    assert_eq!(created.status(), 303);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/jobs/") && location.ends_with("?notice=job_created"), "{location}");
    let job = location.trim_start_matches("/jobs/").trim_end_matches("?notice=job_created").to_owned();

    let ran = ada.form(&format!("/jobs/{job}/run"), &[]).await;
    assert_eq!(ran.status(), 303);
    assert_eq!(ran.headers()["location"], format!("/jobs/{job}?notice=run_queued").as_str());
    let queued = ada.get(&format!("/jobs/{job}?notice=run_queued")).await.text().await.unwrap();
    assert!(queued.contains("Run queued."));
    let runs = ada.json(&format!("/api/v1/jobs/{job}/runs")).await;
    let run = runs[0]["id"].as_str().unwrap().to_owned();
    let done = finished_run(&ada, &job, &run).await;
    assert_eq!(done["status"], "succeeded");
    assert!(done["output"].as_str().unwrap().contains("<script>alert(1)</script>"), "the LLM echoed the markup");

    let page = ada.get(&format!("/jobs/{job}")).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("Sneaky") && page.contains("succeeded") && page.contains("You said: Say"), "{page}");
    for active in ["<script>alert", "href=\"javascript:"] {
        assert!(!page.contains(active), "{active} reached the page");
    }
    assert!(page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "the job's own text is shown escaped");
    assert!(!page.contains(r#"hx-trigger="every 2s""#), "no polling once the run ended");
    let partial = ada.get(&format!("/jobs/{job}/runs")).await.text().await.unwrap();
    assert!(partial.starts_with("<section id=\"runs\"") && !partial.contains("<script>alert"));

    let list = ada.get("/jobs").await.text().await.unwrap();
    assert!(list.contains("Sneaky") && list.contains("Blockers") && list.contains("Europe/Berlin"));
    let last = ada.json(&format!("/api/v1/jobs/{job}/runs")).await[0]["status"].as_str().unwrap().to_owned();
    assert!(list.contains(&format!(">{last}</span>")), "the list shows the latest run ({last}): {list}");

    // Pause, resume and delete through the page forms.
    let paused = ada.form(&format!("/jobs/{job}/pause"), &[]).await;
    assert_eq!(paused.headers()["location"], format!("/jobs/{job}?notice=job_paused").as_str());
    let page = ada.get(&format!("/jobs/{job}")).await.text().await.unwrap();
    assert!(page.contains(">Resume<") && page.contains("none while paused"));
    ada.form(&format!("/jobs/{job}/resume"), &[]).await;
    assert_eq!(ada.json(&format!("/api/v1/jobs/{job}")).await["suspended"], false);
    let deleted = ada.form(&format!("/jobs/{job}/delete"), &[]).await;
    assert_eq!(deleted.headers()["location"], "/jobs?notice=job_deleted");
    assert_eq!(ada.get(&format!("/jobs/{job}")).await.status(), 404);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_open_run_is_polled_until_it_ends() {
    let (app, mock) = spawn_chat_app().await;
    mock.push(crate::helpers::Script::Stream {
        pieces: crate::helpers::words("slow answer in several pieces"),
        delay: Duration::from_millis(400),
    });
    let ada = app.user("ada").await;
    let job = personal_job(&ada, "Slow", "take your time").await;
    let run = run_now(&ada, &job).await;
    let page = ada.get(&format!("/jobs/{job}")).await.text().await.unwrap();
    assert!(page.contains(&format!(r#"hx-get="/jobs/{job}/runs" hx-trigger="every 2s""#)), "{page}");
    let done = finished_run(&ada, &job, &run).await;
    assert!(done["output"].as_str().unwrap().ends_with("slow answer in several pieces"), "{done}");
    let partial = ada.get(&format!("/jobs/{job}/runs")).await.text().await.unwrap();
    assert!(!partial.contains("hx-trigger") && partial.contains("slow answer in several pieces"));
    app.stop().await.unwrap();
}

/// A job whose firings fell while promptops was down, as the scheduler finds it on restart.
async fn missed_job(app: &TestApp, id: &str, deadline: Option<i64>) -> String {
    // Hourly, at the minute half an hour from now: its latest firing was ~30 minutes ago,
    // far past a 60 s starting deadline whenever the test runs.
    let minute = (chrono::Utc::now().minute() + 30) % 60;
    let definition = kubernetes_definition(id, id, &format!("{minute} * * * *"), "status?");
    app.state.jobs.apply(JobDefinition { starting_deadline_seconds: deadline, ..definition }).await.unwrap();
    // Down for two hours: the next firing the database holds is long past.
    let due = (chrono::Utc::now() - chrono::Duration::minutes(121)).with_nanosecond(0).unwrap().with_second(0).unwrap();
    sqlx::query("UPDATE scheduled_jobs SET next_run_at = ? WHERE id = ?")
        .bind(due)
        .bind(id)
        .execute(&app.state.db)
        .await
        .unwrap();
    id.to_owned()
}

async fn runs_of(app: &TestApp, job: &str) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("SELECT status, trigger, error FROM job_runs WHERE job_id = ? ORDER BY created_at")
        .bind(job)
        .fetch_all(&app.state.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn missed_firings_run_once_or_are_skipped_past_the_starting_deadline() {
    let (app, mock) = spawn_chat_app().await;
    let lenient = missed_job(&app, "missed-lenient", None).await;
    let strict = missed_job(&app, "missed-strict", Some(60)).await;
    app.scheduler.fire_due().await.unwrap();
    // Two firings were missed; only the latest is made up, as CronJob does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while runs_of(&app, &lenient).await.first().is_none_or(|r| r.0 != "succeeded") {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", runs_of(&app, &lenient).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(runs_of(&app, &lenient).await.len(), 1);
    let skipped = runs_of(&app, &strict).await;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].0, "skipped");
    assert!(skipped[0].2.as_deref().unwrap().contains("startingDeadlineSeconds"), "{skipped:?}");
    assert_eq!(mock.requests(), 1, "the skipped firing never reached the LLM");
    // Both are scheduled again from now on.
    let next: Vec<Option<chrono::DateTime<chrono::Utc>>> =
        sqlx::query_scalar("SELECT next_run_at FROM scheduled_jobs").fetch_all(&app.state.db).await.unwrap();
    assert!(next.iter().all(|n| n.is_some_and(|n| n > chrono::Utc::now())), "{next:?}");
    // Firing again finds nothing due: no firing runs twice.
    app.scheduler.fire_due().await.unwrap();
    assert_eq!(runs_of(&app, &lenient).await.len(), 1);
    app.stop().await.unwrap();
}
