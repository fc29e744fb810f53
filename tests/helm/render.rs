//! The chart on its own: `helm lint` and `helm template` with the real helm, the schema's
//! refusals, and what the rendered objects must say; and the image against the Dockerfile.

use std::process::{Command, Output};

use serde_json::Value;

use crate::node::{ROOT, image_archive};

const CI_VALUES: [&str; 4] = ["default", "namespaced", "no-controller", "full"];

fn helm(args: &[&str]) -> Output {
    let env = Command::new(format!("{ROOT}/scripts/k8s-test-env")).args(["env", "/nonexistent"]).output().unwrap();
    let env = String::from_utf8(env.stdout).unwrap();
    let bin = env.lines().find_map(|l| l.strip_prefix("export PATH=")).unwrap().trim_end_matches(":\"$PATH\"");
    Command::new(format!("{bin}/helm")).args(args).output().unwrap()
}

fn chart() -> String {
    format!("{ROOT}/charts/promptops")
}

/// `helm template promptops <chart> -n t <args>` as a list of objects.
fn template(args: &[&str]) -> Vec<Value> {
    let chart = chart();
    let out = helm(&[&["template", "promptops", chart.as_str(), "--namespace", "t"], args].concat());
    assert!(out.status.success(), "helm template {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::from_value::<Value>(serde_yaml::Value::deserialize(doc).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize as _;

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn env_of(deployment: &Value) -> Vec<(String, Value)> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e.get("value").cloned().unwrap_or(Value::Null)))
        .collect()
}

