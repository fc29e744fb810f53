//! Housekeeping (config.json `maintenance`): what each task removes or writes, run through
//! the admin API against a real SQLite file.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use sqlx::SqlitePool;

use crate::helpers::{AppOptions, TestApp, edited_config, spawn_app_with};
use crate::jobs::personal_job;

/// An app whose tasks run only when asked, with these retention windows and backups.
async fn app(retention_days: u32, keep: u32) -> TestApp {
    let files = edited_config(|config| {
        config["maintenance"] = json!({
            "retention": {"schedule": "", "conversations_days": retention_days, "job_runs_days": retention_days,
                          "audit_days": retention_days, "config_history_days": retention_days},
            "sessions": {"schedule": ""},
            "optimize": {"schedule": ""},
            "backup": {"schedule": "", "dir": "backups", "keep": keep},
        });
    });
    spawn_app_with(AppOptions { files, ..AppOptions::default() }).await
}

async fn ids(db: &SqlitePool, sql: &'static str) -> Vec<String> {
    sqlx::query_scalar::<_, String>(sql).fetch_all(db).await.unwrap()
}

#[tokio::test]
async fn retention_removes_exactly_what_is_older_than_its_window_and_nothing_else() {
    let app = app(30, 7).await;
    let admin = app.admin().await;
    let db = &app.state.db;
    let now = Utc::now();
    let (old, recent): (DateTime<Utc>, DateTime<Utc>) =
        (now - Duration::days(30) - Duration::minutes(5), now - Duration::days(30) + Duration::minutes(5));

    // Conversations: one untouched for just over 30 days (with a message), one just under.
    for (title, at) in [("old", old), ("recent", recent)] {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO conversations (user_id, title, created_at, updated_at) VALUES (1, ?, ?, ?) RETURNING id",
        )
        .bind(title)
        .bind(at)
        .bind(at)
        .fetch_one(db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO messages (conversation_id, role, content, status, created_at, finished_at) \
             VALUES (?, 'user', ?, 'complete', ?, ?)",
        )
        .bind(id)
        .bind(format!("{title} question"))
        .bind(at)
        .bind(at)
        .execute(db)
        .await
        .unwrap();
    }
    // Audit entries either side of the window.
    for (action, at) in [("old.action", old), ("recent.action", recent)] {
        sqlx::query("INSERT INTO audit_log (occurred_at, action, outcome) VALUES (?, ?, 'success')")
            .bind(at)
            .bind(action)
            .execute(db)
            .await
            .unwrap();
    }
    // Job runs: two old ones and a recent one of one job; a second job whose only run is
    // old (it stays: its status shows it).
    let busy = personal_job(&admin, "busy", "hi").await;
    let quiet = personal_job(&admin, "quiet", "hi").await;
    for (id, job, at) in
        [("run-old-1", &busy, old), ("run-old-2", &busy, old), ("run-recent", &busy, recent), ("run-last", &quiet, old)]
    {
        sqlx::query(
            "INSERT INTO job_runs (id, job_id, idempotency_key, trigger, scheduled_for, status, started_at, finished_at, created_at) \
             VALUES (?, ?, ?, 'manual', ?, 'succeeded', ?, ?, ?)",
        )
        .bind(id)
        .bind(job)
        .bind(id)
        .bind(at)
        .bind(at)
        .bind(at)
        .bind(at)
        .execute(db)
        .await
        .unwrap();
    }
    // Config reloads: an old rejected one goes; the app's own (latest applied) stays.
    sqlx::query("INSERT INTO config_reloads (sha256, outcome, error, occurred_at) VALUES ('x', 'rejected', 'bad', ?)")
        .bind(old)
        .execute(db)
        .await
        .unwrap();
    let reloads_before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM config_reloads").fetch_one(db).await.unwrap();

    let response = admin.post("/api/v1/admin/maintenance/retention", &json!({})).await;
    assert_eq!(response.status(), 200);
    let ran: serde_json::Value = response.json().await.unwrap();
    assert_eq!(ran["outcome"], "succeeded", "{ran}");
    assert_eq!(
        ran["detail"], "deleted 1 conversations, 2 job runs, 1 audit entries, 1 config reloads",
        "the counts of what went"
    );

    assert_eq!(ids(db, "SELECT title FROM conversations").await, ["recent"]);
    assert_eq!(
        ids(db, "SELECT content FROM messages").await,
        ["recent question"],
        "messages go with their conversation"
    );
    let actions = ids(db, "SELECT action FROM audit_log WHERE action LIKE '%.action'").await;
    assert_eq!(actions, ["recent.action"]);
    let mut runs = ids(db, "SELECT id FROM job_runs").await;
    runs.sort();
    assert_eq!(runs, ["run-last", "run-recent"]);
    let reloads_after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM config_reloads").fetch_one(db).await.unwrap();
    assert_eq!(reloads_after, reloads_before - 1);

    // The run is on record for the admin page, the API, the audit log and metrics.
    let tasks = admin.json("/api/v1/admin/maintenance").await;
    let retention = tasks.as_array().unwrap().iter().find(|t| t["task"] == "retention").unwrap();
    assert_eq!(retention["last_outcome"], "succeeded");
    assert_eq!(retention["schedule"], "");
    assert!(retention["running_on"].is_null());
    let page = admin.get("/admin/config").await.text().await.unwrap();
    assert!(page.contains("deleted 1 conversations, 2 job runs"), "the config page shows the last run");
    let audit = admin.json("/api/v1/admin/audit?action=maintenance.run").await.to_string();
    assert!(audit.contains("retention"), "{audit}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"promptops_maintenance_runs_total{task="retention",outcome="succeeded"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"promptops_maintenance_duration_seconds{task="retention"}"#));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn backups_are_checked_copies_and_only_the_newest_are_kept() {
    let app = app(0, 2).await;
    let admin = app.admin().await;
    let retention = admin.post("/api/v1/admin/maintenance/retention", &json!({})).await;
    let ran: serde_json::Value = retention.json().await.unwrap();
    assert_eq!(ran["detail"], "every window is 0 days: nothing to delete");
    for _ in 0..3 {
        let ran: serde_json::Value =
            admin.post("/api/v1/admin/maintenance/backup", &json!({})).await.json().await.unwrap();
        assert_eq!(ran["outcome"], "succeeded", "{ran}");
        assert!(ran["detail"].as_str().unwrap().contains("integrity ok"), "{ran}");
    }
    let dir = app.data_dir.join("backups");
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 2, "keep 2: {names:?}");
    let checked = promptops::db::backup::check(&dir.join(&names[1])).await.unwrap();
    assert_eq!(checked.behind, 0);

    for task in ["sessions", "optimize"] {
        let ran: serde_json::Value =
            admin.post(&format!("/api/v1/admin/maintenance/{task}"), &json!({})).await.json().await.unwrap();
        assert_eq!(ran["outcome"], "succeeded", "{task}: {ran}");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_task_another_replica_holds_is_refused_and_only_admins_may_run_tasks() {
    let app = app(0, 7).await;
    let admin = app.admin().await;
    let until = Utc::now() + Duration::minutes(30);
    sqlx::query("INSERT INTO maintenance_tasks (task, holder, lease_until) VALUES ('optimize', 'replica-b', ?)")
        .bind(until)
        .execute(&app.state.db)
        .await
        .unwrap();
    let refused = admin.post("/api/v1/admin/maintenance/optimize", &json!({})).await;
    assert_eq!(refused.status(), 409);
    assert!(refused.text().await.unwrap().contains("optimize is running on another replica"));
    let tasks = admin.json("/api/v1/admin/maintenance").await;
    let optimize = tasks.as_array().unwrap().iter().find(|t| t["task"] == "optimize").unwrap().clone();
    assert_eq!(optimize["running_on"], "replica-b");

    assert_eq!(admin.post("/api/v1/admin/maintenance/vacuum-everything", &json!({})).await.status(), 404);
    let user = app.user("uma").await;
    assert_eq!(user.post("/api/v1/admin/maintenance/backup", &json!({})).await.status(), 403);
    assert_eq!(user.get("/api/v1/admin/maintenance").await.status(), 403);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_invalid_schedule_or_keep_is_refused_with_its_place() {
    let files = edited_config(|config| {
        config["maintenance"] = json!({"backup": {"schedule": "0 3 * *", "keep": 0}});
    });
    let app = spawn_app_with(AppOptions { files, ..AppOptions::default() }).await;
    let reason = app.wait_for_rejection(std::time::Duration::from_secs(5)).await;
    assert!(reason.contains("maintenance.backup.schedule") && reason.contains("five fields"), "{reason}");
    assert!(reason.contains("maintenance.backup.keep: must be at least 1"), "{reason}");
    app.stop().await.unwrap();
}
