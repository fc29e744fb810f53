//! Benchmark of streaming chat, run with `cargo bench --bench chat_stream` (release build
//! of the real `promptops` binary). Prints figures; asserts nothing about speed.
//!
//! 1. Time to first token (TTFT) of a new answer while 1, 50 or 200 streams are open
//!    (the others drip tokens in the background), side by side in the same run against
//!    the same mock LLM: directly at the mock, through promptops (POST message → 202 →
//!    SSE `token`), through promptops in one request (the POST with `Accept:
//!    text/event-stream` answers with the stream), and through the LiteLLM proxy as a
//!    peer. promptops' overhead = through − direct, next to the goals.
//! 2. Open streams and memory: a fresh promptops holds 1,000 then 10,000 answers that drip
//!    one token a second; its resident memory (VmRSS) against an idle baseline.
//!
//! The mock LLM (tests/support/mock_llm.rs) runs in a separate process: this benchmark's
//! own executable, started again with `CHAT_STREAM_MOCK=1`. On 2 cores an in-process mock
//! would share the client's tokio workers, so a client timestamp could wait behind mock
//! work in a run queue the kernel cannot preempt, and the mock's CPU and memory could not
//! be told apart from the client's; as its own process the kernel schedules it and /proc
//! accounts for it. Direct, promptops and LiteLLM all pay the same mock hop.
//!
//! Environment: `PROMPTOPS_BENCH_LITELLM` = path of a `litellm` executable, or `off` to
//! skip the peer (default: `scripts/bench-peers litellm`, which installs it once);
//! `CHAT_STREAM_PARTS` (default `1,2`); `CHAT_STREAM_BG_GAP_MS` (default 50) = pause
//! between background tokens in part 1; `CHAT_STREAM_DRIP_MS` (default 1000) = pause
//! between tokens of part 2; `CHAT_STREAM_HOLD` (default `1000,10000`) = targets of part 2.
//! Each stream holds two sockets in promptops (the browser's and the LLM's), so a hard
//! open-files limit of 20,000 (`ulimit -Hn`) caps it below 10,000; `9900` fits.
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr, clippy::large_futures)]

#[allow(dead_code)]
#[path = "../tests/support/configmap.rs"]
mod configmap;
#[path = "../tests/support/mock_llm.rs"]
mod mock_llm;
#[path = "../tests/support/serve.rs"]
mod serve;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const ADMIN_PASSWORD: &str = "bench-admin-password-0123";
/// Open streams at which TTFT is measured: one probe plus the rest in the background.
const LEVELS: [usize; 3] = [1, 50, 200];
/// Direct, promptops and LiteLLM take turns block by block, so drift hits all alike.
const BLOCKS: usize = 2;
const PROBES_PER_BLOCK: usize = 150;
const PROBE_BUDGET: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the background streams of a block may take to open, and to close after it.
const BG_OPEN_BUDGET: Duration = Duration::from_secs(10);
const BG_CLOSE_BUDGET: Duration = Duration::from_secs(15);
/// Background answers: long enough to outlast a block; cancelled at its end.
const BG_TOKENS: usize = 400;
/// Goals of the chat issue, at 200 streams.
const GOAL_P50: Duration = Duration::from_millis(1);
const GOAL_P99: Duration = Duration::from_millis(3);
const GOAL_STREAMS: usize = 10_000;
const GOAL_RSS_MB: f64 = 300.0;
/// Part 2: opens in flight at once, time to reach a target, settle and sampling window.
const OPENING: usize = 400;
const RAMP_BUDGET: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(3);
const WINDOW: Duration = Duration::from_secs(5);
/// Tokens of a held answer in part 2: at one a second none ends during the run.
const HOLD_TOKENS: usize = 600;
const QUESTION: &str = "How many open blockers does project PAY have, and who owns the oldest one?";
const LLM_KEY: &str = "bench-llm-key";

/// A request body serialised once, so no target pays for client-side serialisation.
type Body = Arc<[u8]>;

