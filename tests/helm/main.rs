//! The Helm chart, tested with the real `helm`, `kubectl` and a real single-node cluster
//! (scripts/k8s-node: kubelet, containerd, kube-proxy …) running the promptops image that
//! scripts/build-image made. First the chart on its own (lint, render, schema), then one
//! install taken through a platform engineer's day: Ready through the kubelet's probes, a
//! chat through the Pod, a PromptJob run with only the chart's RBAC, a ConfigMap edit, an
//! upgrade, a Pod deleted mid-answer, `helm test`, `helm uninstall` and a clean teardown.
//! `cargo test --test helm [name-filter]`; PROMPTOPS_IMAGE_ARCHIVE names the image to use
//! (scripts/test builds it), else scripts/build-image is run on the release binary.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../support/mock_llm.rs"]
mod mock_llm;
mod node;
mod render;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use mock_llm::{MockLlm, Script};
use node::{Node, ROOT};

type Step = fn(Arc<Scenario>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

fn main() -> ExitCode {
    let chart_tests: Vec<(&str, fn())> = vec![
        ("chart_lints_and_renders_every_ci_values_file", render::lint_and_template),
        ("schema_and_chart_refuse_wrong_values_with_their_reason", render::refusals),
        ("default_config_is_the_example_config_and_crds_match", render::config_and_crds),
        ("deployment_is_locked_down_and_mounts_config_as_a_directory", render::deployment_shape),
        ("rbac_follows_watch_namespaces_and_controller_switch", render::rbac),
        ("sso_values_become_the_auth_section_and_a_secret_variable", render::sso),
        ("image_matches_the_dockerfile", render::image_matches_dockerfile),
    ];
    let node_steps: Vec<(&str, Step)> = vec![
        ("install_becomes_ready_through_the_kubelets_probes", |s| Box::pin(install(s))),
        ("sign_in_with_the_secrets_password_and_chat_through_the_pod", |s| Box::pin(chat(s))),
        ("examples_reconciled_in_cluster_with_the_charts_rbac_and_run_now_succeeds", |s| Box::pin(prompt_job(s))),
        ("configmap_edit_reloads_and_a_broken_edit_keeps_the_last_good_config", |s| Box::pin(config_edit(s))),
        ("upgrade_restarts_keeps_data_and_secrets_and_honours_watch_namespaces", |s| Box::pin(upgrade(s))),
        ("pod_deleted_mid_answer_shows_the_answer_failed_with_its_partial_text", |s| Box::pin(pod_deleted(s))),
        ("helm_test_passes", |s| Box::pin(helm_test(s))),
        ("uninstall_leaves_only_what_is_documented", |s| Box::pin(uninstall(s))),
    ];
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let (mut passed, mut failed) = (0, Vec::new());
    println!();
    for (name, test) in chart_tests.into_iter().filter(|(n, _)| wanted(n)) {
        let began = Instant::now();
        match std::panic::catch_unwind(test) {
            Ok(()) => {
                println!("test {name} ... ok ({:.1?})", began.elapsed());
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(name);
            }
        }
    }
    let steps: Vec<_> = node_steps.into_iter().filter(|(n, _)| wanted(n)).collect();
    if !steps.is_empty() {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let scenario = runtime.block_on(Scenario::start());
        // The steps are one story: each builds on the one before, so the first failure
        // stops the rest.
        let mut broken = false;
        for (name, step) in steps {
            if broken {
                println!("test {name} ... FAILED (skipped after an earlier failure)");
                failed.push(name);
                continue;
            }
            let began = Instant::now();
            match runtime.block_on(runtime.spawn(step(scenario.clone()))) {
                Ok(()) => {
                    println!("test {name} ... ok ({:.1?})", began.elapsed());
                    passed += 1;
                }
                Err(e) => {
                    println!("test {name} ... FAILED: {e}");
                    println!("--- promptops log (last lines) ---\n{}", scenario.node.pod_logs(NAMESPACE));
                    failed.push(name);
                    broken = true;
                }
            }
        }
        let Ok(scenario) = Arc::try_unwrap(scenario) else { panic!("a step kept the scenario") };
        let began = Instant::now();
        let leftovers = scenario.node.down();
        println!("node torn down in {:.1?}", began.elapsed());
        if leftovers.is_empty() {
            println!("test teardown_leaves_no_mounts_netns_cgroups_links_or_processes ... ok");
            passed += 1;
        } else {
            println!("test teardown_leaves_no_mounts_netns_cgroups_links_or_processes ... FAILED: {leftovers}");
            failed.push("teardown");
        }
        drop(scenario.llm);
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
    println!("\nhelm tests: {passed} passed, {} failed", failed.len());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed: {failed:?}");
        ExitCode::FAILURE
    }
}

const NAMESPACE: &str = "promptops";

/// The node, the mock LLM on the node's address, and what the steps hand on.
struct Scenario {
    node: Node,
    llm: MockLlm,
    state: std::sync::Mutex<Handed>,
}

#[derive(Default, Clone)]
struct Handed {
    password: String,
    secret: Value,
    conversation: i64,
}

impl Scenario {
    async fn start() -> Arc<Self> {
        let node = tokio::task::block_in_place(Node::up);
        let llm = MockLlm::start_on(&node.ip, Script::Echo { delay: Duration::from_millis(2) }).await;
        Arc::new(Self { node, llm, state: std::sync::Mutex::default() })
    }

    fn handed(&self) -> Handed {
        self.state.lock().unwrap().clone()
    }

    /// `helm install`/`upgrade` arguments every run shares: the local image, the static
    /// volume, the mock LLM.
    fn values(&self) -> Vec<String> {
        [
            "image.registry=localhost",
            "image.repository=promptops",
            "image.tag=test",
            "image.pullPolicy=Never",
            "persistence.storageClass=-",
            "shutdownTimeoutSeconds=5",
            "terminationGracePeriodSeconds=10",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([format!("llm.baseUrl={}", self.llm.base), "llm.model=mock".to_owned()])
        .flat_map(|v| ["--set".to_owned(), v])
        .collect()
    }

    /// The Service's address as the host reaches it (kube-proxy routes the ClusterIP).
    fn base(&self) -> String {
        let ip =
            self.node.kubectl_ok(&["get", "svc", "promptops", "-n", NAMESPACE, "-o", "jsonpath={.spec.clusterIP}"]);
        format!("http://{ip}:80")
    }

    /// Waits until the Service answers /readyz: the Pod being Ready is not enough, its
    /// endpoint must reach kube-proxy's rules too.
    async fn wait_service(&self) {
        let base = self.base();
        let start = Instant::now();
        loop {
            let ok = reqwest::get(format!("{base}/readyz")).await.is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the Service {base} does not answer");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn login(&self) -> Session {
        Session::login(&self.base(), &self.handed().password).await
    }
}

async fn install(scenario: Arc<Scenario>) {
    let node = &scenario.node;
    node.static_volume("promptops-data");
    let began = Instant::now();
    let mut args: Vec<String> = ["install", "promptops", &format!("{ROOT}/charts/promptops"), "-n", NAMESPACE]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.push("--create-namespace".into());
    args.extend(scenario.values());
    node.helm_ok(&args);
    let pod = node.wait_pod_ready(NAMESPACE, None, Duration::from_secs(120));
    println!("    helm install → Pod Ready: {:.1?}", began.elapsed());
    scenario.wait_service().await;
    println!("    helm install → /readyz through the Service: {:.1?}", began.elapsed());

    // Ready came from the kubelet's own probes of the chart.
    let spec = &pod["spec"]["containers"][0];
    assert_eq!(spec["readinessProbe"]["httpGet"]["path"], "/readyz", "{spec:#}");
    assert_eq!(spec["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(spec["startupProbe"]["httpGet"]["path"], "/healthz");
    let started = pod["status"]["containerStatuses"][0]["started"].as_bool();
    assert_eq!(started, Some(true), "the startup probe passed");
    // /readyz answers through the Service, with the controller synced in the cluster.
    let readyz = reqwest::get(format!("{}/readyz?verbose", scenario.base())).await.unwrap().text().await.unwrap();
    for check in ["[+]database ok", "[+]config ok", "[+]controller ok"] {
        assert!(readyz.contains(check), "{check} missing from {readyz}");
    }
    // In a cluster the admin password comes from the chart's Secret, never from the log.
    let secret = node.json(&["get", "secret", "promptops", "-n", NAMESPACE]);
    let password = node::base64_field(&secret, "admin-password");
    assert!(password.len() >= 16, "a generated password");
    let logs = node.pod_logs(NAMESPACE);
    assert!(!logs.contains(&password), "the admin password is in the log");
    assert!(!logs.contains("generated password"), "{logs}");
    let mut state = scenario.state.lock().unwrap();
    state.password = password;
    state.secret = secret["data"].clone();
}

async fn chat(scenario: Arc<Scenario>) {
    let session = scenario.login().await;
    let conversation = session.conversation().await;
    let message = session.send(conversation, "hello from the pod").await;
    let answer =
        session.wait_message(conversation, message, Duration::from_secs(60), |m| m["status"] != "streaming").await;
    assert_eq!(answer["status"], "complete", "{answer:#}");
    assert!(answer["content"].as_str().unwrap().contains("hello from the pod"), "{answer:#}");
    assert!(scenario.llm.received().iter().any(|r| r.body.to_string().contains("hello from the pod")));
    // A token stored now must still open after the upgrade (same encryption keys).
    let stored = session.put("/api/v1/me/credentials/jira", &json!({"token": "pat-before-upgrade-1234"})).await;
    assert!(stored.status().is_success(), "{}", stored.text().await.unwrap());
    scenario.state.lock().unwrap().conversation = conversation;
}

async fn prompt_job(scenario: Arc<Scenario>) {
    let node = &scenario.node;
    node.kubectl_ok(&["create", "namespace", "team-a"]);
    node.kubectl_ok(&["apply", "-n", "team-a", "-f", &format!("{ROOT}/examples/kubernetes/")]);
    node.kubectl_ok(&[
        "wait",
        "-n",
        "team-a",
        "--for=condition=Ready",
        "prompt/open-blockers",
        "promptjob/pay-blockers-weekly",
        "--timeout=60s",
    ]);
    let asked = scenario.llm.requests();
    node.kubectl_ok(&["annotate", "-n", "team-a", "pjob/pay-blockers-weekly", "promptops.dev/run-now=helm-1"]);
    node.wait_json(&["get", "pjob/pay-blockers-weekly", "-n", "team-a"], Duration::from_secs(60), |v| {
        v["status"]["lastRun"]["result"] == "Succeeded"
    });
    assert!(scenario.llm.requests() > asked, "the run asked the LLM");
    assert!(scenario.llm.received().iter().any(|r| r.body.to_string().contains("Jira project PAY")));
    // It was the Pod's ServiceAccount that did it: the chart's ClusterRole, nothing more.
    let can = |verb: &str, what: &str| {
        let out = node.kubectl(&[
            "auth",
            "can-i",
            verb,
            what,
            "-n",
            "team-a",
            "--as=system:serviceaccount:promptops:promptops",
        ]);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can("patch", "promptjobs.promptops.dev/status"));
    assert!(can("get", "secrets"));
    assert!(!can("list", "secrets"), "the controller only gets Secrets by name");
    assert!(!can("delete", "promptjobs.promptops.dev"));
    assert!(!can("create", "pods"));
}

async fn config_edit(scenario: Arc<Scenario>) {
    let node = &scenario.node;
    let session = scenario.login().await;
    let before = session.json("/api/v1/admin/config").await;
    let generation = before["generation"].as_u64().unwrap();
    let config = node.kubectl_ok(&[
        "get",
        "configmap",
        "promptops-config",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.data.config\\.json}",
    ]);
    let mut edited: Value = serde_json::from_str(&config).unwrap();
    edited["agent"]["max_steps"] = json!(6);
    let began = Instant::now();
    node.patch_configmap("config.json", &serde_json::to_string_pretty(&edited).unwrap());
    let after = session
        .wait_json("/api/v1/admin/config", Duration::from_secs(120), |c| {
            c["generation"].as_u64().is_some_and(|g| g > generation)
        })
        .await;
    println!(
        "    ConfigMap edit → new config generation in the Pod: {:.1?} (kubelet syncFrequency {})",
        began.elapsed(),
        node::SYNC_FREQUENCY
    );
    assert_ne!(after["sha256"], before["sha256"]);
    let pod = node.wait_pod_ready(NAMESPACE, None, Duration::from_secs(5));
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0, "a reload, not a restart");

    // A broken edit is refused; the last good config stays and the Pod stays Ready.
    node.patch_configmap("config.json", "{ this is not json");
    let rejected = session
        .wait_json("/api/v1/admin/config", Duration::from_secs(120), |c| c["last_error"].as_str().is_some())
        .await;
    assert_eq!(rejected["generation"], after["generation"], "{rejected:#}");
    assert!(rejected["last_error"].as_str().unwrap().contains("config.json"), "{rejected:#}");
    tokio::time::sleep(Duration::from_secs(6)).await; // more than a readiness period
    node.wait_pod_ready(NAMESPACE, None, Duration::from_secs(1));
    assert!(reqwest::get(format!("{}/readyz", scenario.base())).await.unwrap().status().is_success());
    let session = scenario.login().await;
    let conversation = session.conversation().await;
    let message = session.send(conversation, "still answering").await;
    let answer =
        session.wait_message(conversation, message, Duration::from_secs(60), |m| m["status"] != "streaming").await;
    assert_eq!(answer["status"], "complete", "{answer:#}");
}

async fn upgrade(scenario: Arc<Scenario>) {
    let node = &scenario.node;
    let handed = scenario.handed();
    let old_pod = node.wait_pod_ready(NAMESPACE, None, Duration::from_secs(5))["metadata"]["name"].clone();
    node.kubectl_ok(&["create", "namespace", "team-b"]);
    let mut args: Vec<String> = ["upgrade", "promptops", &format!("{ROOT}/charts/promptops"), "-n", NAMESPACE]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(scenario.values());
    args.extend(["--set".into(), "controller.watchNamespaces={team-a}".into()]);
    node.helm_ok(&args);
    let pod = node.wait_pod_ready(NAMESPACE, old_pod.as_str(), Duration::from_secs(120));
    assert_ne!(pod["metadata"]["name"], old_pod, "a changed value gives a new Pod");
    scenario.wait_service().await;

    // The same password, the same keys, the same data.
    let secret = node.json(&["get", "secret", "promptops", "-n", NAMESPACE]);
    assert_eq!(secret["data"], handed.secret, "the Secret's keys and password are kept");
    let session = scenario.login().await;
    let stored = session.json(&format!("/api/v1/conversations/{}", handed.conversation)).await;
    let text = stored.to_string();
    assert!(text.contains("hello from the pod"), "{stored:#}");
    let me = session.json("/api/v1/me").await;
    assert_eq!(me["credentials"]["jira"]["configured"], true, "{me:#}");
    assert_eq!(me["credentials"]["jira"]["hint"], "…1234", "the sealed token still opens: {me:#}");

    // Only team-a is watched now: a PromptJob in team-b is left alone.
    let ignored = include_str!("../../examples/kubernetes/promptjob.yaml").replace("pay-blockers-weekly", "ignored");
    node.apply("team-b", &ignored);
    let watched = include_str!("../../examples/kubernetes/promptjob.yaml").replace("pay-blockers-weekly", "watched");
    node.apply("team-a", &watched);
    node.kubectl_ok(&["wait", "-n", "team-a", "--for=condition=Ready", "promptjob/watched", "--timeout=60s"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = node.json(&["get", "pjob/ignored", "-n", "team-b"]);
    assert!(left["status"].is_null() && left["metadata"]["finalizers"].is_null(), "{left:#}");
    assert!(node.kubectl(&["get", "clusterrole", "promptops-promptops-controller"]).status.code() != Some(0));
    node.kubectl_ok(&["get", "role", "promptops-controller", "-n", "team-a"]);
    node.kubectl_ok(&["delete", "pjob/ignored", "-n", "team-b", "--wait=false"]);
}

async fn pod_deleted(scenario: Arc<Scenario>) {
    let node = &scenario.node;
    let session = scenario.login().await;
    let conversation = session.conversation().await;
    let pieces: Vec<String> = (0..400).map(|i| format!("part{i} ")).collect();
    scenario.llm.push(Script::Stream { pieces, delay: Duration::from_millis(100) });
    let message = session.send(conversation, "write a long answer").await;
    let partial = session
        .wait_message(conversation, message, Duration::from_secs(30), |m| {
            m["content"].as_str().is_some_and(|c| c.contains("part10 "))
        })
        .await;
    assert_eq!(partial["status"], "streaming");
    let pod =
        node.wait_pod_ready(NAMESPACE, None, Duration::from_secs(5))["metadata"]["name"].as_str().unwrap().to_owned();
    node.kubectl_ok(&["delete", "pod", &pod, "-n", NAMESPACE, "--wait=false"]);
    node.wait_pod_ready(NAMESPACE, Some(pod.as_str()), Duration::from_secs(120));
    scenario.wait_service().await;
    let session = scenario.login().await;
    let answer = session.json(&format!("/api/v1/conversations/{conversation}/messages/{message}")).await;
    assert_eq!(answer["status"], "failed", "{answer:#}");
    let content = answer["content"].as_str().unwrap();
    assert!(content.starts_with("part0 part1 ") && !content.contains("part399"), "{content}");
    assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "{answer:#}");
}

async fn helm_test(scenario: Arc<Scenario>) {
    let out = scenario.node.helm(&["test", "promptops", "-n", NAMESPACE, "--timeout", "120s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "helm test failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Phase:          Succeeded"), "{stdout}");
}

async fn uninstall(scenario: Arc<Scenario>) {
    let node = &scenario.node;
    node.kubectl_ok(&["delete", "pjob", "--all", "-n", "team-a", "--wait=true", "--timeout=60s"]);
    node.helm_ok(&["uninstall".into(), "promptops".into(), "-n".into(), NAMESPACE.into(), "--wait".into()]);
    let left = node.kubectl_ok(&[
        "get",
        "deploy,svc,configmap,secret,pvc,serviceaccount,role,rolebinding",
        "-n",
        NAMESPACE,
        "-o",
        "name",
    ]);
    let mut left: Vec<&str> =
        left.lines().filter(|l| !l.contains("kube-root-ca.crt") && !l.ends_with("/default")).collect();
    left.sort_unstable();
    // Documented in charts/promptops/README.md: the data volume and the Secret with the
    // keys that open it are kept, and the CRDs.
    assert_eq!(left, ["persistentvolumeclaim/promptops-data", "secret/promptops"]);
    for cluster_scoped in ["clusterrole", "clusterrolebinding"] {
        let names = node.kubectl_ok(&["get", cluster_scoped, "-o", "name"]);
        assert!(!names.contains("promptops"), "{names}");
    }
    node.kubectl_ok(&["get", "crd", "prompts.promptops.dev", "promptjobs.promptops.dev"]);
    assert!(node.kubectl_ok(&["get", "role", "-n", "team-a", "-o", "name"]).trim().is_empty());
}

/// A signed-in API client.
struct Session {
    base: String,
    client: reqwest::Client,
    csrf: String,
}

impl Session {
    async fn login(base: &str, password: &str) -> Self {
        let client = reqwest::Client::builder().cookie_store(true).build().unwrap();
        let response = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": "admin", "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "login: {}", response.text().await.unwrap());
        let body: Value = response.json().await.unwrap();
        Self { base: base.to_owned(), client, csrf: body["csrf_token"].as_str().unwrap().to_owned() }
    }

    async fn json(&self, path: &str) -> Value {
        let response = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("x-csrf-token", &self.csrf)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn put(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .put(format!("{}{path}", self.base))
            .header("x-csrf-token", &self.csrf)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn conversation(&self) -> i64 {
        let response = self.post("/api/v1/conversations", &json!({})).await;
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    }

    async fn send(&self, conversation: i64, content: &str) -> i64 {
        let response =
            self.post(&format!("/api/v1/conversations/{conversation}/messages"), &json!({"content": content})).await;
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
        response.json::<Value>().await.unwrap()["message_id"].as_i64().unwrap()
    }

    async fn wait_json(&self, path: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let value = self.json(path).await;
            if check(&value) {
                return value;
            }
            assert!(start.elapsed() < timeout, "timed out waiting on {path}: {value:#}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_message(
        &self,
        conversation: i64,
        message: i64,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_json(&format!("/api/v1/conversations/{conversation}/messages/{message}"), timeout, check).await
    }
}
