//! Live reload the way Kubernetes delivers a ConfigMap, plus in-place writes and
//! editors' write-then-rename; bad sets are rejected and the last good one stays.

use std::time::Duration;

use promptops::db::repositories::config_reloads;

use crate::helpers::{AppOptions, Layout, config_version, example_config, spawn_app, spawn_app_with, write_files};

const WAIT: Duration = Duration::from_secs(5);

fn system_prompt(app: &crate::helpers::TestApp) -> String {
    app.state.config.current().unwrap().config.prompts.system.clone()
}

#[tokio::test]
async fn a_hundred_kubelet_swaps_in_a_row_are_all_applied() {
    let mut app =
        spawn_app_with(AppOptions { layout: Layout::Kubelet, files: config_version(0), ..AppOptions::default() }).await;
    assert_eq!(app.generation(), Some(1));
    let mut kubelet = app.kubelet.take().unwrap();
    for n in 1..=100 {
        kubelet.swap(&config_version(n));
        app.wait_for_generation(1 + n as u64, WAIT).await;
        assert_eq!(system_prompt(&app), format!("system prompt v{n}"));
    }
    assert_eq!(app.metric("promptops_config_generation").await, 101.0);
    assert_eq!(app.metric("promptops_config_reload_failures_total").await, 0.0);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_broken_swap_keeps_the_last_good_config_and_a_swap_back_applies() {
    let mut app =
        spawn_app_with(AppOptions { layout: Layout::Kubelet, files: config_version(1), ..AppOptions::default() }).await;
    let mut kubelet = app.kubelet.take().unwrap();
    let live_before = app.state.config.current().unwrap();

    // Invalid JSON.
    let mut broken = config_version(2);
    broken[3].1 = "{\"system\": ".into();
    kubelet.swap(&broken);
    let error = app.wait_for_rejection(WAIT).await;
    assert!(error.starts_with("prompts.json: invalid JSON"), "{error}");
    assert_eq!(app.generation(), Some(1));
    assert_eq!(system_prompt(&app), "system prompt v1");
    assert_eq!(app.get("/readyz").await.status(), 200, "the last good config keeps the pod ready");
    assert_eq!(app.metric("promptops_config_reload_failures_total").await, 1.0);

    // A work item that started with generation 1 keeps it whatever happens next.
    assert_eq!(live_before.config.prompts.system, "system prompt v1");

    // Swap back to the good set: applied as a new generation, the rejection cleared.
    kubelet.swap(&config_version(3));
    app.wait_for_generation(2, WAIT).await;
    assert_eq!(system_prompt(&app), "system prompt v3");
    assert!(app.state.config.last_rejected().is_none());
    assert_eq!(live_before.config.prompts.system, "system prompt v1");

    // Every attempt is in the history, newest first.
    let mut conn = app.state.db.acquire().await.unwrap();
    let history = config_reloads::recent(&mut conn, 10).await.unwrap();
    drop(conn);
    let summary: Vec<(Option<i64>, &str)> = history.iter().map(|r| (r.generation, r.outcome.as_str())).collect();
    assert_eq!(summary, [(Some(2), "applied"), (None, "rejected"), (Some(1), "applied")]);
    assert!(history[1].error.as_deref().unwrap().contains("prompts.json"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_swap_that_drops_a_file_is_rejected_naming_the_file() {
    let mut app = spawn_app_with(AppOptions {
        layout: Layout::Kubelet,
        poll_interval: Duration::from_millis(50),
        ..AppOptions::default()
    })
    .await;
    let mut kubelet = app.kubelet.take().unwrap();
    let without_header: Vec<_> = example_config().into_iter().filter(|(n, _)| *n != "header.json").collect();
    kubelet.swap(&without_header);
    let error = app.wait_for_rejection(WAIT).await;
    assert!(error.starts_with("header.json: missing: expected at "), "{error}");
    assert_eq!(app.generation(), Some(1));

    // The poll does not count the same broken set twice.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.state.config.last_rejected().unwrap();
    assert_eq!(app.metric("promptops_config_reload_failures_total").await, 1.0);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn in_place_writes_and_editor_renames_are_applied() {
    let app = spawn_app().await;
    let prompts = |n: usize| config_version(n).remove(3);

    // In place, as `echo > prompts.json` does.
    let (name, content) = prompts(1);
    std::fs::write(app.config_dir.join(name), content).unwrap();
    app.wait_for_generation(2, WAIT).await;
    assert_eq!(system_prompt(&app), "system prompt v1");

    // Write a temp file and rename it over the original, as vim and most editors do.
    let (name, content) = prompts(2);
    let tmp = app.config_dir.join(".prompts.json.swp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, app.config_dir.join(name)).unwrap();
    app.wait_for_generation(3, WAIT).await;
    assert_eq!(system_prompt(&app), "system prompt v2");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_touch_without_change_does_not_bump_the_generation() {
    let app = spawn_app().await;
    write_files(&app.config_dir, &example_config());
    // Let the debounce pass and the reload run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.generation(), Some(1));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn polling_covers_a_directory_that_appears_later() {
    let app = spawn_app_with(AppOptions {
        layout: Layout::Missing,
        poll_interval: Duration::from_millis(100),
        ..AppOptions::default()
    })
    .await;
    assert_eq!(app.generation(), None);
    assert_eq!(app.get("/readyz").await.status(), 503);
    write_files(&app.config_dir, &config_version(7));
    app.wait_for_generation(1, WAIT).await;
    assert_eq!(system_prompt(&app), "system prompt v7");

    // Once the directory exists the poll also sets up the watch.
    write_files(&app.config_dir, &config_version(8));
    app.wait_for_generation(2, WAIT).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn generations_continue_after_a_restart() {
    let first = spawn_app().await;
    write_files(&first.config_dir, &config_version(1));
    first.wait_for_generation(2, WAIT).await;
    let data_dir = first.data_dir.clone();
    let second = spawn_app_with(AppOptions { data_dir: Some(data_dir), ..AppOptions::default() }).await;
    assert_eq!(second.generation(), Some(3));
    second.stop().await.unwrap();
    first.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_directory_is_not_read_again_and_again() {
    // Reading the files raises access events; the watcher must not take them for changes.
    let app = spawn_app().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = app.metric("promptops_config_reads_total").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.metric("promptops_config_reads_total").await, settled, "reads while nothing changed");
    assert!(settled <= 2.0, "start and the re-read after the watch: {settled}");
    app.stop().await.unwrap();
}
