//! The test node (scripts/k8s-node), the promptops image in it, and the real `helm` and
//! `kubectl` pointed at it.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The kubelet syncFrequency the node runs with: how soon a ConfigMap edit reaches a Pod.
pub const SYNC_FREQUENCY: &str = "3s";

pub struct Node {
    pub dir: PathBuf,
    pub ip: String,
    kubeconfig: PathBuf,
    bin: String,
    _temp: tempfile::TempDir,
}

impl Node {
    pub fn up() -> Self {
        let archive = image_archive();
        // Short path: containerd's sockets live under it.
        let temp = tempfile::Builder::new().prefix("pon-").tempdir_in("/tmp").unwrap();
        let dir = temp.path().to_path_buf();
        let began = Instant::now();
        let out = Command::new(format!("{ROOT}/scripts/k8s-node"))
            .args(["up", dir.to_str().unwrap()])
            .env("K8S_NODE_SYNC_FREQUENCY", SYNC_FREQUENCY)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "k8s-node up failed");
        println!("    node bring-up (etcd → kubelet Ready): {:.1?}", began.elapsed());
        let env = script(&["env", dir.to_str().unwrap()]);
        let value = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap()
                .trim_end_matches(":\"$PATH\"")
                .to_owned()
        };
        let node = Self {
            kubeconfig: dir.join("admin.kubeconfig"),
            ip: value("NODE_IP"),
            bin: value("PATH"),
            dir,
            _temp: temp,
        };
        script(&["import", node.dir.to_str().unwrap(), archive.to_str().unwrap(), "promptops:test"]);
        node
    }

    /// Stops the node; returns what it left behind (empty when clean).
    pub fn down(&self) -> String {
        script(&["down", self.dir.to_str().unwrap()]);
        script(&["leftovers", self.dir.to_str().unwrap()])
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        blocking(|| Command::new("kubectl").args(args).env("KUBECONFIG", &self.kubeconfig).output().unwrap())
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.kubectl_ok(&[args, &["-o", "json"]].concat())).unwrap()
    }

    pub fn helm(&self, args: &[&str]) -> Output {
        blocking(|| {
            Command::new(format!("{}/helm", self.bin)).args(args).env("KUBECONFIG", &self.kubeconfig).output().unwrap()
        })
    }

    pub fn helm_ok(&self, args: &[String]) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.helm(&args);
        assert!(out.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `kubectl apply -n namespace -f -` of `yaml`.
    pub fn apply(&self, namespace: &str, yaml: &str) {
        let out = blocking(|| {
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
        });
        assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Changes one file of the chart's ConfigMap, as `kubectl edit` would.
    pub fn patch_configmap(&self, key: &str, content: &str) {
        let patch = serde_json::json!({"data": {key: content}}).to_string();
        self.kubectl_ok(&["patch", "configmap", "promptops-config", "-n", "promptops", "--type=merge", "-p", &patch]);
    }

    /// A hostPath PersistentVolume without a class, for the chart's claim to bind (the node
    /// has no provisioner), owned by the image's user.
    pub fn static_volume(&self, name: &str) {
        let path = self.dir.join("volumes").join(name);
        std::fs::create_dir_all(&path).unwrap();
        std::os::unix::fs::chown(&path, Some(10001), Some(10001)).unwrap();
        let yaml = format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec:\n  capacity: {{storage: 1Gi}}\n  \
             accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: \"\"\n  \
             hostPath: {{path: {}, type: Directory}}\n",
            path.display()
        );
        self.apply("default", &yaml);
    }

    /// Waits for the promptops Pod (not named `not`) to be Ready; returns it.
    pub fn wait_pod_ready(&self, namespace: &str, not: Option<&str>, timeout: Duration) -> Value {
        let selector = "app.kubernetes.io/name=promptops,app.kubernetes.io/instance=promptops";
        self.wait_json(&["get", "pods", "-n", namespace, "-l", selector], timeout, |pods| {
            ready_pod(pods, not).is_some()
        });
        let pods = self.json(&["get", "pods", "-n", namespace, "-l", selector]);
        ready_pod(&pods, not).unwrap()
    }

    pub fn wait_json(&self, args: &[&str], timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let out = self.kubectl(&[args, &["-o", "json"]].concat());
            let value: Value =
                if out.status.success() { serde_json::from_slice(&out.stdout).unwrap() } else { Value::Null };
            if check(&value) {
                return value;
            }
            assert!(start.elapsed() < timeout, "timed out waiting for {args:?}; last seen: {value:#}");
            blocking(|| std::thread::sleep(Duration::from_millis(250)));
        }
    }

    /// The last lines of the promptops container's log.
    pub fn pod_logs(&self, namespace: &str) -> String {
        let out = self.kubectl(&["logs", "-n", namespace, "deploy/promptops", "--tail=40"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Node {
    /// Also on a panic: a node left running would block the next one. Idempotent.
    fn drop(&mut self) {
        let _ = Command::new(format!("{ROOT}/scripts/k8s-node")).args(["down", self.dir.to_str().unwrap()]).output();
    }
}

fn ready_pod(pods: &Value, not: Option<&str>) -> Option<Value> {
    pods["items"].as_array()?.iter().find_map(|pod| {
        let ready =
            pod["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        let other = not.is_none_or(|name| pod["metadata"]["name"] != name);
        let live = pod["metadata"]["deletionTimestamp"].is_null();
        (ready && other && live).then(|| pod.clone())
    })
}

/// A key of a Secret, decoded.
pub fn base64_field(secret: &Value, key: &str) -> String {
    let encoded = secret["data"][key].as_str().unwrap();
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()).unwrap()
}

/// The image to test: PROMPTOPS_IMAGE_ARCHIVE, else scripts/build-image's output.
pub fn image_archive() -> PathBuf {
    if let Ok(path) = std::env::var("PROMPTOPS_IMAGE_ARCHIVE") {
        return PathBuf::from(path);
    }
    let out = Command::new(format!("{ROOT}/scripts/build-image")).stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "scripts/build-image failed (build the release binary first)");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn script(args: &[&str]) -> String {
    let out = blocking(|| {
        Command::new(format!("{ROOT}/scripts/k8s-node")).args(args).stderr(Stdio::inherit()).output().unwrap()
    });
    assert!(out.status.success(), "k8s-node {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs blocking work without holding up the tokio tasks of this worker thread (the mock
/// LLM answers from the same runtime).
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::block_in_place(work),
        Err(_) => work(),
    }
}
