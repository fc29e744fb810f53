//! The custom resources platform engineers apply: `Prompt` and `PromptJob` in group
//! `promptops.dev`, version `v1alpha1`. The CRD YAML in `crds/` is generated from these
//! types (`promptops crds`); a test fails when the two drift apart.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt as _, KubeSchema};
use serde::{Deserialize, Serialize};

pub use crate::jobs::ConcurrencyPolicy;
pub use crate::jobs::model::{SecretKeyRef, Target};
use crate::prompts::{self, Problem, Variable};

/// The group both kinds belong to.
pub const GROUP: &str = "promptops.dev";
/// Annotation whose every new value runs a PromptJob once, now.
pub const RUN_NOW_ANNOTATION: &str = "promptops.dev/run-now";

/// A shared prompt: a template with `{{variables}}` that chat users pick from the prompt
/// library and PromptJobs run on a schedule.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "promptops.dev",
    version = "v1alpha1",
    kind = "Prompt",
    namespaced,
    shortname = "pmt",
    category = "promptops",
    status = "PromptStatus",
    doc = "A shared prompt for the promptops prompt library and for PromptJobs.",
    printcolumn = r#"{"name": "Title", "type": "string", "jsonPath": ".spec.title"}"#,
    printcolumn = r#"{"name": "Endpoint", "type": "string", "jsonPath": ".spec.endpoint"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PromptSpec {
    /// Human-readable title shown in the prompt library (defaults to the resource name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub title: Option<String>,
    /// What the prompt is for, shown under its title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The prompt text. `{{name}}` is replaced by the variable `name`; every placeholder must
    /// be declared under `variables`.
    #[schemars(length(max = 20000))]
    #[x_kube(validation = Rule::new("size(self.trim()) > 0").message("template must not be empty"))]
    pub template: String,
    /// The variables the template uses (at most 50, names unique).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub variables: Vec<Variable>,
    /// The config.json endpoint to use; the default endpoint when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The MCP tools the prompt may use (names or `*` patterns); the servers' default
    /// selections when unset, none when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
}

/// What promptops made of a Prompt.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PromptStatus {
    /// `Ready` says whether the prompt is valid and in the library.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A prompt run on a cron schedule, unattended, under the credentials of a Secret.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "promptops.dev",
    version = "v1alpha1",
    kind = "PromptJob",
    namespaced,
    shortname = "pjob",
    category = "promptops",
    status = "PromptJobStatus",
    doc = "A prompt that promptops runs on a cron schedule and whose results show in status.",
    printcolumn = r#"{"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"}"#,
    printcolumn = r#"{"name": "Timezone", "type": "string", "jsonPath": ".spec.timeZone"}"#,
    printcolumn = r#"{"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"}"#,
    printcolumn = r#"{"name": "Last Run", "type": "date", "jsonPath": ".status.lastRun.startTime"}"#,
    printcolumn = r#"{"name": "Result", "type": "string", "jsonPath": ".status.lastRun.result"}"#,
    printcolumn = r#"{"name": "Delivered", "type": "string", "jsonPath": ".status.lastRun.delivered"}"#,
    printcolumn = r#"{"name": "Next Run", "type": "string", "jsonPath": ".status.nextRunTime"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.promptRef) != has(self.prompt)").message("set exactly one of promptRef and prompt"))]
#[serde(rename_all = "camelCase")]
pub struct PromptJobSpec {
    /// When to run, as a five-field cron expression (minute hour day-of-month month
    /// day-of-week), e.g. `0 9 * * MON`.
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new("self.matches('^\\\\s*\\\\S+(\\\\s+\\\\S+){4}\\\\s*$')").message("schedule must be a five-field cron expression"))]
    pub schedule: String,
    /// The IANA time zone the schedule is read in, e.g. `Europe/Berlin`. Default `UTC`.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// The Prompt (in the same namespace) to run. Exclusive with `prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_ref: Option<PromptRef>,
    /// The prompt text to run, when no Prompt resource is referenced. Exclusive with
    /// `promptRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Values for the prompt's variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// Stop scheduling new runs (running ones finish). Default false.
    #[serde(default)]
    pub suspend: bool,
    /// What to do when a run is due while the previous one still runs: `Allow` both,
    /// `Forbid` (skip the new one) or `Replace` (cancel the old one). Default `Forbid`.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A run that could not start within this many seconds of its scheduled time (for
    /// example, promptops was down) is skipped. Unset: missed runs are skipped, except the
    /// most recent one, which runs at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("startingDeadlineSeconds must be at least 1"))]
    pub starting_deadline_seconds: Option<i64>,
    /// How failed runs are retried.
    #[serde(default)]
    pub retries: Retries,
    /// The Secret key holding the personal access token runs use for Jira/Confluence tools.
    /// Without it, runs answer without those tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretKeyRef>,
    /// Write tools (names or `*` patterns) the unattended run may call without approval.
    /// Every other write tool is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_write_tools: Vec<String>,
    /// Where each succeeded run's answer is delivered: a list of targets, each with a
    /// unique `name` and exactly one of `jiraComment`, `confluencePage` or `webhook`.
    /// Declaring a Jira or Confluence target approves the one write it implies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[x_kube(validation = Rule::new("self.all(t, (has(t.jiraComment) ? 1 : 0) + (has(t.confluencePage) ? 1 : 0) + (has(t.webhook) ? 1 : 0) + (has(t.conversation) ? 1 : 0) == 1)").message("each delivery target sets exactly one of jiraComment, confluencePage, webhook"))]
    pub deliver: Vec<Target>,
}

