//! The typed shape of the four config files and of the validated set built from them.
//! Plain data: reading, interpolation and checks live in `load` and `validate`.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use url::Url;

/// `config.json`: the LLM endpoints and the MCP servers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The endpoint used when a prompt names none.
    pub default_endpoint: String,
    /// LLM endpoints by name; the names key header.json and payload.json too.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// MCP servers by name.
    #[serde(default)]
    pub mcp_servers: BTreeMap<String, McpServer>,
    /// What one user may ask of the service.
    #[serde(default)]
    pub limits: Limits,
    /// How answers use tools.
    #[serde(default)]
    pub agent: AgentSettings,
    /// How scheduled jobs' answers are delivered.
    #[serde(default)]
    pub delivery: DeliverySettings,
    /// Who signs in, and how: local passwords, single sign-on, or both.
    #[serde(default)]
    pub auth: AuthSettings,
    /// Housekeeping of the database, on schedules.
    #[serde(default)]
    pub maintenance: MaintenanceSettings,
}

/// When each housekeeping task runs: a cron expression of five fields (minute hour
/// day-of-month month day-of-week, UTC); an empty one never runs on its own (the admin
/// page can still start it).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceSettings {
    /// Deletes what is older than its window.
    pub retention: RetentionSettings,
    /// Forgets sessions that ended and single sign-ins that never came back.
    pub sessions: TaskSchedule,
    /// `PRAGMA optimize` and a WAL checkpoint.
    pub optimize: TaskSchedule,
    /// An online backup into a folder, keeping the newest few.
    pub backup: BackupSettings,
}

impl Default for MaintenanceSettings {
    fn default() -> Self {
        Self {
            retention: RetentionSettings::default(),
            sessions: TaskSchedule { schedule: "*/30 * * * *".into() },
            optimize: TaskSchedule { schedule: "43 3 * * *".into() },
            backup: BackupSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSchedule {
    pub schedule: String,
}

/// Days to keep each kind of record; 0 keeps it for ever.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    pub schedule: String,
    /// Conversations not written to for this long, with their messages.
    pub conversations_days: u32,
    /// Job runs that ended this long ago, with their deliveries (each job keeps its last).
    pub job_runs_days: u32,
    /// Audit log entries.
    pub audit_days: u32,
    /// Config reload records (the latest applied one stays).
    pub config_history_days: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            schedule: "17 3 * * *".into(),
            conversations_days: 0,
            job_runs_days: 90,
            audit_days: 0,
            config_history_days: 90,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSettings {
    pub schedule: String,
    /// Where backups go; a relative path is taken from the database file's folder.
    pub dir: std::path::PathBuf,
    /// How many scheduled backups to keep (the newest); older ones are deleted.
    pub keep: u32,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self { schedule: String::new(), dir: "backups".into(), keep: 7 }
    }
}

/// Sign-in methods.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Sign-in with a promptops user name and password.
    pub local: LocalLogin,
    /// Sign-in through an OpenID Connect provider (Entra ID, Okta, Keycloak, Google, …).
    pub oidc: Option<OidcSettings>,
}

/// Who may sign in with a local password.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalLogin {
    /// Everyone with a local account.
    #[default]
    Enabled,
    /// Only admins: the break-glass way in when the provider is down.
    AdminOnly,
    /// Nobody; needs `oidc`.
    Off,
}

impl LocalLogin {
    pub fn allows(self, role: crate::auth::model::Role) -> bool {
        match self {
            Self::Enabled => true,
            Self::AdminOnly => role == crate::auth::model::Role::Admin,
            Self::Off => false,
        }
    }
}

/// One OpenID Connect provider (authorization code flow with PKCE).
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// The issuer exactly as the provider spells it (its discovery document must say the
    /// same), e.g. `https://login.example.com/realms/acme`.
    pub issuer: String,
    pub client_id: String,
    /// Only as `${env:NAME}`. Without it the client is public (PKCE only).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Scopes asked for; must include `openid`.
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// The ID token claim that becomes the promptops user name; `email` when it is absent.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// The claim listing the person's groups (in the ID token, else from the userinfo endpoint).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Only people in one of these groups may sign in; empty lets everyone the provider
    /// signs in.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// People in one of these groups are admins, the others users, decided anew at every
    /// sign-in. Empty leaves roles to the Users page.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// Text of the login page's button.
    #[serde(default = "default_oidc_label")]
    pub label: String,
    /// A first sign-in may take over a local account of the same name. Off by default:
    /// an admin allows it per account on the Users page.
    #[serde(default)]
    pub link_by_username: bool,
    /// How far the provider's clock may be off when expiry and issue times are checked.
    #[serde(default = "default_clock_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Limit for each request to the provider.
    #[serde(default = "default_oidc_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client secret stays out of every log line.
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[redacted]"))
            .field("scopes", &self.scopes)
            .field("allowed_groups", &self.allowed_groups)
            .field("admin_groups", &self.admin_groups)
            .finish_non_exhaustive()
    }
}