fn main() {
    if std::env::var_os("CHAT_STREAM_MOCK").is_some() {
        run_mock();
        return;
    }
    let started = Instant::now();
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(bench());
    println!("\ntotal run time {:.0} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------- the mock process

/// The mock LLM as a child process with three servers: `fast` echoes the question with no
/// delay (probes), `bg` drips a long answer (part 1's background), `hold` drips one token
/// a second (part 2). Prints the three base URLs on one line; answers `stats` on stdin
/// with the open streams and requests of each; exits when stdin closes.
fn run_mock() {
    let bg_gap = Duration::from_millis(env_u64("CHAT_STREAM_BG_GAP_MS", 50));
    let drip = Duration::from_millis(env_u64("CHAT_STREAM_DRIP_MS", 1000));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let servers = runtime.block_on(async {
        let tokens = |n: usize| (0..n).map(|i| format!("t{i} ")).collect::<Vec<_>>();
        [
            mock_llm::MockLlm::start_with_default(mock_llm::Script::Echo { delay: Duration::ZERO }).await,
            mock_llm::MockLlm::start_with_default(mock_llm::Script::Stream {
                pieces: tokens(BG_TOKENS),
                delay: bg_gap,
            })
            .await,
            mock_llm::MockLlm::start_with_default(mock_llm::Script::Stream {
                pieces: tokens(HOLD_TOKENS),
                delay: drip,
            })
            .await,
        ]
    });
    println!("{} {} {}", servers[0].base, servers[1].base, servers[2].base);
    std::io::stdout().flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "stats" {
            let open: Vec<String> = servers.iter().map(|s| s.open_streams().to_string()).collect();
            let requests: Vec<String> = servers.iter().map(|s| s.requests().to_string()).collect();
            println!("{} {}", open.join(" "), requests.join(" "));
            std::io::stdout().flush().unwrap();
        }
    }
    drop(runtime);
}

struct Mock {
    proc: Proc,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    fast: String,
    bg: String,
    hold: String,
}

/// Open streams and requests served, per mock server.
#[derive(Clone, Copy)]
struct MockStats {
    open: [usize; 3],
    requests: [usize; 3],
}

impl Mock {
    fn start(bg_gap_ms: u64, drip_ms: u64) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("CHAT_STREAM_MOCK", "1")
            .env("CHAT_STREAM_BG_GAP_MS", bg_gap_ms.to_string())
            .env("CHAT_STREAM_DRIP_MS", drip_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let bases: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        Self {
            proc: Proc::new("mock", child, false),
            io: Mutex::new((stdin, stdout)),
            fast: bases[0].clone(),
            bg: bases[1].clone(),
            hold: bases[2].clone(),
        }
    }

    fn stats(&self) -> MockStats {
        let mut io = self.io.lock().unwrap();
        writeln!(io.0, "stats").unwrap();
        io.0.flush().unwrap();
        let mut line = String::new();
        io.1.read_line(&mut line).unwrap();
        let v: Vec<usize> = line.split_whitespace().map(|n| n.parse().unwrap()).collect();
        MockStats { open: [v[0], v[1], v[2]], requests: [v[3], v[4], v[5]] }
    }

    /// Waits (bounded) until the background server has no stream open.
    async fn bg_quiet(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.stats().open[1] > 0 {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

// ---------------------------------------------------------------- processes and /proc

/// A child this benchmark started; stopped by its PID (or its own process group) on drop.
struct Proc {
    name: &'static str,
    child: Child,
    group: bool,
}

impl Proc {
    fn new(name: &'static str, child: Child, group: bool) -> Self {
        Self { name, child, group }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let target = if self.group { format!("-{}", self.pid()) } else { self.pid().to_string() };
        let _ = Command::new("kill").args(["-s", "TERM", "--", &target]).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("chat_stream: {} (pid {}) ignored SIGTERM for 10 s; SIGKILL", self.name, self.pid());
        let _ = Command::new("kill").args(["-s", "KILL", "--", &target]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn rss_mb(pid: u32) -> f64 {
    proc_status(pid, "VmRSS").unwrap_or(0) as f64 / 1024.0
}

fn hwm_mb(pid: u32) -> f64 {
    proc_status(pid, "VmHWM").unwrap_or(0) as f64 / 1024.0
}

/// utime + stime of a process or thread, in clock ticks, and its `comm`.
fn stat_ticks(path: &str) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (open, close) = (text.find('(')?, text.rfind(')')?);
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 2..].split(' ').collect();
    // fields[0] is proc(5)'s field 3 (state): utime is field 14, stime 15.
    Some((comm, fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?))
}

fn cpu_ticks(pid: u32) -> u64 {
    stat_ticks(&format!("/proc/{pid}/stat")).map_or(0, |(_, t)| t)
}

/// CPU ticks per kind of thread: tokio (workers and blocking pool), SQLite connection
/// threads (sqlx runs each connection on its own thread), the rest.
fn thread_ticks(pid: u32) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in tasks.flatten() {
        if let Some((comm, ticks)) = stat_ticks(&format!("{}/stat", task.path().display())) {
            let kind = if comm.starts_with("tokio") {
                "tokio"
            } else if comm.starts_with("sqlx-sqlite") {
                "sqlite"
            } else {
                "other"
            };
            *out.entry(kind).or_default() += ticks;
        }
    }
    out
}

/// Voluntary + involuntary context switches over all threads.
fn ctx_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

fn count_dir(path: String) -> usize {
    std::fs::read_dir(path).map_or(0, Iterator::count)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Raises this process's open-files soft limit to its hard limit (children inherit it).
fn raise_nofile() -> (u64, u64) {
    let read = || {
        let text = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let line = text.lines().find(|l| l.starts_with("Max open files")).unwrap_or_default().to_owned();
        let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        (nums.first().copied().unwrap_or(0), nums.get(1).copied().unwrap_or(0))
    };
    let (soft, hard) = read();
    if soft < hard {
        let _ = Command::new("prlimit")
            .args(["--pid", &std::process::id().to_string(), &format!("--nofile={hard}:{hard}")])
            .status();
    }
    read()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A snapshot of the CPU time of every process in the run, and promptops' threads.
struct Cpu {
    at: Instant,
    client: u64,
    mock: u64,
    promptops: u64,
    litellm: u64,
    threads: BTreeMap<&'static str, u64>,
    switches: u64,
}

struct Pids {
    mock: u32,
    promptops: u32,
    litellm: Option<u32>,
}

impl Cpu {
    fn now(pids: &Pids) -> Self {
        Self {
            at: Instant::now(),
            client: cpu_ticks(std::process::id()),
            mock: cpu_ticks(pids.mock),
            promptops: cpu_ticks(pids.promptops),
            litellm: pids.litellm.map_or(0, cpu_ticks),
            threads: thread_ticks(pids.promptops),
            switches: ctx_switches(pids.promptops),
        }
    }

    /// Cores used between two snapshots: client, mock, promptops (tokio, sqlite, other), litellm.
    fn cores(&self, later: &Self, hz: f64) -> String {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let c = |a: u64, b: u64| b.saturating_sub(a) as f64 / hz / secs;
        let threads: Vec<String> = later
            .threads
            .iter()
            .map(|(k, v)| format!("{k} {:.2}", c(self.threads.get(k).copied().unwrap_or(0), *v)))
            .collect();
        format!(
            "client {:.2}, mock {:.2}, promptops {:.2} ({}; {:.0} context switches/s), litellm {:.2}",
            c(self.client, later.client),
            c(self.mock, later.mock),
            c(self.promptops, later.promptops),
            threads.join(", "),
            later.switches.saturating_sub(self.switches) as f64 / secs,
            c(self.litellm, later.litellm)
        )
    }
}

// ---------------------------------------------------------------- promptops

struct Promptops {
    proc: Proc,
    base: String,
    cookie: String,
    csrf: String,
    dir: tempfile::TempDir,
}

/// The example config set with the limits raised for load, no MCP servers (tools are not
/// measured here), `local` at PROMPTOPS_LLM_BASE_URL and a second endpoint `drip` at
/// `drip_base`, picked by the prompt `bench-drip`.
fn bench_config(drip_base: &str) -> Vec<(&'static str, String)> {
    let mut files = configmap::example_config();
    for (name, content) in &mut files {
        let mut value: Value = serde_json::from_str(content).unwrap();
        match *name {
            "config.json" => {
                value["limits"] = json!({
                    "requests_per_minute": 10_000_000, "concurrent_generations": 1_000_000, "max_message_chars": 100_000,
                });
                value["mcp_servers"] = json!({});
                let default = value["default_endpoint"].as_str().unwrap().to_owned();
                let endpoint = &mut value["endpoints"][&default];
                // The default of 16 LLM requests at once would queue the rest inside promptops.
                endpoint["max_concurrency"] = json!(1_000_000);
                endpoint["timeouts"] = json!({"connect": "5s", "first_token": "60s", "idle": "5m", "total": "30m"});
                let mut drip = endpoint.clone();
                drip["url"] = json!(format!("{drip_base}/chat/completions"));
                value["endpoints"]["drip"] = drip;
            }
            "header.json" | "payload.json" => {
                let default = value.as_object().unwrap().values().next().unwrap().clone();
                value["drip"] = default;
            }
            "prompts.json" => {
                value["prompts"]["bench-drip"] = json!({
                    "title": "Background stream", "template": "Keep talking.", "endpoint": "drip", "tools": [],
                });
            }
            _ => {}
        }
        *content = serde_json::to_string_pretty(&value).unwrap();
    }
    files
}

async fn start_promptops(http: &reqwest::Client, llm_base: &str, drip_base: &str, key: &str) -> Promptops {
    let dir = tempfile::tempdir().unwrap();
    configmap::write_files(&dir.path().join("config"), &bench_config(drip_base));
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("promptops.log")).unwrap();
    let child = serve::promptops_command(dir.path())
        .arg("serve")
        .env("PROMPTOPS_LISTEN", format!("127.0.0.1:{port}"))
        .env("PROMPTOPS_CONFIG_DIR", dir.path().join("config"))
        .env("PROMPTOPS_DATABASE_URL", format!("sqlite://{}", dir.path().join("data/promptops.db").display()))
        .env("PROMPTOPS_KEY_FILE", dir.path().join("data/encryption.key"))
        .env("PROMPTOPS_ENCRYPTION_KEYS", key)
        .env("PROMPTOPS_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("PROMPTOPS_BCRYPT_COST", "4")
        .env("PROMPTOPS_SHUTDOWN_TIMEOUT", "2s")
        .env("PROMPTOPS_LLM_BASE_URL", llm_base)
        .env("PROMPTOPS_LLM_MODEL", "mock")
        .env("PROMPTOPS_LLM_API_KEY", LLM_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let proc = Proc::new("promptops", child, false);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        let log = std::fs::read_to_string(dir.path().join("promptops.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "promptops not ready in 30 s; its log:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (cookie, csrf) = serve::sign_in(http, &base, "admin", ADMIN_PASSWORD).await;
    Promptops { proc, base, cookie, csrf, dir }
}

impl Promptops {
    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// `n` fresh conversations (setup, not measured).
    async fn conversations(&self, http: &reqwest::Client, n: usize) -> Vec<i64> {
        let gate = Arc::new(Semaphore::new(32));
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let (http, gate) = (http.clone(), gate.clone());
            let (url, cookie, csrf) =
                (format!("{}/api/v1/conversations", self.base), self.cookie.clone(), self.csrf.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                let r = http.post(url).header("cookie", cookie).header("x-csrf-token", csrf).json(&json!({})).send();
                let r = r.await.unwrap();
                assert_eq!(r.status(), 201, "creating a conversation");
                r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
            }));
        }
        let mut ids = Vec::with_capacity(n);
        for task in tasks {
            ids.push(task.await.unwrap());
        }
        ids
    }

    /// Lines of its log at WARN or ERROR (JSON logs), with the first of them.
    fn problems(&self) -> (usize, Option<String>) {
        let log = std::fs::read_to_string(self.dir.path().join("promptops.log")).unwrap_or_default();
        let bad: Vec<&str> =
            log.lines().filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\"")).collect();
        (bad.len(), bad.first().map(|l| l.chars().take(300).collect()))
    }
}

// ---------------------------------------------------------------- LiteLLM

struct Litellm {
    proc: Proc,
    base: String,
    master_key: String,
    started: Instant,
    dir: tempfile::TempDir,
}

fn litellm_executable() -> Result<PathBuf, String> {
    match std::env::var("PROMPTOPS_BENCH_LITELLM") {
        Ok(v) if ["off", "0", "no", "skip", "false"].contains(&v.as_str()) => {
            return Err("PROMPTOPS_BENCH_LITELLM says off".into());
        }
        Ok(v) if !v.is_empty() => {
            let path = PathBuf::from(v);
            return if path.is_file() { Ok(path) } else { Err(format!("{} does not exist", path.display())) };
        }
        _ => {}
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench-peers");
    println!("peer: {} litellm (installs LiteLLM once, ~2 min; progress on stderr)", script.display());
    let out = Command::new(&script)
        .arg("litellm")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} litellm failed ({})", script.display(), out.status));
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if path.is_file() { Ok(path) } else { Err(format!("bench-peers printed {path:?}, not a file")) }
}

fn start_litellm(mock: &Mock) -> Result<Litellm, String> {
    let exe = litellm_executable()?;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("litellm.yaml");
    // LiteLLM refuses to start without a master key; with one, it checks it on every
    // request, as promptops checks its session.
    let master_key = format!("sk-{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let model = |name: &str, base: &str| {
        format!(
            "  - model_name: {name}\n    litellm_params:\n      model: openai/mock\n      api_base: {base}\n      \
             api_key: {LLM_KEY}\n"
        )
    };
    std::fs::write(
        &config,
        format!(
            "model_list:\n{}{}general_settings:\n  master_key: {master_key}\n",
            model("mock", &mock.fast),
            model("mock-drip", &mock.bg)
        ),
    )
    .unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("litellm.log")).unwrap();
    let child = {
        use std::os::unix::process::CommandExt as _;
        let mut command = Command::new(&exe);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PROMPTOPS_") {
                command.env_remove(name);
            }
        }
        command
            .args(["--config", config.to_str().unwrap(), "--host", "127.0.0.1", "--port", &port.to_string()])
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group: stopping it stops anything it started.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?
    };
    Ok(Litellm {
        proc: Proc::new("litellm", child, true),
        base: format!("http://127.0.0.1:{port}"),
        master_key,
        started: Instant::now(),
        dir,
    })
}

impl Litellm {
    async fn wait_ready(&mut self, http: &reqwest::Client) -> Result<Duration, String> {
        let deadline = self.started + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.proc.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.path().join("litellm.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!(
                    "litellm exited ({status}): {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ));
            }
            if let Ok(r) = http.get(format!("{}/health/liveliness", self.base)).send().await
                && r.status() == 200
            {
                return Ok(self.started.elapsed());
            }
            if Instant::now() > deadline {
                return Err("litellm not ready within 120 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------- targets and streams

enum Kind {
    /// An OpenAI-compatible endpoint: the mock itself, or LiteLLM in front of it.
    OpenAi { probe_url: String, background_url: String, auth: String, probe: Body, background: Body },
    Promptops {
        base: String,
        cookie: String,
        csrf: String,
        probes: Vec<i64>,
        next: AtomicUsize,
        background: Vec<i64>,
        /// The POST answers with the stream itself (`Accept: text/event-stream`) instead of
        /// a 202 and a second request for the events.
        one_request: bool,
    },
}

struct Target {
    name: &'static str,
    kind: Kind,
}

/// One probe's TTFT, and through promptops its parts: POST → 202 (body read),
/// 202 → SSE response head, head → first `token` event.
struct Probe {
    ttft: Duration,
    parts: Option<[Duration; 3]>,
}

fn openai_request(http: &reqwest::Client, url: &str, auth: &str, body: &Body) -> reqwest::RequestBuilder {
    http.post(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {auth}"))
        .body(body.to_vec())
}

fn is_content(data: &str) -> bool {
    serde_json::from_str::<Value>(data)
        .ok()
        .and_then(|v| v.pointer("/choices/0/delta/content").and_then(Value::as_str).map(|s| !s.is_empty()))
        == Some(true)
}

async fn probe_once(http: &reqwest::Client, target: &Target, message: &Body) -> Result<Probe, String> {
    match &target.kind {
        Kind::OpenAi { probe_url, auth, probe, .. } => {
            let start = Instant::now();
            let response = openai_request(http, probe_url, auth, probe).send().await.map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            let mut events = response.bytes_stream().eventsource();
            let mut first = None;
            while let Some(event) = events.next().await {
                let event = event.map_err(|e| e.to_string())?;
                if event.data.trim() == "[DONE]" {
                    break;
                }
                if first.is_none() && is_content(&event.data) {
                    first = Some(start.elapsed());
                }
            }
            Ok(Probe { ttft: first.ok_or("the stream had no content")?, parts: None })
        }
        Kind::Promptops { base, cookie, csrf, probes, next, one_request, .. } => {
            let conversation = *probes.get(next.fetch_add(1, Ordering::Relaxed)).ok_or("out of conversations")?;
            let start = Instant::now();
            let mut request = http
                .post(format!("{base}/api/v1/conversations/{conversation}/messages"))
                .header("content-type", "application/json")
                .header("cookie", cookie)
                .header("x-csrf-token", csrf)
                .body(message.to_vec());
            if *one_request {
                request = request.header("accept", "text/event-stream");
            }
            let response = request.send().await.map_err(|e| e.to_string())?;
            if *one_request {
                if response.status() != 200 {
                    return Err(format!("send answered {}", response.status()));
                }
                let first = first_token(response, start).await?;
                return Ok(Probe { ttft: first, parts: None });
            }
            if response.status() != 202 {
                let status = response.status();
                return Err(format!("send answered {status}: {}", response.text().await.unwrap_or_default()));
            }
            let sent: Value = response.json().await.map_err(|e| e.to_string())?;
            let accepted = start.elapsed();
            let id = sent["message_id"].as_i64().ok_or("no message_id")?;
            let response = http
                .get(format!("{base}/api/v1/conversations/{conversation}/messages/{id}/events"))
                .header("cookie", cookie)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if response.status() != 200 {
                return Err(format!("events answered {}", response.status()));
            }
            let head = start.elapsed();
            let first = first_token(response, start).await?;
            Ok(Probe { ttft: first, parts: Some([accepted, head - accepted, first - head]) })
        }
    }
}

/// Reads a promptops answer's event stream to its end; when its first `token` came.
async fn first_token(response: reqwest::Response, start: Instant) -> Result<Duration, String> {
    let mut events = response.bytes_stream().eventsource();
    let mut first = None;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| e.to_string())?;
        match event.event.as_str() {
            "token" if first.is_none() => first = Some(start.elapsed()),
            "done" => break,
            "error" => return Err(format!("error event: {}", event.data)),
            _ => {}
        }
    }
    first.ok_or_else(|| "the answer had no token".to_owned())
}

/// Background stream `slot`: opens a long dripping answer, counts its tokens, reopens it
/// if it ends, and on `stop` hangs up (and, through promptops, cancels the answer).
async fn background(
    http: reqwest::Client,
    target: Arc<Target>,
    slot: usize,
    gate: Arc<Semaphore>,
    opened: Arc<AtomicUsize>,
    tokens: Arc<AtomicUsize>,
    stop: CancellationToken,
) -> Option<String> {
    let mut counted = false;
    let mut permit = Some(gate.acquire_owned().await.unwrap());
    while !stop.is_cancelled() {
        let run = async {
            match &target.kind {
                Kind::OpenAi { background_url, auth, background, .. } => {
                    let response = openai_request(&http, background_url, auth, background)
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    if !response.status().is_success() {
                        return Err(format!("HTTP {}", response.status()));
                    }
                    let mut events = response.bytes_stream().eventsource();
                    while let Some(event) = events.next().await {
                        let event = event.map_err(|e| e.to_string())?;
                        if is_content(&event.data) {
                            if !counted {
                                counted = true;
                                opened.fetch_add(1, Ordering::SeqCst);
                                permit.take();
                            }
                            tokens.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(None)
                }
                Kind::Promptops { base, cookie, csrf, background, .. } => {
                    let conversation = background[slot];
                    let response = http
                        .post(format!("{base}/api/v1/conversations/{conversation}/messages"))
                        .header("cookie", cookie)
                        .header("x-csrf-token", csrf)
                        .json(&json!({"content": "go on", "prompt": "bench-drip"}))
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    if response.status() != 202 {
                        return Err(format!("send answered {}", response.status()));
                    }
                    let id = response.json::<Value>().await.map_err(|e| e.to_string())?["message_id"].as_i64();
                    let id = id.ok_or("no message_id")?;
                    let response = http
                        .get(format!("{base}/api/v1/conversations/{conversation}/messages/{id}/events"))
                        .header("cookie", cookie)
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut events = response.bytes_stream().eventsource();
                    // The answer id, to cancel it if `stop` comes while it runs.
                    let cancel_url = format!("{base}/api/v1/conversations/{conversation}/messages/{id}/cancel");
                    let read = async {
                        while let Some(event) = events.next().await {
                            let event = event.map_err(|e| e.to_string())?;
                            match event.event.as_str() {
                                "token" => {
                                    if !counted {
                                        counted = true;
                                        opened.fetch_add(1, Ordering::SeqCst);
                                        permit.take();
                                    }
                                    tokens.fetch_add(1, Ordering::Relaxed);
                                }
                                "done" | "error" => break,
                                _ => {}
                            }
                        }
                        Ok::<(), String>(())
                    };
                    tokio::select! {
                        r = read => r.map(|()| None),
                        () = stop.cancelled() => Ok(Some(cancel_url)),
                    }
                }
            }
        };
        let result = tokio::select! {
            r = run => r,
            () = stop.cancelled() => Ok(None),
        };
        match result {
            Ok(Some(cancel_url)) => {
                let cancel =
                    http.post(cancel_url).header("x-csrf-token", csrf_of(&target)).header("cookie", cookie_of(&target));
                let _ = tokio::time::timeout(Duration::from_secs(5), cancel.send()).await;
                return None;
            }
            Ok(None) => {}
            Err(e) => return Some(e),
        }
    }
    None
}

fn csrf_of(target: &Target) -> String {
    match &target.kind {
        Kind::Promptops { csrf, .. } => csrf.clone(),
        Kind::OpenAi { .. } => String::new(),
    }
}

fn cookie_of(target: &Target) -> String {
    match &target.kind {
        Kind::Promptops { cookie, .. } => cookie.clone(),
        Kind::OpenAi { .. } => String::new(),
    }
}

// ---------------------------------------------------------------- part 1: TTFT

#[derive(Default)]
struct Results {
    ttft: Vec<Duration>,
    parts: [Vec<Duration>; 3],
    errors: usize,
    first_error: Option<String>,
    /// Per block: how many background streams were open, their tokens/s, CPU use.
    notes: Vec<String>,
}

struct Ctx {
    http: reqwest::Client,
    mock: Mock,
    pids: Pids,
    message: Body,
    hz: f64,
}

/// One block of one target at one level: open `open - 1` background streams, then
/// measure probes one after another while they drip, then stop them.
async fn block(ctx: &Ctx, target: &Arc<Target>, open: usize, probes: usize, record: bool, into: &mut Results) {
    let stop = CancellationToken::new();
    let opened = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(50));
    let workers: Vec<_> = (0..open - 1)
        .map(|slot| {
            tokio::spawn(background(
                ctx.http.clone(),
                target.clone(),
                slot,
                gate.clone(),
                opened.clone(),
                tokens.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let ramp = Instant::now();
    while opened.load(Ordering::SeqCst) < open - 1 && ramp.elapsed() < BG_OPEN_BUDGET {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ramp = ramp.elapsed();
    if !workers.is_empty() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (cpu0, tok0) = (Cpu::now(&ctx.pids), tokens.load(Ordering::Relaxed));
    let budget = Instant::now() + PROBE_BUDGET;
    let mut n = 0;
    while n < probes && Instant::now() < budget {
        n += 1;
        let result = match tokio::time::timeout(REQUEST_TIMEOUT, probe_once(&ctx.http, target, &ctx.message)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no first token within {REQUEST_TIMEOUT:?}")),
        };
        if !record {
            continue;
        }
        match result {
            Ok(p) => {
                into.ttft.push(p.ttft);
                for (i, part) in p.parts.iter().flatten().enumerate() {
                    into.parts[i].push(*part);
                }
            }
            Err(e) => {
                into.errors += 1;
                into.first_error.get_or_insert(e);
            }
        }
    }
    let (cpu1, tok1) = (Cpu::now(&ctx.pids), tokens.load(Ordering::Relaxed));
    let bg_open = opened.load(Ordering::SeqCst);
    stop.cancel();
    for worker in workers {
        if let Ok(Some(e)) = worker.await {
            into.errors += 1;
            into.first_error.get_or_insert(format!("background: {e}"));
        }
    }
    let quiet = ctx.mock.bg_quiet(BG_CLOSE_BUDGET).await;
    if record {
        let secs = cpu1.at.duration_since(cpu0.at).as_secs_f64().max(1e-9);
        let promptops_ms = (cpu1.promptops - cpu0.promptops) as f64 / ctx.hz * 1000.0;
        let switches = cpu1.switches - cpu0.switches;
        into.notes.push(format!(
            "{bg_open} of {} background streams open (in {:.1} s), {:.0} tokens/s; {n} probes in {secs:.1} s; \
             promptops per probe (background included): {:.2} ms CPU, {:.0} context switches; CPU cores: {}{}",
            open - 1,
            ramp.as_secs_f64(),
            (tok1 - tok0) as f64 / secs,
            promptops_ms / n.max(1) as f64,
            switches as f64 / n.max(1) as f64,
            cpu0.cores(&cpu1, ctx.hz),
            if quiet { "" } else { "; the mock still had background streams open after the block" }
        ));
    }
}

fn pct(samples: &[Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    // Nearest rank.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1000.0))
}

fn diff_ms(a: Option<Duration>, b: Option<Duration>) -> Option<f64> {
    Some((a?.as_secs_f64() - b?.as_secs_f64()) * 1000.0)
}

async fn part_ttft(http: &reqwest::Client, mock: Mock, key: &str, bg_gap_ms: u64) -> Mock {
    // LiteLLM takes ~15 s to start: it boots while promptops starts and conversations are made.
    let litellm = start_litellm(&mock);
    let pp = start_promptops(http, &mock.fast, &mock.bg, key).await;
    let idle_rss = rss_mb(pp.pid());
    let per_level = BLOCKS * PROBES_PER_BLOCK + 5;
    let probes = pp.conversations(http, LEVELS.len() * per_level).await;
    let one_request_probes = pp.conversations(http, LEVELS.len() * per_level).await;
    let background_conversations = pp.conversations(http, LEVELS.iter().max().unwrap() - 1).await;

    let litellm = match litellm {
        Ok(mut l) => match l.wait_ready(http).await {
            Ok(ready) => {
                println!(
                    "peer: LiteLLM 1.108.7 ready {:.1} s after spawn (1 uvicorn worker, its default; master key set)",
                    ready.as_secs_f64()
                );
                Some(l)
            }
            Err(e) => {
                println!("peer skipped: {e}");
                None
            }
        },
        Err(e) => {
            println!("peer skipped: {e}");
            None
        }
    };
    let system = {
        let prompts = configmap::example_config().into_iter().find(|(n, _)| *n == "prompts.json").unwrap().1;
        serde_json::from_str::<Value>(&prompts).unwrap()["system"].as_str().unwrap_or_default().to_owned()
    };
    // The body promptops sends for a first message, so direct and peer carry the same.
    let openai = |model: &str, content: &str| -> Body {
        serde_json::to_vec(&json!({
            "model": model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": content}],
            "stream": true,
            "temperature": 0.2,
        }))
        .unwrap()
        .into()
    };
    let mut targets = vec![
        Arc::new(Target {
            name: "direct (client → mock)",
            kind: Kind::OpenAi {
                probe_url: format!("{}/chat/completions", mock.fast),
                background_url: format!("{}/chat/completions", mock.bg),
                auth: LLM_KEY.into(),
                probe: openai("mock", QUESTION),
                background: openai("mock", "Keep talking.\n\ngo on"),
            },
        }),
        Arc::new(Target {
            name: "promptops",
            kind: Kind::Promptops {
                base: pp.base.clone(),
                cookie: pp.cookie.clone(),
                csrf: pp.csrf.clone(),
                probes,
                next: AtomicUsize::new(0),
                background: background_conversations.clone(),
                one_request: false,
            },
        }),
        Arc::new(Target {
            name: "promptops-1req (POST → stream)",
            kind: Kind::Promptops {
                base: pp.base.clone(),
                cookie: pp.cookie.clone(),
                csrf: pp.csrf.clone(),
                probes: one_request_probes,
                next: AtomicUsize::new(0),
                background: background_conversations,
                one_request: true,
            },
        }),
    ];
    if let Some(l) = &litellm {
        let url = format!("{}/v1/chat/completions", l.base);
        targets.push(Arc::new(Target {
            name: "litellm 1.108.7 proxy",
            kind: Kind::OpenAi {
                probe_url: url.clone(),
                background_url: url,
                auth: l.master_key.clone(),
                probe: openai("mock", QUESTION),
                background: openai("mock-drip", "Keep talking.\n\ngo on"),
            },
        }));
    }
    let ctx = Ctx {
        http: http.clone(),
        pids: Pids { mock: mock.proc.pid(), promptops: pp.pid(), litellm: litellm.as_ref().map(|l| l.proc.pid()) },
        mock,
        message: serde_json::to_vec(&json!({"content": QUESTION})).unwrap().into(),
        hz: clock_ticks(),
    };

    println!("\n== 1. time to first token (TTFT) of a new answer while N streams are open ==");
    println!("Same mock for every target: the probed answer echoes the question with no delay (TTFT is pure");
    println!("transport + proxy work); the other N-1 streams drip a token every {bg_gap_ms} ms through the same");
    println!("target. One probe at a time; every promptops probe is the first message of a fresh conversation.");
    println!(
        "Targets take turns in {BLOCKS} blocks of {PROBES_PER_BLOCK} probes per level ({} s budget per block).",
        PROBE_BUDGET.as_secs()
    );
    println!("promptops idle RSS before part 1: {idle_rss:.1} MB");
    let mut summary = Vec::new();
    for open in LEVELS {
        let mut results: Vec<Results> = targets.iter().map(|_| Results::default()).collect();
        for target in &targets {
            // Warm-up, not recorded: connections, caches.
            block(&ctx, target, 1, 5, false, &mut Results::default()).await;
        }
        for _ in 0..BLOCKS {
            for (target, into) in targets.iter().zip(&mut results) {
                block(&ctx, target, open, PROBES_PER_BLOCK, true, into).await;
            }
        }
        println!("\n-- {open} open stream{} --", if open == 1 { "" } else { "s" });
        println!("  {:<32} {:>7} {:>10} {:>10} {:>10}", "TTFT", "samples", "p50", "p99", "max");
        for (target, r) in targets.iter().zip(&results) {
            println!(
                "  {:<32} {:>7} {:>10} {:>10} {:>10}",
                target.name,
                r.ttft.len(),
                ms(pct(&r.ttft, 0.5)),
                ms(pct(&r.ttft, 0.99)),
                ms(pct(&r.ttft, 1.0))
            );
            let labels = ["  POST → 202 (body read)", "  202 → SSE response head", "  head → first token event"];
            for (i, (label, part)) in labels.iter().zip(&r.parts).enumerate() {
                if !part.is_empty() {
                    let slow = part.iter().filter(|d| **d >= Duration::from_millis(20)).count();
                    println!(
                        "  {:<32} {:>7} {:>10} {:>10} {:>10}{}",
                        label,
                        part.len(),
                        ms(pct(part, 0.5)),
                        ms(pct(part, 0.99)),
                        ms(pct(part, 1.0)),
                        if i == 2 { format!("   {slow} of {} took ≥ 20 ms", part.len()) } else { String::new() }
                    );
                }
            }
            if r.errors > 0 {
                println!("  {:<32} {} errors, first: {}", "", r.errors, r.first_error.as_deref().unwrap_or(""));
            }
        }
        let direct = &results[0];
        for (target, r) in targets.iter().zip(&results).skip(1) {
            let short = target.name.split_whitespace().next().unwrap_or(target.name);
            let p50 = diff_ms(pct(&r.ttft, 0.5), pct(&direct.ttft, 0.5));
            let p99 = diff_ms(pct(&r.ttft, 0.99), pct(&direct.ttft, 0.99));
            let show = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:+.2} ms"));
            let goal = if open == 200 && short.starts_with("promptops") {
                let verdict = |v: Option<f64>, goal: Duration| match v {
                    Some(v) if v <= goal.as_secs_f64() * 1000.0 => "met",
                    Some(_) => "NOT met",
                    None => "-",
                };
                let line = format!(
                    "goals at 200: p50 ≤ +{} ms ({}), p99 ≤ +{} ms ({})",
                    GOAL_P50.as_millis(),
                    verdict(p50, GOAL_P50),
                    GOAL_P99.as_millis(),
                    verdict(p99, GOAL_P99)
                );
                summary.push(format!("{short} overhead at 200 streams: p50 {}, p99 {}; {line}", show(p50), show(p99)));
                format!("   {line}")
            } else {
                String::new()
            };
            println!("  overhead of {short} (through − direct): p50 {}, p99 {}{goal}", show(p50), show(p99));
        }
        for (target, r) in targets.iter().zip(&results) {
            for note in &r.notes {
                println!("  {:<22} {note}", target.name.split(" (").next().unwrap_or(target.name));
            }
        }
    }
    let (problems, first) = pp.problems();
    println!(
        "\nafter part 1: promptops RSS {:.1} MB (peak {:.1} MB); {problems} WARN/ERROR log lines{}{}",
        rss_mb(pp.pid()),
        hwm_mb(pp.pid()),
        first.map(|l| format!(", first: {l}")).unwrap_or_default(),
        litellm
            .as_ref()
            .map(|l| format!("; litellm RSS {:.1} MB (peak {:.1} MB)", rss_mb(l.proc.pid()), hwm_mb(l.proc.pid())))
            .unwrap_or_default()
    );
    let stats = ctx.mock.stats();
    println!("mock served {} probe and {} background requests in part 1", stats.requests[0], stats.requests[1]);
    for line in summary {
        println!("{line}");
    }
    drop(litellm);
    drop(pp);
    ctx.mock
}

// ---------------------------------------------------------------- part 2: open streams

#[derive(Default)]
struct Hold {
    open: AtomicUsize,
    peak: AtomicUsize,
    tokens: AtomicUsize,
    failed: AtomicUsize,
    ended: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Hold {
    fn fail(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().unwrap().get_or_insert(error);
    }
}

async fn hold_stream(
    http: reqwest::Client,
    base: Arc<(String, String, String)>,
    conversation: i64,
    body: Body,
    gate: Arc<Semaphore>,
    hold: Arc<Hold>,
    stop: CancellationToken,
) {
    let permit = gate.acquire_owned().await.unwrap();
    let (base, cookie, csrf) = &*base;
    let open = async {
        let response = http
            .post(format!("{base}/api/v1/conversations/{conversation}/messages"))
            .header("content-type", "application/json")
            .header("cookie", cookie)
            .header("x-csrf-token", csrf)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| format!("send: {e}"))?;
        if response.status() != 202 {
            let status = response.status();
            return Err(format!("send answered {status}: {}", response.text().await.unwrap_or_default()));
        }
        let sent: Value = response.json().await.map_err(|e| e.to_string())?;
        let message = sent["message_id"].as_i64().ok_or("no message_id")?;
        let response = http
            .get(format!("{base}/api/v1/conversations/{conversation}/messages/{message}/events"))
            .header("cookie", cookie)
            .send()
            .await
            .map_err(|e| format!("events: {e}"))?;
        if response.status() != 200 {
            return Err(format!("events answered {}", response.status()));
        }
        let mut events = response.bytes_stream().eventsource();
        loop {
            match events.next().await {
                Some(Ok(e)) if e.event == "token" => return Ok(events),
                Some(Ok(e)) if e.event == "done" || e.event == "error" => {
                    return Err(format!("{}: {}", e.event, e.data));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("stream ended before a token".into()),
            }
        }
    };
    let mut events = tokio::select! {
        () = stop.cancelled() => return,
        r = tokio::time::timeout(Duration::from_secs(60), open) => match r {
            Ok(Ok(events)) => events,
            Ok(Err(e)) => return hold.fail(e),
            Err(_) => return hold.fail("no first token within 60 s".into()),
        },
    };
    drop(permit);
    let now_open = hold.open.fetch_add(1, Ordering::SeqCst) + 1;
    hold.peak.fetch_max(now_open, Ordering::SeqCst);
    hold.tokens.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            e = events.next() => match e {
                Some(Ok(e)) if e.event == "token" => { hold.tokens.fetch_add(1, Ordering::Relaxed); }
                Some(Ok(e)) if e.event == "done" || e.event == "error" => {
                    hold.ended.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Some(Ok(_)) => {}
                _ => {
                    hold.ended.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            },
        }
    }
    hold.open.fetch_sub(1, Ordering::SeqCst);
}

async fn part_open_streams(http: &reqwest::Client, mock: &Mock, key: &str, drip_ms: u64, targets: &[usize]) {
    println!("\n== 2. open streams and memory ==");
    let max = targets.iter().copied().max().unwrap_or(0);
    println!(
        "A fresh promptops; the mock drips one token every {drip_ms} ms ({HOLD_TOKENS}-token answers, so none ends"
    );
    println!("during the run); {OPENING} opens in flight at a time; a stream counts as open from its first token.");
    let pp = start_promptops(http, &mock.hold, &mock.hold, key).await;
    let pid = pp.pid();
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "baseline: idle promptops (started, admin signed in): VmRSS {:.1} MB, {} threads, {} fds",
        rss_mb(pid),
        count_dir(format!("/proc/{pid}/task")),
        count_dir(format!("/proc/{pid}/fd"))
    );
    let setup = Instant::now();
    let conversations = pp.conversations(http, max).await;
    let idle_rss = rss_mb(pid);
    println!(
        "setup: {max} conversations created in {:.1} s; idle VmRSS now {idle_rss:.1} MB (the baseline below)",
        setup.elapsed().as_secs_f64()
    );

    let body: Body = serde_json::to_vec(&json!({"content": QUESTION})).unwrap().into();
    let base = Arc::new((pp.base.clone(), pp.cookie.clone(), pp.csrf.clone()));
    let gate = Arc::new(Semaphore::new(OPENING));
    let hold = Arc::new(Hold::default());
    let stop = CancellationToken::new();
    let hz = clock_ticks();
    let pids = Pids { mock: mock.proc.pid(), promptops: pid, litellm: None };
    let mut spawned = 0;
    let mut rows = Vec::new();
    for &target in targets {
        let ramp = Instant::now();
        let cpu_ramp = Cpu::now(&pids);
        while spawned < target.min(conversations.len()) {
            tokio::spawn(hold_stream(
                http.clone(),
                base.clone(),
                conversations[spawned],
                body.clone(),
                gate.clone(),
                hold.clone(),
                stop.clone(),
            ));
            spawned += 1;
        }
        let mut last_report = Instant::now();
        loop {
            let open = hold.open.load(Ordering::SeqCst);
            let done = open + hold.failed.load(Ordering::Relaxed) + hold.ended.load(Ordering::Relaxed);
            if open >= target || done >= spawned {
                break;
            }
            if ramp.elapsed() > RAMP_BUDGET {
                println!("  ramp to {target}: budget of {} s spent", RAMP_BUDGET.as_secs());
                break;
            }
            if last_report.elapsed() > Duration::from_secs(15) {
                println!("  … {open} open after {:.0} s", ramp.elapsed().as_secs_f64());
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ramp_time = ramp.elapsed();
        let cpu_ramp_end = Cpu::now(&pids);
        let reached = hold.open.load(Ordering::SeqCst);
        tokio::time::sleep(SETTLE).await;
        // One window of steady state: CPU, tokens, memory growth.
        let (cpu0, tok0, rss0) = (Cpu::now(&pids), hold.tokens.load(Ordering::Relaxed), rss_mb(pid));
        tokio::time::sleep(WINDOW).await;
        let (cpu1, tok1, rss) = (Cpu::now(&pids), hold.tokens.load(Ordering::Relaxed), rss_mb(pid));
        let secs = cpu1.at.duration_since(cpu0.at).as_secs_f64();
        let open = hold.open.load(Ordering::SeqCst);
        let stats = mock.stats();
        println!(
            "\n-- {target} streams: {reached} open after a {:.1} s ramp ({:.0} opens/s; at most {OPENING} opening at once, \
             each waits the mock's {drip_ms} ms first token); {} failed, {} ended early --",
            ramp_time.as_secs_f64(),
            reached as f64 / ramp_time.as_secs_f64().max(1e-9),
            hold.failed.load(Ordering::Relaxed),
            hold.ended.load(Ordering::Relaxed)
        );
        if let Some(e) = hold.first_error.lock().unwrap().as_ref() {
            println!("  first failure: {e}");
        }
        println!("  CPU cores during the ramp: {}", cpu_ramp.cores(&cpu_ramp_end, hz));
        println!(
            "  promptops VmRSS {rss:.1} MB (peak {:.1} MB): {:.1} MB over idle = {:.1} KB per open stream",
            hwm_mb(pid),
            rss - idle_rss,
            (rss - idle_rss) * 1024.0 / open.max(1) as f64
        );
        let delivered = tok1 - tok0;
        println!(
            "  during {secs:.1} s of steady state RSS grew {:.1} MB while {delivered} tokens streamed ({:.0} B per token); \
             on average {:.0} tokens per stream so far",
            rss - rss0,
            (rss - rss0) * 1024.0 * 1024.0 / delivered.max(1) as f64,
            tok1 as f64 / open.max(1) as f64
        );
        println!(
            "  promptops: {} threads, {} fds; the mock holds {} streams; the client sees {open} open",
            count_dir(format!("/proc/{pid}/task")),
            count_dir(format!("/proc/{pid}/fd")),
            stats.open[2]
        );
        println!(
            "  steady state: {:.0} tokens/s reached the client; CPU cores: {}",
            delivered as f64 / secs,
            cpu0.cores(&cpu1, hz)
        );
        rows.push((target, open, rss));
        if reached < target {
            break;
        }
    }
    let peak = hold.peak.load(Ordering::SeqCst);
    println!("\nmost concurrent open streams reached: {peak}");
    for (target, open, rss) in &rows {
        println!("  at {target:>5} streams: {open} open, promptops VmRSS {rss:.1} MB (idle {idle_rss:.1} MB)");
    }
    if let Some((_, open, rss)) = rows.iter().max_by_key(|(t, _, _)| *t) {
        let met = *open >= GOAL_STREAMS && *rss < GOAL_RSS_MB;
        println!(
            "  goal ≥ {GOAL_STREAMS} streams under {GOAL_RSS_MB:.0} MB: {} (at most {open} open, {rss:.1} MB)",
            if met { "met" } else { "NOT met" }
        );
    }
    let (problems, first) = pp.problems();
    println!(
        "  promptops logged {problems} WARN/ERROR lines{}",
        first.map(|l| format!(", first: {l}")).unwrap_or_default()
    );
    stop.cancel();
    drop(pp);
}

// ---------------------------------------------------------------- main

async fn bench() {
    let (soft, hard) = raise_nofile();
    let bg_gap_ms = env_u64("CHAT_STREAM_BG_GAP_MS", 50);
    let drip_ms = env_u64("CHAT_STREAM_DRIP_MS", 1000);
    let parts = std::env::var("CHAT_STREAM_PARTS").unwrap_or_else(|_| "1,2".into());
    let targets: Vec<usize> = std::env::var("CHAT_STREAM_HOLD")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1000, GOAL_STREAMS]);
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let nice = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| s[s.rfind(')')? + 2..].split(' ').nth(16).map(str::to_owned))
        .unwrap_or_default();
    println!(
        "chat_stream: {cpus} CPUs, nice {nice}; open files: soft {soft}, hard {hard} (soft raised to hard; children inherit)"
    );
    println!("promptops: {}", serve::BIN);

    let mock = Mock::start(bg_gap_ms, drip_ms);
    let key = serve::generate_key();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(300))
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let mock = if parts.contains('1') { part_ttft(&http, mock, &key, bg_gap_ms).await } else { mock };
    if parts.contains('2') {
        part_open_streams(&http, &mock, &key, drip_ms, &targets).await;
    }
    println!(
        "\nmock process: VmRSS {:.1} MB (it prebuilds every answer's chunks); this client: VmRSS {:.1} MB",
        rss_mb(mock.proc.pid()),
        rss_mb(std::process::id())
    );
    drop(mock);
}