pub fn lint_and_template() {
    let chart = chart();
    let out = helm(&["lint", "--strict", &chart]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    for name in CI_VALUES {
        let values = format!("{chart}/ci/{name}-values.yaml");
        let out = helm(&["lint", "--strict", &chart, "-f", &values]);
        assert!(out.status.success(), "lint {name}: {}", String::from_utf8_lossy(&out.stdout));
        let objects = template(&["-f", &values]);
        assert!(objects.iter().any(|o| o["kind"] == "Deployment"), "{name} renders a Deployment");
    }
}

pub fn refusals() {
    let chart = chart();
    let refused = |set: &str, expected: &str| {
        let out = helm(&["template", "promptops", &chart, "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(stderr.contains(expected), "--set {set}: {expected:?} not in {stderr}");
    };
    refused("logFormat=xml", "logFormat");
    refused("bogusKey=1", "bogusKey");
    refused("controller.watchNamespaces={Not_A_Namespace}", "watchNamespaces");
    refused("replicaCount=2", "replicaCount must be 1");
    refused("terminationGracePeriodSeconds=10", "terminationGracePeriodSeconds");
}

pub fn config_and_crds() {
    let objects = template(&[]);
    let config = find(&objects, "ConfigMap", "promptops-config").unwrap();
    for file in ["config.json", "header.json", "payload.json", "prompts.json"] {
        let rendered: Value = serde_json::from_str(config["data"][file].as_str().unwrap()).unwrap();
        let example: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/config/{file}")).unwrap()).unwrap();
        assert_eq!(rendered, example, "the chart's default {file} drifted from config/{file}");
    }
    let copy = std::fs::read_to_string(format!("{ROOT}/charts/promptops/files/crds.yaml")).unwrap();
    let generated = promptops::controller::resources::definitions_yaml().unwrap();
    assert_eq!(
        copy, generated,
        "charts/promptops/files/crds.yaml drifted: promptops crds > charts/promptops/files/crds.yaml"
    );
    let crds: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "CustomResourceDefinition").collect();
    assert_eq!(crds.len(), 2);
    for crd in crds {
        assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    }
    assert!(template(&["--set", "crds.install=false"]).iter().all(|o| o["kind"] != "CustomResourceDefinition"));
}

pub fn deployment_shape() {
    let objects = template(&[]);
    let deployment = find(&objects, "Deployment", "promptops").unwrap();
    let pod = &deployment["spec"]["template"];
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(deployment["spec"]["replicas"], 1);
    let annotations = pod["metadata"]["annotations"].as_object().unwrap();
    assert!(annotations.contains_key("checksum/secret"), "a Secret change restarts");
    assert!(!annotations.keys().any(|k| k.contains("config")), "a config change must reload, not restart");
    let security = &pod["spec"]["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!((security["runAsUser"].as_i64(), security["fsGroup"].as_i64()), (Some(10001), Some(10001)));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let mounts = container["volumeMounts"].as_array().unwrap();
    let config = mounts.iter().find(|m| m["mountPath"] == "/etc/promptops/config").unwrap();
    assert!(config.get("subPath").is_none(), "a subPath mount never sees ConfigMap updates");
    assert!(mounts.iter().any(|m| m["mountPath"] == "/tmp"));
    assert!(mounts.iter().any(|m| m["mountPath"] == "/var/lib/promptops"));
    let grace = pod["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap();
    let env = env_of(deployment);
    let shutdown = env.iter().find(|(n, _)| n == "PROMPTOPS_SHUTDOWN_TIMEOUT").unwrap().1.as_str().unwrap().to_owned();
    assert!(grace > shutdown.trim_end_matches('s').parse::<i64>().unwrap(), "{grace} vs {shutdown}");
    for (name, expected) in [("PROMPTOPS_CONTROLLER", "on"), ("PROMPTOPS_LISTEN", "0.0.0.0:8080")] {
        assert!(env.iter().any(|(n, v)| n == name && v == expected), "{name}={expected} missing");
    }
    assert!(find(&objects, "PersistentVolumeClaim", "promptops-data").is_some());
    assert_eq!(pod["spec"]["enableServiceLinks"], false);
}

pub fn rbac() {
    let all = template(&[]);
    let cluster_role = all.iter().find(|o| o["kind"] == "ClusterRole").expect("a ClusterRole for all namespaces");
    let rules = cluster_role["rules"].as_array().unwrap();
    let secrets = rules.iter().find(|r| r["resources"].as_array().unwrap().contains(&"secrets".into())).unwrap();
    assert_eq!(secrets["verbs"], serde_json::json!(["get"]), "Secrets by name only");
    assert!(all.iter().any(|o| o["kind"] == "Role" && o["rules"].to_string().contains("leases")));

    let namespaced = template(&["--set", "controller.watchNamespaces={team-a,team-b}"]);
    assert!(namespaced.iter().all(|o| o["kind"] != "ClusterRole" && o["kind"] != "ClusterRoleBinding"));
    for ns in ["team-a", "team-b"] {
        for kind in ["Role", "RoleBinding"] {
            assert!(namespaced.iter().any(|o| o["kind"] == kind && o["metadata"]["namespace"] == ns), "{kind} in {ns}");
        }
    }
    let deployment = find(&namespaced, "Deployment", "promptops").unwrap();
    assert!(env_of(deployment).iter().any(|(n, v)| n == "PROMPTOPS_WATCH_NAMESPACE" && v == "team-a,team-b"));

    let off = template(&["--set", "controller.enabled=false"]);
    assert!(
        off.iter()
            .all(|o| !["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]
                .contains(&o["kind"].as_str().unwrap()))
    );
    let deployment = find(&off, "Deployment", "promptops").unwrap();
    assert!(env_of(deployment).iter().any(|(n, v)| n == "PROMPTOPS_CONTROLLER" && v == "off"));
}

/// The OCI image config scripts/build-image made says what the Dockerfile's final stage
/// says; its size is printed.
pub fn sso() {
    let objects = template(&[
        "--set",
        "sso.issuer=https://login.example.com/realms/corp",
        "--set",
        "sso.clientId=promptops",
        "--set",
        "sso.existingSecret=promptops-oidc",
        "--set",
        "sso.adminGroups={promptops-admins}",
        "--set",
        "sso.local=admin_only",
    ]);
    let config = find(&objects, "ConfigMap", "promptops-config").unwrap();
    let rendered: Value = serde_json::from_str(config["data"]["config.json"].as_str().unwrap()).unwrap();
    let auth = &rendered["auth"];
    assert_eq!(auth["local"], "admin_only");
    assert_eq!(auth["oidc"]["issuer"], "https://login.example.com/realms/corp");
    assert_eq!(auth["oidc"]["client_secret"], "${env:PROMPTOPS_OIDC_CLIENT_SECRET}", "never the secret itself");
    assert_eq!(auth["oidc"]["admin_groups"], serde_json::json!(["promptops-admins"]));
    assert!(auth["oidc"].get("username_claim").is_none(), "empty = the service's default");
    // What the chart writes is a config the service accepts.
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "header.json", "payload.json", "prompts.json"] {
        std::fs::write(dir.path().join(file), config["data"][file].as_str().unwrap()).unwrap();
    }
    let check = Command::new(env!("CARGO_BIN_EXE_promptops"))
        .args(["config", "check"])
        .arg(dir.path())
        .env("PROMPTOPS_OIDC_CLIENT_SECRET", "s")
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let deployment = find(&objects, "Deployment", "promptops").unwrap();
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    let secret = env.iter().find(|e| e["name"] == "PROMPTOPS_OIDC_CLIENT_SECRET").unwrap();
    assert_eq!(
        secret["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "promptops-oidc", "key": "client-secret"})
    );

    let plain = template(&[]);
    let config = find(&plain, "ConfigMap", "promptops-config").unwrap();
    let rendered: Value = serde_json::from_str(config["data"]["config.json"].as_str().unwrap()).unwrap();
    assert!(rendered.get("auth").is_none(), "no sso values, no auth section");
    let chart = chart();
    for (set, expected) in [
        (vec!["sso.local=off"], "needs sso.issuer"),
        (vec!["sso.issuer=https://login.example.com"], "sso.clientId is required"),
        (vec!["sso.issuer=login.example.com", "sso.clientId=x"], "issuer"),
        (vec!["sso.issuer=https://x", "sso.clientId=x", "sso.local=sometimes"], "local"),
    ] {
        let sets: Vec<&str> = set.iter().flat_map(|s| ["--set", s]).collect();
        let out = helm(&[&["template", "promptops", chart.as_str()], sets.as_slice()].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expected), "{set:?}: {expected:?} not in {stderr}");
    }
}

pub fn image_matches_dockerfile() {
    let archive = image_archive();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    let read = |digest: &str| -> Value {
        let path = dir.path().join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let index: Value = serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    let manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let config = read(manifest["config"]["digest"].as_str().unwrap())["config"].clone();

    let dockerfile = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).unwrap().replace("\\\n", " ");
    let last = dockerfile.rfind("\nFROM ").unwrap();
    let stage: Vec<(&str, &str)> = dockerfile[last..]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(' ').unwrap_or((l, "")))
        .collect();
    let get = |keyword: &str| stage.iter().rev().find(|(k, _)| *k == keyword).map(|(_, v)| v.trim()).unwrap();
    assert_eq!(config["User"], get("USER"));
    assert_eq!(config["WorkingDir"], get("WORKDIR"));
    assert_eq!(config["Entrypoint"], serde_json::from_str::<Value>(get("ENTRYPOINT")).unwrap());
    assert_eq!(config["Cmd"], serde_json::from_str::<Value>(get("CMD")).unwrap());
    assert!(config["ExposedPorts"].as_object().unwrap().contains_key(&format!("{}/tcp", get("EXPOSE"))));
    let env: Vec<&str> = config["Env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for pair in get("ENV").split_whitespace() {
        assert!(env.contains(&pair), "ENV {pair} missing from the image: {env:?}");
    }
    let compressed: u64 = manifest["layers"].as_array().unwrap().iter().map(|l| l["size"].as_u64().unwrap()).sum();
    let layer = dir
        .path()
        .join("blobs/sha256")
        .join(manifest["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:"));
    let unpacked =
        Command::new("sh").arg("-c").arg(format!("gzip -dc '{}' | wc -c", layer.display())).output().unwrap();
    let unpacked: u64 = String::from_utf8(unpacked.stdout).unwrap().trim().parse().unwrap();
    println!(
        "    image size: {:.1} MB unpacked, {:.1} MB compressed (goal: under 60 MB)",
        unpacked as f64 / 1e6,
        compressed as f64 / 1e6
    );
}
