//! `/healthz`, `/readyz`, `/metrics`, request ids and the JSON 404.

use std::time::Duration;

use crate::helpers::{AppOptions, example_config, spawn_app, spawn_app_with, write_files};

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_is_green_with_a_migrated_database_and_a_valid_config() {
    let app = spawn_app().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok"}));

    let verbose = app.get("/readyz?verbose").await;
    assert_eq!(verbose.status(), 200);
    assert_eq!(verbose.text().await.unwrap(), "[+]database ok\n[+]config ok\nreadyz check passed\n");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_fails_until_a_valid_config_arrives() {
    let mut files = example_config();
    files[0].1 = "{ not json".into();
    let app = spawn_app_with(AppOptions { files, ..AppOptions::default() }).await;

    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    let failed = body["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{body}");
    assert_eq!(failed[0]["check"], "config");

    let verbose = app.get("/readyz?verbose").await.text().await.unwrap();
    assert!(verbose.starts_with("[+]database ok\n[-]config failed: "), "{verbose}");
    assert!(verbose.ends_with("readyz check failed\n"), "{verbose}");

    write_files(&app.config_dir, &example_config());
    app.wait_for_generation(1, Duration::from_secs(5)).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn readyz_fails_on_an_unmigrated_database_until_it_is_migrated() {
    // A database migrated by another process first, so the app can start without migrating.
    let data = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", data.path().join("promptops.db").display());
    let pool = promptops::db::connect(&url).await.unwrap();
    promptops::db::migrate(&pool).await.unwrap();
    let app = spawn_app_with(AppOptions {
        skip_migrations: true,
        data_dir: Some(data.path().to_path_buf()),
        ..AppOptions::default()
    })
    .await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    // Forget the bookkeeping: the binary now expects migrations the file lacks.
    sqlx::query("DELETE FROM _promptops_migrations").execute(&pool).await.unwrap();
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["failed"][0]["check"], "database");
    assert!(body["failed"][0]["message"].as_str().unwrap().contains("promptops migrate"), "{body}");
    pool.close().await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn request_ids_are_kept_or_made() {
    let app = spawn_app().await;
    let given =
        app.client.get(format!("{}/healthz", app.base)).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-me-42");

    let made = app.get("/healthz").await;
    let id = made.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID, got {id}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_routes_answer_404_as_json_under_the_api_and_as_a_page_elsewhere() {
    let app = spawn_app().await;
    let api = app.get("/api/v1/no/such/thing").await;
    assert_eq!(api.status(), 404);
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let page = app.get("/no/such/thing").await;
    assert_eq!(page.status(), 404);
    assert!(page.text().await.unwrap().contains("Page not found"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_are_in_prometheus_text_format() {
    let app = spawn_app().await;
    app.get("/healthz").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.text().await.unwrap();
    assert!(text.contains("# TYPE promptops_config_generation gauge"), "{text}");
    assert!(text.contains("promptops_config_reload_failures_total 0"), "{text}");
    assert!(text.contains(r#"promptops_http_requests_total{method="GET",route="/healthz",status="200"} 1"#), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(app.metric("promptops_config_generation").await, 1.0);
    app.stop().await.unwrap();
}