fn utc() -> String {
    "UTC".into()
}

/// A Prompt in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PromptRef {
    /// The Prompt's name.
    pub name: String,
}

impl PromptSpec {
    /// The prompt this spec declares for the resource `name` (its title by default).
    pub fn to_prompt(&self, name: &str) -> prompts::Prompt {
        prompts::Prompt {
            title: self.title.clone().filter(|t| !t.trim().is_empty()).unwrap_or_else(|| name.to_owned()),
            description: self.description.clone().unwrap_or_default(),
            template: self.template.clone(),
            variables: self.variables.clone(),
            endpoint: self.endpoint.clone(),
            tools: self.tools.clone(),
        }
    }

    /// Why this spec cannot be used, as a condition reason and message, found without
    /// asking the API server: the library's own check ([`prompts::validate`]), whose first
    /// problem is shown; `InvalidTemplate` for the template and its variables,
    /// `InvalidPrompt` for the other fields.
    pub fn problem(&self, name: &str) -> Option<(&'static str, String)> {
        Self::problem_of(&self.to_prompt(name))
    }

    /// [`PromptSpec::problem`] of the prompt [`PromptSpec::to_prompt`] made.
    pub fn problem_of(prompt: &prompts::Prompt) -> Option<(&'static str, String)> {
        let problems = prompts::validate(prompt, None);
        let first: &Problem = problems.first()?;
        let reason = if first.in_template() { "InvalidTemplate" } else { "InvalidPrompt" };
        let more = match problems.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        Some((reason, format!("{first}{more}")))
    }
}

impl PromptJobSpec {
    /// Why this spec cannot be scheduled, found without asking the API server: its
    /// schedule or time zone. (A missing Prompt or Secret is the reconciler's to find.)
    pub fn problem(&self) -> Option<(&'static str, String)> {
        match crate::jobs::Schedule::parse(&self.schedule, &self.time_zone) {
            Err(e @ crate::jobs::ScheduleError::TimeZone(_)) => Some(("InvalidTimeZone", e.to_string())),
            Err(e) => Some(("InvalidSchedule", e.to_string())),
            Ok(_) => None,
        }
    }

    /// The names of the Secrets this spec reads: its credentials and its webhooks' keys.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        let hooks = self.deliver.iter().filter_map(|t| t.webhook.as_ref()?.secret_ref.as_ref());
        self.credentials_secret_ref.iter().chain(hooks).map(|r| r.name.as_str())
    }
}

/// Retries of a failed run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Retries {
    /// How many times a failed run is tried again. Default 0.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 10").message("retries.limit must be between 0 and 10"))]
    pub limit: i64,
    /// Seconds to wait before the first retry; doubled for each further one. Default 60.
    #[serde(default = "sixty")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 86400").message("retries.backoffSeconds must be between 1 and 86400"))]
    pub backoff_seconds: i64,
}

impl Default for Retries {
    fn default() -> Self {
        Self { limit: 0, backoff_seconds: 60 }
    }
}

fn sixty() -> i64 {
    60
}

/// What promptops made of a PromptJob and how its runs went.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PromptJobStatus {
    /// `Ready` says whether the job is scheduled, and if not, why (InvalidSchedule,
    /// PromptNotFound, CredentialsMissing, Suspended, …).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the next run is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<DateTime<Utc>>,
    /// When a run was last scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<DateTime<Utc>>,
    /// The latest finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LastRun>,
    /// Ids of runs in progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    /// The last value of the `promptops.dev/run-now` annotation that was acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_run_now: Option<String>,
}

/// A finished run, as status reports it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    /// The run's id (as in the promptops UI and API).
    pub id: String,
    /// When it started.
    pub start_time: DateTime<Utc>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<DateTime<Utc>>,
    /// `Succeeded` or `Failed`.
    pub result: String,
    /// The first line of the answer or the reason it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Delivered targets of all, e.g. `2/2`, when the job delivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<String>,
    /// Each target's delivery of this run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<DeliveryStatus>,
}

/// Where one delivery of a run stands.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStatus {
    /// The target's name.
    pub target: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Tries so far.
    pub attempts: i64,
    /// What was written, when it has an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Why the last try failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Both CRDs, as applied to a cluster.
pub fn definitions() -> Vec<CustomResourceDefinition> {
    vec![Prompt::crd(), PromptJob::crd()]
}

/// Both CRDs as one multi-document YAML stream.
pub fn definitions_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::from("# Generated by `promptops crds` from src/controller/resources.rs. Do not edit.\n");
    for crd in definitions() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
