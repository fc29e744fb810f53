//! The `promptops` binary as an operator runs it: defaults, signals, exit codes.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{example_config, write_files};

const BIN: &str = env!("CARGO_BIN_EXE_promptops");

/// A command with no `PROMPTOPS_*` variable inherited from the test's environment.
fn promptops(cwd: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(cwd);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PROMPTOPS_") {
            command.env_remove(name);
        }
    }
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args(["-s", name, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

async fn wait_ready(port: u16, child: &mut Child) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await
            && response.status() == 200
        {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "promptops exited before it was ready");
        assert!(Instant::now() < deadline, "promptops not ready in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn wait_exit(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "promptops did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn serve_on_embedded_defaults_becomes_ready_and_stops_cleanly_on_sigterm() {
    // A fresh checkout: the example config/ and nothing else, no variable set.
    let dir = tempfile::tempdir().unwrap();
    write_files(&dir.path().join("config"), &example_config());
    let port = free_port();
    let mut child = promptops(dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(port, &mut child).await;
    assert!(dir.path().join("data/promptops.db").exists(), "the default database file is created");

    signal(&child, "TERM");
    let output = wait_exit(child);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {:?}\n{log}", output.status);
    for line in log.lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        assert!(entry["level"].is_string() && entry["message"].is_string(), "{line}");
    }
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("promptops stopped"), "{log}");
}

#[tokio::test]
async fn sigint_also_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    write_files(&dir.path().join("config"), &example_config());
    let port = free_port();
    let mut child = promptops(dir.path())
        .args(["serve", "--log-format", "text"])
        .env("PROMPTOPS_LISTEN", format!("127.0.0.1:{port}"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(port, &mut child).await;
    signal(&child, "INT");
    let output = wait_exit(child);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn serve_exits_non_zero_when_it_cannot_listen() {
    let dir = tempfile::tempdir().unwrap();
    write_files(&dir.path().join("config"), &example_config());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let output =
        promptops(dir.path()).args(["serve", "--listen", &taken.local_addr().unwrap().to_string()]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("cannot listen on"), "{log}");
}

#[test]
fn migrate_creates_and_migrates_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("nested/db/promptops.db").display());
    let run = || promptops(dir.path()).args(["migrate", "--database-url", &url]).output().unwrap();
    let first = run();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(dir.path().join("nested/db/promptops.db").exists());
    let again = run();
    assert!(again.status.success(), "migrating twice is a no-op");
}

#[test]
fn config_check_reports_ok_or_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &example_config());
    let ok = promptops(dir.path()).args(["config", "check", "."]).output().unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}");
    assert!(stdout.starts_with("config OK: . (sha256 "), "{stdout}");
    assert!(stdout.contains("endpoints:   local (default)"), "{stdout}");
    assert!(stdout.contains("prompts:     blockers, release-notes"), "{stdout}");

    std::fs::write(dir.path().join("header.json"), r#"{"local": {"Authorization": "Bearer sk-inline"}}"#).unwrap();
    std::fs::remove_file(dir.path().join("prompts.json")).unwrap();
    let bad = promptops(dir.path()).args(["config", "check", "."]).output().unwrap();
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("config INVALID: 1 problem(s) in ."), "{stdout}");
    assert!(stdout.contains("prompts.json: missing"), "{stdout}");
}

#[test]
fn bad_settings_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let output = promptops(dir.path()).args(["serve", "--config-debounce", "soon"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid value 'soon' for '--config-debounce"), "{stderr}");
}
