//! Benchmark of authenticated API throughput, run with `cargo bench --bench
//! api_throughput` (release build of the real `promptops` binary). Prints figures; asserts
//! nothing about speed.
//!
//! `GET /api/v1/conversations` of a signed-in user with 20 conversations — session cookie
//! opened and checked against its row, the user looked up, the list read from SQLite —
//! against a bare axum handler that returns the same bytes, in the same run, with the same
//! client: 32 keep-alive connections asking as fast as they are answered, in alternating
//! rounds so drift hits both alike. The goal of the performance issue: promptops at 50 %
//! or more of the bare handler's requests per second.
//!
//! `API_BENCH_LOG_LEVEL` (default info) sets promptops' log level.
//!
//! The bare server is this benchmark's own executable started again with
//! `API_BENCH_BARE=<file with the body>`: its own process, as promptops is, so neither
//! shares the client's tokio workers.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

#[allow(dead_code)]
#[path = "../tests/support/configmap.rs"]
mod configmap;
#[path = "../tests/support/serve.rs"]
mod serve;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::header::CONTENT_TYPE;
use serde_json::{Value, json};

const ADMIN_PASSWORD: &str = "bench-admin-password-0123";
const CONVERSATIONS: usize = 20;
const CONNECTIONS: usize = 32;
const ROUNDS: usize = 3;
const ROUND: Duration = Duration::from_secs(4);
const GOAL: f64 = 0.5;

fn main() {
    if let Ok(body) = std::env::var("API_BENCH_BARE") {
        return run_bare(&body);
    }
    tokio::runtime::Runtime::new().unwrap().block_on(bench());
}

/// The baseline: axum on a loopback port answering `GET /api/v1/conversations` with the
/// bytes promptops gave, as JSON; prints its port.
fn run_bare(body_file: &str) {
    let body = axum::body::Bytes::from(std::fs::read(body_file).unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let app = axum::Router::new().route(
            "/api/v1/conversations",
            axum::routing::get(move || {
                let body = body.clone();
                async move { ([(CONTENT_TYPE, "application/json")], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        axum::serve(listener, app).await.unwrap();
    });
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A promptops on a loopback port with `admin` signed in; returns it, its base URL and
/// the session cookie.
async fn start_promptops(http: &reqwest::Client, dir: &Path) -> (Process, String, String, String) {
    configmap::write_files(&dir.join("config"), &configmap::example_config());
    let key = serve::generate_key();
    let port = free_port();
    let child = serve::promptops_command(dir)
        .arg("serve")
        .env("PROMPTOPS_LISTEN", format!("127.0.0.1:{port}"))
        .env("PROMPTOPS_CONFIG_DIR", dir.join("config"))
        .env("PROMPTOPS_DATABASE_URL", format!("sqlite://{}", dir.join("data/promptops.db").display()))
        .env("PROMPTOPS_KEY_FILE", dir.join("data/encryption.key"))
        .env("PROMPTOPS_ENCRYPTION_KEYS", key)
        .env("PROMPTOPS_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("PROMPTOPS_BCRYPT_COST", "4")
        .env("PROMPTOPS_LOG_LEVEL", log_level())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let process = Process(child);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "promptops not ready in 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (cookie, csrf) = serve::sign_in(http, &base, "admin", ADMIN_PASSWORD).await;
    (process, base, cookie, csrf)
}

/// promptops' log level: `API_BENCH_LOG_LEVEL`, default info (a line per request, as
/// installs run it; the lines go to /dev/null).
fn log_level() -> String {
    std::env::var("API_BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into())
}

fn start_bare(body_file: &Path) -> (Process, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("API_BENCH_BARE", body_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    (Process(child), format!("http://127.0.0.1:{}", line.trim()))
}

struct Round {
    requests: usize,
    errors: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

/// `CONNECTIONS` loops asking `url` for `ROUND`.
async fn round(url: &str, cookie: &str) -> Round {
    let http = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (http, stop, url, cookie) = (http.clone(), stop.clone(), url.to_owned(), cookie.to_owned());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0);
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let ok = match http.get(&url).header("cookie", &cookie).send().await {
                        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        latencies.push(sent.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    tokio::time::sleep(ROUND).await;
    stop.store(true, Ordering::Relaxed);
    let mut out = Round { requests: 0, errors: 0, latencies: Vec::new(), elapsed: Duration::ZERO };
    for worker in workers {
        let (latencies, errors) = worker.await.unwrap();
        out.requests += latencies.len();
        out.errors += errors;
        out.latencies.extend(latencies);
    }
    out.elapsed = began.elapsed();
    out
}

fn pct(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples.get(((samples.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default()
}

async fn bench() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (_promptops, base, cookie, csrf) = start_promptops(&http, dir.path()).await;
    for n in 0..CONVERSATIONS {
        let created = http
            .post(format!("{base}/api/v1/conversations"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .json(&json!({"title": format!("Weekly blockers of PAY, part {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    let url = format!("{base}/api/v1/conversations");
    let body = http.get(&url).header("cookie", &cookie).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(serde_json::from_slice::<Vec<Value>>(&body).unwrap().len(), CONVERSATIONS);
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, &body).unwrap();
    let (_bare, bare_base) = start_bare(&body_file);
    let bare_url = format!("{bare_base}/api/v1/conversations");

    println!(
        "api_throughput: GET /api/v1/conversations ({CONVERSATIONS} conversations, {} bytes), {CONNECTIONS} connections, {ROUNDS} rounds of {ROUND:?} each, promptops log level {}",
        body.len(),
        log_level()
    );
    // Warm both up.
    round(&url, &cookie).await;
    round(&bare_url, "").await;
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(round(&url, &cookie).await);
        bare.push(round(&bare_url, "").await);
    }
    let summary = |name: &str, rounds: &mut [Round]| -> f64 {
        let requests: usize = rounds.iter().map(|r| r.requests).sum();
        let errors: usize = rounds.iter().map(|r| r.errors).sum();
        let seconds: f64 = rounds.iter().map(|r| r.elapsed.as_secs_f64()).sum();
        let mut latencies: Vec<Duration> = rounds.iter_mut().flat_map(|r| r.latencies.drain(..)).collect();
        let rate = requests as f64 / seconds;
        println!(
            "  {name:<22} {rate:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {errors}",
            pct(&mut latencies, 0.5).as_secs_f64() * 1e3,
            pct(&mut latencies, 0.99).as_secs_f64() * 1e3
        );
        rate
    };
    let ours_rate = summary("promptops", &mut ours);
    let bare_rate = summary("bare axum handler", &mut bare);
    let ratio = ours_rate / bare_rate;
    println!(
        "  promptops / bare: {:.0} % (goal ≥ {:.0} %: {})",
        ratio * 100.0,
        GOAL * 100.0,
        if ratio >= GOAL { "met" } else { "not met" }
    );
}
