//! The words of a job's life, as types: where a job comes from, what starts a run, where a
//! run stands and what happens when runs would overlap. Stored as text (`sqlx::Type`),
//! shown by the API in the same spelling.

use serde::{Deserialize, Serialize};

/// Where a job comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum Source {
    Kubernetes,
    Personal,
}

/// What starts a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum Trigger {
    Schedule,
    /// "Run now" in the UI or API.
    Manual,
    /// A new value of the `promptops.dev/run-now` annotation.
    Annotation,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Annotation => "annotation",
        }
    }
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Due while another run ran, under `Forbid`; or missed past its starting deadline.
    Skipped,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }

    /// Queued or running.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Queued | Self::Running)
    }
}

/// What to do when a run is due while the previous one still runs (as a CronJob's
/// `concurrencyPolicy`).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, sqlx::Type)]
pub enum ConcurrencyPolicy {
    /// Runs may overlap.
    Allow,
    /// A run due while another runs is skipped.
    #[default]
    Forbid,
    /// A run due while another runs cancels it.
    Replace,
}

impl ConcurrencyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "Allow",
            Self::Forbid => "Forbid",
            Self::Replace => "Replace",
        }
    }
}

/// A key in a Secret of the job's namespace (PromptJobs only).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key within the Secret. Default `token`.
    #[serde(default = "token_key")]
    pub key: String,
}

fn token_key() -> String {
    "token".into()
}

/// Where a succeeded run's answer is delivered. Exactly one kind is set besides `name`.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// Names the delivery in status and pages; unique among the job's targets.
    pub name: String,
    /// A comment on a Jira issue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jira_comment: Option<JiraComment>,
    /// A Confluence page, created or updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confluence_page: Option<ConfluencePage>,
    /// An HTTP POST, signed when a Secret is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Webhook>,
    /// The next message of one conversation of the job's owner (personal jobs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationTarget>,
}

/// A comment on a Jira issue.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JiraComment {
    /// The issue key, e.g. `PAY-7`; may use the job's `{{variables}}`.
    pub issue: String,
}

/// A Confluence page in a space, found by its title.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfluencePage {
    /// The space key, e.g. `PAY`; may use the job's `{{variables}}`.
    pub space: String,
    /// The page title; may use the job's `{{variables}}` and `{{date}}` (the run's day,
    /// `YYYY-MM-DD` in the job's time zone).
    pub title: String,
    /// The id of the page a new page goes under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// `create` a new page (fails when the title is taken), `replace` the page's body, or
    /// `append` to it (both create the page when it is missing). Default `create`.
    #[serde(default)]
    pub mode: PageMode,
}

/// What a Confluence delivery does with a page of the same title.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PageMode {
    #[default]
    Create,
    Replace,
    Append,
}

/// An HTTP POST of the answer.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Webhook {
    /// Where to POST; `https` unless the host is loopback or in config.json's
    /// `delivery.webhookAllow`. Private addresses are refused unless allowed there.
    pub url: String,
    /// The Secret key whose value signs the body (`X-Promptops-Signature`, HMAC-SHA256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// `json` (an object with the run and the answer) or `markdown` (the answer). Default `json`.
    #[serde(default)]
    pub format: WebhookFormat,
}

/// The body of a webhook delivery.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    Markdown,
}

/// Each run appended to one conversation of the job's owner.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ConversationTarget {}

/// A target's kind, with its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination<'a> {
    JiraComment(&'a JiraComment),
    ConfluencePage(&'a ConfluencePage),
    Webhook(&'a Webhook),
    Conversation,
}

impl Target {
    /// A target of no kind yet, to fill in.
    pub fn named(name: &str) -> Self {
        Self { name: name.to_owned(), jira_comment: None, confluence_page: None, webhook: None, conversation: None }
    }

    /// The one kind this target sets, or why it does not.
    pub fn destination(&self) -> Result<Destination<'_>, String> {
        let kinds = [
            self.jira_comment.as_ref().map(Destination::JiraComment),
            self.confluence_page.as_ref().map(Destination::ConfluencePage),
            self.webhook.as_ref().map(Destination::Webhook),
            self.conversation.as_ref().map(|_| Destination::Conversation),
        ];
        let mut set = kinds.into_iter().flatten();
        match (set.next(), set.next()) {
            (Some(one), None) => Ok(one),
            _ => Err(format!(
                "delivery target {:?} must set exactly one of jiraComment, confluencePage, webhook, conversation",
                self.name
            )),
        }
    }
}

impl Destination<'_> {
    /// The kind's name as the spec spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::JiraComment(_) => "jiraComment",
            Self::ConfluencePage(_) => "confluencePage",
            Self::Webhook(_) => "webhook",
            Self::Conversation => "conversation",
        }
    }
}

/// Where one delivery of one run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}
