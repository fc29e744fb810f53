//! The `promptops` binary as an operator runs it: defaults, signals, exit codes.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{example_config, write_files};

const BIN: &str = env!("CARGO_BIN_EXE_promptops");

/// A command with no `PROMPTOPS_*` variable inherited from the test's environment.
pub(crate) fn promptops(cwd: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(cwd);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PROMPTOPS_") {
            command.env_remove(name);
        }
    }
    command
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args(["-s", name, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

pub(crate) async fn wait_ready(port: u16, child: &mut Child) {
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

/// Waits up to 20 s for the child to exit, reading its piped output meanwhile: a child
/// that logs more than a pipe holds (64 KB: the debug log of a first start with every
/// migration) would otherwise block on writing and never exit.
pub(crate) fn wait_exit(mut child: Child) -> Output {
    fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("promptops did not exit in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
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

#[tokio::test]
async fn first_start_prints_a_generated_admin_password_once_and_logs_never_hold_a_token() {
    let dir = tempfile::tempdir().unwrap();
    write_files(&dir.path().join("config"), &example_config());
    // The log goes to a file: at debug and trace level it outgrows a pipe's buffer, and a
    // child blocked on writing its log answers nothing.
    let start = |level: &str| {
        let port = free_port();
        let log = dir.path().join(format!("{level}.log"));
        let child = promptops(dir.path())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--log-level", level])
            .env("PROMPTOPS_BCRYPT_COST", "4")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (port, child, log)
    };
    let (port, mut child, log) = start("debug");
    wait_ready(port, &mut child).await;
    signal(&child, "TERM");
    wait_exit(child);
    let first = std::fs::read_to_string(log).unwrap();
    let line = first.lines().find(|l| l.contains("created the first admin account")).expect("the password line");
    let entry: serde_json::Value = serde_json::from_str(line).unwrap();
    let password = entry["password"].as_str().unwrap().to_owned();
    assert_eq!(password.len(), 20);
    assert!(first.contains("NO ENCRYPTION KEYS CONFIGURED"), "the generated key is announced loudly");
    assert!(dir.path().join("data/encryption.key").exists());

    // Second start: same database, no new password; use it to store a token.
    let (port, mut child, log) = start("trace");
    wait_ready(port, &mut child).await;
    let client = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let login: serde_json::Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = "log-canary-PAT-7f3a9c2e1b";
    let stored = client
        .put(format!("{base}/api/v1/me/credentials/jira"))
        .header("x-csrf-token", login["csrf_token"].as_str().unwrap())
        .json(&serde_json::json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200);
    signal(&child, "TERM");
    wait_exit(child);
    let second = std::fs::read_to_string(log).unwrap();
    assert!(!second.contains("created the first admin account"), "the password is printed on the first start only");
    assert!(second.contains("/api/v1/me/credentials/{service}"), "the request was logged at trace level");
    for log in [&first, &second] {
        assert!(!log.contains(token), "a stored token reached the log");
    }
    assert!(!second.contains(&password), "the admin password is not logged again");
}

#[test]
fn user_add_generates_or_reads_a_password_and_refuses_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("promptops.db").display());
    let add = |args: &[&str], stdin: &str| {
        let mut child = promptops(dir.path())
            .args(["user", "add"])
            .args(args)
            .args(["--database-url", &url, "--bcrypt-cost", "4"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let generated = add(&["grace", "--admin"], "");
    let stdout = String::from_utf8_lossy(&generated.stdout);
    assert!(generated.status.success(), "{stdout}{}", String::from_utf8_lossy(&generated.stderr));
    assert!(stdout.starts_with("created admin user grace\npassword: "), "{stdout}");

    let given = add(&["heidi", "--password-stdin"], "heidi-password-1\n");
    let stdout = String::from_utf8_lossy(&given.stdout);
    assert!(given.status.success());
    assert_eq!(stdout, "created user user heidi\n");

    let duplicate = add(&["Heidi"], "");
    assert_eq!(duplicate.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("a user with this name already exists"));
    let weak = add(&["ivan", "--password-stdin"], "short\n");
    assert_eq!(weak.status.code(), Some(1));
}

#[test]
fn keys_generate_prints_a_usable_key_and_rotate_reseals() {
    let dir = tempfile::tempdir().unwrap();
    let generate = promptops(dir.path()).args(["keys", "generate", "--id", "k2"]).output().unwrap();
    assert!(generate.status.success());
    let new_key = String::from_utf8(generate.stdout).unwrap().trim().to_owned();
    assert!(new_key.starts_with("k2:"), "{new_key}");

    // A database whose token was sealed under the generated key file, then rotated to k2.
    let url = format!("sqlite://{}", dir.path().join("promptops.db").display());
    let rotate = |keys: Option<&str>| {
        let mut command = promptops(dir.path());
        command.args(["keys", "rotate", "--database-url", &url]);
        if let Some(keys) = keys {
            command.env("PROMPTOPS_ENCRYPTION_KEYS", keys);
        }
        command.output().unwrap()
    };
    let nothing = rotate(None);
    assert!(nothing.status.success(), "{}", String::from_utf8_lossy(&nothing.stderr));
    assert!(String::from_utf8_lossy(&nothing.stdout).starts_with("re-sealed 0 token(s) under key local-"));
    let bad = rotate(Some("k2:not-base64"));
    assert_eq!(bad.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&bad.stderr).contains("not-base64"), "key material is never echoed");
}

/// `promptops probe`, the image's health check and `helm test`: 0 on a 2xx, 1 with the
/// reason otherwise (a 503 with its body, a refused connection).
#[tokio::test]
async fn probe_exits_zero_only_on_a_success_answer() {
    let app = crate::helpers::spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let run = |url: String| {
        let mut command = promptops(dir.path());
        command.args(["probe", &url, "--timeout", "3s"]);
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let ok = run(format!("{}/healthz", app.base)).await.unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stderr).contains("200 OK"));

    let missing = run(format!("{}/no-such-page", app.base)).await.unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"), "{}", String::from_utf8_lossy(&missing.stderr));

    let refused = run(format!("http://127.0.0.1:{}/readyz", free_port())).await.unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&refused.stderr).is_empty());

    let bad = promptops(dir.path()).args(["probe", "not a url"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "clap refuses a malformed URL");
}
