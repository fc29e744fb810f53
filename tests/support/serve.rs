//! The real `promptops` binary as a benchmark runs it: a command with none of the
//! caller's `PROMPTOPS_*` variables, a fresh encryption key, and signing in over the API.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// The binary Cargo built for this benchmark.
pub const BIN: &str = env!("CARGO_BIN_EXE_promptops");

/// `promptops` run in `dir`, without the `PROMPTOPS_*` variables of the caller's shell.
pub fn promptops_command(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(dir);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PROMPTOPS_") {
            command.env_remove(name);
        }
    }
    command
}

/// A fresh key spec (`bench:<base64>`) from `promptops keys generate`.
pub fn generate_key() -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = promptops_command(dir.path()).args(["keys", "generate", "--id", "bench"]).output().unwrap();
    assert!(out.status.success(), "promptops keys generate: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::trim).find(|l| l.starts_with("bench:")).unwrap().to_owned()
}

/// Signs `username` in through `POST /api/v1/auth/login`; returns the session cookie
/// (`promptops_session=…`) and the CSRF token.
pub async fn sign_in(http: &reqwest::Client, base: &str, username: &str, password: &str) -> (String, String) {
    let response = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "login failed");
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.contains("promptops_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = response.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_owned();
    (cookie, csrf)
}
