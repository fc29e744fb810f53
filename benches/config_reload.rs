//! Benchmark of the foundation, run with `cargo bench --bench config_reload` (release
//! build of the real binary). Prints figures; asserts nothing about speed.
//!
//! 1. Start-up: process spawn to `/healthz` 200 and to `/readyz` 200, against the cost of
//!    merely executing the binary (`promptops --version`) measured in the same run.
//! 2. Live reload: time from kubelet's `..data` rename to the new generation showing in
//!    `/metrics`, over 100 swaps, against the configured debounce window.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/support/configmap.rs"]
mod configmap;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use configmap::{KubeletDir, config_version, example_config, write_files};

const BIN: &str = env!("CARGO_BIN_EXE_promptops");
const STARTS: usize = 20;
const SWAPS: usize = 100;
const DEBOUNCE: Duration = Duration::from_millis(100);

fn promptops(cwd: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(cwd).stdout(Stdio::null()).stderr(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PROMPTOPS_") {
            command.env_remove(name);
        }
    }
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn until_ok(client: &reqwest::Client, url: &str) {
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

struct Stats {
    median: Duration,
    p90: Duration,
    max: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats { median: at(0.5), p90: at(0.9), max: at(1.0) }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn startup(client: &reqwest::Client) {
    let mut exec = Vec::new();
    let mut healthy = Vec::new();
    let mut ready = Vec::new();
    let mut restarted = Vec::new();
    for _ in 0..STARTS {
        let start = Instant::now();
        let status = promptops(Path::new(".")).arg("--version").status().unwrap();
        assert!(status.success());
        exec.push(start.elapsed());

        // A fresh data dir each time: the database is created and migrated in the measure.
        let dir = tempfile::tempdir().unwrap();
        write_files(&dir.path().join("config"), &example_config());
        let port = free_port();
        let start = Instant::now();
        let child = promptops(dir.path()).args(["serve", "--listen", &format!("127.0.0.1:{port}")]).spawn().unwrap();
        until_ok(client, &format!("http://127.0.0.1:{port}/healthz")).await;
        healthy.push(start.elapsed());
        until_ok(client, &format!("http://127.0.0.1:{port}/readyz")).await;
        ready.push(start.elapsed());
        stop(child);

        // The same data again: a restart, the usual case for a pod.
        let start = Instant::now();
        let child = promptops(dir.path()).args(["serve", "--listen", &format!("127.0.0.1:{port}")]).spawn().unwrap();
        until_ok(client, &format!("http://127.0.0.1:{port}/readyz")).await;
        restarted.push(start.elapsed());
        stop(child);
    }
    let (exec, healthy, ready, restarted) = (stats(exec), stats(healthy), stats(ready), stats(restarted));
    println!(
        "start-up over {STARTS} runs (a first start creates the database, migrates, and hashes the admin password at bcrypt cost 12)"
    );
    println!("  {:<34} {:>10} {:>10} {:>10}", "", "median", "p90", "max");
    for (name, s) in [
        ("exec `promptops --version` (base)", &exec),
        ("spawn -> /healthz 200", &healthy),
        ("spawn -> /readyz 200", &ready),
        ("restart -> /readyz 200", &restarted),
    ] {
        println!("  {name:<34} {:>10} {:>10} {:>10}", ms(s.median), ms(s.p90), ms(s.max));
    }
    println!(
        "  first start /readyz median is {:.1}x the bare exec; a restart {:.1}x",
        ready.median.as_secs_f64() / exec.median.as_secs_f64(),
        restarted.median.as_secs_f64() / exec.median.as_secs_f64()
    );
}

async fn generation(client: &reqwest::Client, url: &str) -> Option<u64> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix("promptops_config_generation ")).and_then(|v| v.trim().parse().ok())
}

async fn swaps(client: &reqwest::Client) {
    let dir = tempfile::tempdir().unwrap();
    let mut kubelet = KubeletDir::create(&dir.path().join("config"), &config_version(0));
    let port = free_port();
    let child = promptops(dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("PROMPTOPS_CONFIG_DEBOUNCE", format!("{}ms", DEBOUNCE.as_millis()))
        .spawn()
        .unwrap();
    until_ok(client, &format!("http://127.0.0.1:{port}/readyz")).await;
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let mut samples = Vec::with_capacity(SWAPS);
    for n in 1..=SWAPS {
        let start = Instant::now();
        kubelet.swap(&config_version(n));
        let expected = 1 + n as u64;
        loop {
            if generation(client, &metrics).await == Some(expected) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "swap {n} never applied");
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        samples.push(start.elapsed());
    }
    stop(child);
    let s = stats(samples);
    println!("live reload over {SWAPS} kubelet `..data` swaps (debounce {})", ms(DEBOUNCE));
    println!("  swap -> new generation live: median {}, p90 {}, max {}", ms(s.median), ms(s.p90), ms(s.max));
    println!(
        "  median is {:.2}x the debounce window (1.00x = no cost beyond waiting for quiet)",
        s.median.as_secs_f64() / DEBOUNCE.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; anything else (a filter) is not supported here.
    let client = reqwest::Client::new();
    startup(&client).await;
    swaps(&client).await;
}
