//! The test cluster and the processes around it: a real kube-apiserver + etcd started by
//! `scripts/k8s-test-env`, the real `kubectl`, and promptops as the real binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A running control plane; stopped when dropped.
pub struct Cluster {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    _temp: tempfile::TempDir,
}

impl Cluster {
    pub fn up() -> Self {
        let temp = tempfile::Builder::new().prefix("promptops-k8s-").tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        run_script(&["up", dir.to_str().unwrap()]);
        let cluster = Self { kubeconfig: dir.join("kubeconfig"), dir, _temp: temp };
        cluster.kubectl_ok(&["apply", "-f", &format!("{ROOT}/crds/promptops.dev.yaml")]);
        cluster.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "crd/prompts.promptops.dev",
            "crd/promptjobs.promptops.dev",
            "--timeout=60s",
        ]);
        cluster
    }

    /// Stops the API server and etcd (their state stays for `up_api`).
    pub fn down_api(&self) {
        run_script(&["down", self.dir.to_str().unwrap()]);
    }

    /// Starts them again on the same state and ports.
    pub fn up_api(&self) {
        run_script(&["up", self.dir.to_str().unwrap()]);
    }

    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        blocking(|| Command::new("kubectl").args(args).env("KUBECONFIG", &self.kubeconfig).output().unwrap())
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Applies YAML from a string.
    pub fn apply(&self, namespace: &str, yaml: &str) -> std::process::Output {
        blocking(|| self.apply_now(namespace, yaml))
    }

    fn apply_now(&self, namespace: &str, yaml: &str) -> std::process::Output {
        let mut child = Command::new("kubectl")
            .args(["apply", "-n", namespace, "-f", "-"])
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn apply_ok(&self, namespace: &str, yaml: &str) {
        let out = self.apply(namespace, yaml);
        assert!(out.status.success(), "kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A fresh namespace for one test.
    pub fn namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        self.kubectl_ok(&["create", "namespace", &name]);
        name
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&all)).unwrap()
    }

    /// Polls `kubectl get … -o json` until `check` holds.
    pub fn wait_for(&self, what: &str, args: &[&str], timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let out = self.kubectl(&[args, &["-o", "json"]].concat());
            if out.status.success() {
                let value: Value = serde_json::from_slice(&out.stdout).unwrap();
                if check(&value) {
                    return value;
                }
                assert!(start.elapsed() < timeout, "timed out waiting for {what}; last seen: {value:#}");
            } else {
                assert!(
                    start.elapsed() < timeout,
                    "timed out waiting for {what}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            blocking(|| std::thread::sleep(Duration::from_millis(250)));
        }
    }

    pub fn events(&self, namespace: &str) -> Vec<(String, String)> {
        let events = self.json(&["get", "events", "-n", namespace]);
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or("").to_owned(),
                    e["message"].as_str().or(e["note"].as_str()).unwrap_or("").to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        run_script(&["down", self.dir.to_str().unwrap()]);
    }
}

/// Runs blocking work (a child process, a sleep) without holding up the tokio tasks of the
/// worker thread it is called on: the in-process mock LLM must keep answering meanwhile.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::block_in_place(work),
        Err(_) => work(),
    }
}

fn run_script(args: &[&str]) {
    blocking(|| run_script_now(args));
}

fn run_script_now(args: &[&str]) {
    let out = Command::new(format!("{ROOT}/scripts/k8s-test-env")).args(args).stdout(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "k8s-test-env {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A promptops process; killed when dropped.
pub struct Promptops {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

/// How to start promptops.
pub struct Start<'a> {
    pub cluster: &'a Cluster,
    /// The watched namespaces, comma-separated; the Lease lives in the first.
    pub namespace: &'a str,
    pub data_dir: &'a Path,
    pub llm: &'a str,
    pub identity: &'a str,
    /// mcp-atlassian's URL; a closed port when `None`.
    pub mcp: Option<&'a str>,
}

pub const ADMIN_PASSWORD: &str = "k8s-admin-password-1";

impl Promptops {
    pub async fn start(start: &Start<'_>) -> Self {
        let port = free_port();
        let log = start.data_dir.join(format!("{}.log", start.identity));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        // PROMPTOPS_BIN runs another build (an earlier commit's, for a before/after).
        let bin = std::env::var_os("PROMPTOPS_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_promptops").into());
        let child = Command::new(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", &start.cluster.kubeconfig)
            .env("PROMPTOPS_CONTROLLER", "on")
            .env("PROMPTOPS_WATCH_NAMESPACE", start.namespace)
            .env("PROMPTOPS_LEASE_NAMESPACE", start.namespace.split(',').next().unwrap())
            .env("PROMPTOPS_LEASE_DURATION", "4s")
            .env("PROMPTOPS_IDENTITY", start.identity)
            .env("PROMPTOPS_DATABASE_URL", format!("sqlite://{}/promptops.db", start.data_dir.display()))
            .env("PROMPTOPS_CONFIG_DIR", format!("{ROOT}/config"))
            .env("PROMPTOPS_KEY_FILE", start.data_dir.join("encryption.key"))
            .env("PROMPTOPS_BCRYPT_COST", "4")
            .env("PROMPTOPS_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("PROMPTOPS_LLM_BASE_URL", start.llm)
            .env("PROMPTOPS_LLM_API_KEY", "test-key")
            .env("PROMPTOPS_MCP_ATLASSIAN_URL", start.mcp.unwrap_or("http://127.0.0.1:9/mcp"))
            .env("PROMPTOPS_LOG_FORMAT", "text")
            .env("PROMPTOPS_LOG_LEVEL", "info")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let process = Self { child, base: format!("http://127.0.0.1:{port}"), log };
        process.wait_ready().await;
        process
    }

    async fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            let ready = reqwest::get(format!("{}/readyz", self.base)).await.is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "promptops did not get ready; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no cleanup.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Promptops {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