fn default_oidc_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}

fn default_username_claim() -> String {
    "preferred_username".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_oidc_label() -> String {
    "Sign in with single sign-on".into()
}

fn default_clock_skew() -> Duration {
    Duration::from_secs(60)
}

fn default_oidc_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Delivering job results to Jira, Confluence, webhooks and conversations.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Hosts (names or IP addresses, exactly) a webhook may reach over plain http or at a
    /// private address; by default only loopback is, and every other webhook needs https
    /// to a public address.
    pub webhook_allow: Vec<String>,
    /// Tries of a delivery that fails for a reason that may pass (an outage, a timeout)
    /// before it counts as failed.
    pub max_attempts: u32,
    /// Wait before the second try; doubled for each further one (at most an hour).
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Limit for one webhook request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            webhook_allow: Vec::new(),
            max_attempts: 6,
            retry_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
        }
    }
}

/// The agent loop: the LLM calls tools, reads their results, and answers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// Rounds of tool calls one answer may make before it must stop.
    pub max_steps: u32,
    /// How long a tool call waits for the user's approval before it counts as refused.
    #[serde(with = "humantime_serde")]
    pub approval_timeout: Duration,
    /// Longest tool result passed to the LLM, in characters; the rest is cut with a note.
    pub max_result_chars: usize,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self { max_steps: 8, approval_timeout: Duration::from_secs(30 * 60), max_result_chars: 20_000 }
    }
}

/// Per-user limits on chat.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Messages a user may send per minute (a burst of this many, refilled evenly).
    pub requests_per_minute: u32,
    /// Answers being generated for one user at the same time.
    pub concurrent_generations: u32,
    /// Longest message a user may send, in characters.
    pub max_message_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { requests_per_minute: 20, concurrent_generations: 3, max_message_chars: 32_000 }
    }
}

/// One LLM endpoint: where requests go and how patiently.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Full URL requests are POSTed to, e.g. `http://127.0.0.1:11434/v1/chat/completions`.
    pub url: Url,
    /// Model name, substituted for `{{model}}` in the payload template.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Requests to this endpoint in flight at once, over all users; more wait their turn.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u32,
    /// How to read the answer; OpenAI-compatible unless said otherwise.
    #[serde(default)]
    pub response: ResponseFormat,
}

fn default_max_concurrency() -> u32 {
    16
}

/// The shape of an endpoint's answers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(tag = "format", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    /// OpenAI chat completions: SSE chunks when streaming, one JSON object otherwise.
    #[default]
    Openai,
    /// A company LLM with its own shape: how the body is framed and where each part is,
    /// as JSON pointers (RFC 6901) into every chunk (or the one JSON body).
    Custom(CustomResponse),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomResponse {
    pub framing: Framing,
    /// Pointer to the text (a delta when streaming), e.g. `/output/text`.
    pub text: String,
    /// Pointer to tool calls in OpenAI's `tool_calls` shape.
    #[serde(default)]
    pub tool_calls: Option<String>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub prompt_tokens: Option<String>,
    #[serde(default)]
    pub completion_tokens: Option<String>,
    /// A data line that ends the stream, such as `[DONE]`.
    #[serde(default)]
    pub done_marker: Option<String>,
}

/// How a response body is cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// Server-sent events, one JSON chunk per `data:` event.
    Sse,
    /// One JSON chunk per line.
    Ndjson,
    /// One JSON body, no streaming.
    Json,
}

/// Limits on one LLM request. Written as durations: `"500ms"`, `"30s"`, `"2m"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Establishing the TCP/TLS connection.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// From sending the request to the first streamed token.
    #[serde(with = "humantime_serde")]
    pub first_token: Duration,
    /// Longest silence between two streamed chunks.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// Whole request, first byte to last.
    #[serde(with = "humantime_serde")]
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_token: Duration::from_secs(120),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// Retries of a failed LLM request, only ever before the first token reached the user.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled each time, with jitter.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Upper bound for one delay (a longer `Retry-After` is honoured up to this too).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// HTTP statuses that are worth another attempt. Connection errors always are.
    pub on_status: Vec<u16>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            on_status: vec![429, 500, 502, 503, 504],
        }
    }
}

/// One MCP server reached over streamable HTTP.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// The server's streamable-HTTP endpoint, e.g. `http://mcp-atlassian:8000/mcp`.
    pub url: Url,
    #[serde(default)]
    pub auth: McpAuth,
    /// Limit for one call to the server.
    #[serde(default = "default_mcp_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Which tools may be used, offered by default, and count as writes.
    #[serde(default)]
    pub tools: ToolSelection,
    /// How long a fetched tool list is reused.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// A session unused for this long is closed.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A harmless tool whose answer says who the server thinks the user is, for
    /// "Test connection" in Settings.
    #[serde(default)]
    pub whoami: Option<WhoAmI>,
}

fn default_mcp_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

/// A tool call that identifies the caller.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WhoAmI {
    pub tool: String,
    #[serde(default)]
    pub arguments: serde_json::Map<String, serde_json::Value>,
}

/// Tool names and `*` patterns that select a server's tools.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolSelection {
    /// Tools that may be used at all.
    pub allow: Vec<String>,
    /// Tools that may never be used, whatever `allow` says.
    pub deny: Vec<String>,
    /// Tools offered when the prompt names none; without it, the read-only ones.
    pub default: Option<Vec<String>>,
    /// Names of tools that change something, for servers that give no MCP annotations
    /// (`readOnlyHint` / `destructiveHint` win where present). Such calls wait for the
    /// user's approval.
    pub write_patterns: Vec<String>,
}

impl Default for ToolSelection {
    fn default() -> Self {
        Self {
            allow: vec!["*".into()],
            deny: Vec::new(),
            default: None,
            write_patterns: [
                "*create*",
                "*update*",
                "*delete*",
                "*add*",
                "*edit*",
                "*transition*",
                "*move*",
                "*link*",
                "*upload*",
                "*remove*",
                "*assign*",
                "*set*",
                "*write*",
                "*post*",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        }
    }
}

/// How promptops authenticates to an MCP server.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum McpAuth {
    /// The calling user's stored personal access token for `service` (Jira by default),
    /// as `Authorization: Token <PAT>`.
    UserToken {
        #[serde(default = "default_token_service")]
        service: crate::auth::model::Service,
    },
    /// No credentials.
    None,
    /// One fixed header; its value must come from `${env:…}`.
    StaticHeader { name: String, value: String },
}

impl Default for McpAuth {
    fn default() -> Self {
        Self::UserToken { service: default_token_service() }
    }
}

fn default_token_service() -> crate::auth::model::Service {
    crate::auth::model::Service::Jira
}

/// `prompts.json`: the system prompt and the named prompts users pick from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsFile {
    /// Sent as the first message of every conversation.
    pub system: String,
    /// Named prompts by slug.
    #[serde(default)]
    pub prompts: BTreeMap<String, crate::prompts::Prompt>,
}

/// Placeholders a payload template may use, each replaced by a JSON value of its type.
pub const PAYLOAD_PLACEHOLDERS: &[(&str, &str)] = &[
    ("messages", "the conversation as an array of {role, content} objects (required)"),
    ("tools", "the tool definitions offered to the model, an array"),
    ("tool_choice", "the tool choice, a string or object"),
    ("stream", "true when the answer is streamed, a boolean"),
    ("model", "the endpoint's `model`, a string"),
    ("temperature", "sampling temperature, a number"),
    ("max_tokens", "the answer's token limit, a number"),
];

/// A validated, complete configuration: what a request runs with from start to end.
#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    /// Headers per endpoint, values marked sensitive so `Debug` never shows them.
    pub headers: BTreeMap<String, Vec<(HeaderName, HeaderValue)>>,
    /// Request body template per endpoint, a JSON object with placeholders.
    pub payloads: BTreeMap<String, serde_json::Value>,
    pub prompts: PromptsFile,
}
