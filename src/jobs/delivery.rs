//! Delivering a succeeded run's answer where people read it: a Jira comment, a Confluence
//! page, a webhook, a conversation of the job's owner. Each (run, target) is a row of its
//! own (pending → delivered | failed) that a worker takes under a lease; transient failures
//! are tried again with backoff, refusals that will not change are not.
//!
//! Exactly once in effect: what a delivery writes carries its id (`promptops-delivery:<id>`
//! in a comment or page, the `Idempotency-Key` of a webhook), and a Jira or Confluence
//! delivery looks for its mark before writing, so a worker killed between writing and
//! recording finds its own write on the next try instead of writing again. A conversation
//! delivery writes and records in one transaction.
//!
//! Jira and Confluence writes go through the MCP servers with the job's own credentials;
//! declaring the target is the approval of the one write it implies, and it is audited.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::model::{ConfluencePage, DeliveryState, Destination, JiraComment, PageMode, Target, Webhook, WebhookFormat};
use super::{Activity, Credentials, JobError};
use crate::audit::{self, Actor, AuditLog, Outcome};
use crate::config::ConfigStore;
use crate::config::model::DeliverySettings;
use crate::db::repositories::conversations::{self, NewMessage};
use crate::db::repositories::deliveries::{self, DeliveryRow};
use crate::db::repositories::jobs::{self, JobRow, RunRow};
use crate::mcp::{McpError, McpManager, Principal, ToolOutput};

/// How long a worker holds a delivery before another may take it (its process died).
const LEASE: Duration = Duration::from_secs(120);
/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How often an idle worker looks, at the latest.
const IDLE: Duration = Duration::from_secs(30);
/// Deliveries taken per look.
const BATCH: i64 = 20;
/// Comments read back when looking for a delivery's mark.
const COMMENTS_LOOKED_AT: u32 = 100;

/// The mark a delivery leaves in what it writes, looked for before writing again.
pub fn mark(delivery_id: &str) -> String {
    format!("promptops-delivery:{delivery_id}")
}

/// Why a try did not deliver: `permanent` when trying again cannot help (a 4xx, a bad
/// target), otherwise it is tried again later.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    message: String,
    permanent: bool,
}

impl Refusal {
    fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), permanent: true }
    }

    fn transient(message: impl Into<String>) -> Self {
        Self { message: message.into(), permanent: false }
    }
}

impl From<McpError> for Refusal {
    fn from(e: McpError) -> Self {
        let permanent = matches!(e, McpError::NoToken(_) | McpError::UnknownServer(_) | McpError::Vault(_));
        Self { message: e.to_string(), permanent }
    }
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Self {
        Self::transient(format!("database: {e}"))
    }
}

/// Checks a job's targets when the job is defined: names, kinds, templates (only the job's
/// variables and `{{date}}`), webhook URLs, and what only one kind of job may use. Returns
/// the problems, first the most fundamental.
pub fn check_targets(targets: &[Target], variables: &BTreeMap<String, String>, personal: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for target in targets {
        if !crate::text::is_slug(&target.name) {
            problems.push(crate::text::slug_message("a delivery target's name"));
        }
        if !names.insert(target.name.as_str()) {
            problems.push(format!("two delivery targets are named {:?}", target.name));
        }
        let destination = match target.destination() {
            Ok(destination) => destination,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let mut template = |field: &str, text: &str| {
            if let Err(e) = fill(text, variables, Utc::now(), "UTC") {
                problems.push(format!("delivery target {:?}: {field}: {e}", target.name));
            } else if text.trim().is_empty() {
                problems.push(format!("delivery target {:?}: {field} must not be empty", target.name));
            }
        };
        match destination {
            Destination::JiraComment(comment) => template("issue", &comment.issue),
            Destination::ConfluencePage(page) => {
                template("space", &page.space);
                template("title", &page.title);
            }
            Destination::Webhook(hook) => {
                if let Err(e) = parse_webhook_url(&hook.url) {
                    problems.push(format!("delivery target {:?}: {e}", target.name));
                }
                if personal && hook.secret_ref.is_some() {
                    problems.push(format!(
                        "delivery target {:?}: a personal job cannot name a Secret (secretRef is for PromptJobs)",
                        target.name
                    ));
                }
            }
            Destination::Conversation if !personal => problems.push(format!(
                "delivery target {:?}: a conversation target is for personal jobs (a PromptJob has no owner)",
                target.name
            )),
            Destination::Conversation => {}
        }
    }
    problems
}

/// Fills `{{name}}` in a target's text from the job's variables and `date` (the run's
/// scheduled day in the job's time zone); an unknown name is an error.
fn fill(text: &str, variables: &BTreeMap<String, String>, at: DateTime<Utc>, zone: &str) -> Result<String, String> {
    let placeholders = crate::template::placeholders(text).map_err(|e| e.to_string())?;
    let date = zone
        .parse::<chrono_tz::Tz>()
        .map_or_else(|_| at.format("%Y-%m-%d").to_string(), |tz| at.with_timezone(&tz).format("%Y-%m-%d").to_string());
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for placeholder in placeholders {
        out.push_str(&text[from..placeholder.span.start]);
        match (placeholder.name, variables.get(placeholder.name)) {
            (_, Some(value)) => out.push_str(value),
            ("date", None) => out.push_str(&date),
            (name, None) => return Err(format!("{{{{{name}}}}} is neither one of the job's variables nor date")),
        }
        from = placeholder.span.end;
    }
    out.push_str(&text[from..]);
    Ok(out)
}

/// A webhook URL as a target may declare it: http(s), a host, no credentials in it.
fn parse_webhook_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("webhook url {text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("webhook url {text:?} must be https (or http to loopback or an allowed host)"));
    }
    if url.host().is_none() {
        return Err(format!("webhook url {text:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a webhook url must not hold credentials (use secretRef to sign instead)".into());
    }
    Ok(url)
}

/// Where a webhook may go: https to a public address by default; loopback always; plain
/// http or a private address only for hosts in `webhook_allow`. Returns the addresses to
/// connect to (resolved once, so a name cannot point elsewhere between check and use).
async fn webhook_addresses(url: &Url, settings: &DeliverySettings) -> Result<Vec<SocketAddr>, Refusal> {
    let host = url.host_str().ok_or_else(|| Refusal::permanent("the webhook url has no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let allowed = settings.webhook_allow.iter().any(|h| h.eq_ignore_ascii_case(bare));
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| Refusal::transient(format!("cannot resolve {bare}: {e}")))?
            .collect(),
    };
    if addresses.is_empty() {
        return Err(Refusal::transient(format!("{bare} has no address")));
    }
    let loopback = addresses.iter().all(|a| a.ip().is_loopback());
    if url.scheme() == "http" && !loopback && !allowed {
        return Err(Refusal::permanent(format!(
            "webhook to {bare} refused: plain http only to loopback or a host in delivery.webhook_allow"
        )));
    }
    if let Some(private) = addresses.iter().find(|a| !a.ip().is_loopback() && is_private(a.ip()))
        && !allowed
    {
        return Err(Refusal::permanent(format!(
            "webhook to {bare} refused: {} is a private address (allow the host in delivery.webhook_allow)",
            private.ip()
        )));
    }
    Ok(addresses)
}

/// Addresses inside a cluster or a company network rather than on the internet.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || a == 0
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_unspecified() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// `sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>`.
pub fn signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One run's delivery as its worker sees it.
struct Work<'a> {
    delivery: &'a DeliveryRow,
    job: &'a JobRow,
    run: &'a RunRow,
    /// Where the run is shown in promptops.
    link: String,
}

impl Work<'_> {
    fn fill(&self, text: &str) -> Result<String, Refusal> {
        fill(text, &self.job.variables.0, self.run.scheduled_for, &self.job.time_zone).map_err(Refusal::permanent)
    }

    /// The answer with a line linking back to the run, and the delivery's mark.
    fn body(&self) -> String {
        format!(
            "{}\n\n---\nPosted by promptops for the job {}, [run {}]({}). {}",
            self.run.output.trim_end(),
            self.job.name,
            self.run.id,
            self.link,
            mark(&self.delivery.id)
        )
    }
}

/// Takes due deliveries and carries them out.
pub struct Deliverer {
    db: SqlitePool,
    config: Arc<ConfigStore>,
    mcp: Arc<McpManager>,
    activity: Arc<Activity>,
    credentials: Arc<Credentials>,
    audit: AuditLog,
    /// `scheme://host[:port]` promptops is reached at, for links back to runs.
    public_origin: String,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer").field("public_origin", &self.public_origin).finish_non_exhaustive()
    }
}

impl Deliverer {
    pub fn new(
        db: SqlitePool,
        config: Arc<ConfigStore>,
        mcp: Arc<McpManager>,
        activity: Arc<Activity>,
        credentials: Arc<Credentials>,
        audit: AuditLog,
        public_origin: String,
    ) -> Self {
        Self { db, config, mcp, activity, credentials, audit, public_origin }
    }

    /// Carries out every delivery due now; returns how many were tried.
    pub async fn deliver_due(&self) -> Result<usize, JobError> {
        let now = Utc::now();
        let due = deliveries::due(&mut *self.db.acquire().await?, now, BATCH).await?;
        let mut tried = 0;
        for delivery in due {
            let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
            if !deliveries::take(&mut *self.db.acquire().await?, &delivery.id, now, until).await? {
                continue; // another replica has it
            }
            tried += 1;
            let attempts = delivery.attempts + 1;
            self.deliver(DeliveryRow { attempts, ..delivery }).await?;
        }
        Ok(tried)
    }

    async fn deliver(&self, delivery: DeliveryRow) -> Result<(), JobError> {
        let mut conn = self.db.acquire().await?;
        let (Some(run), Some(job)) =
            (jobs::run_by_id(&mut conn, &delivery.run_id).await?, jobs::get(&mut conn, &delivery.job_id).await?)
        else {
            return Ok(()); // deleted with its job; the cascade takes the row too
        };
        drop(conn);
        let link = format!("{}/jobs/{}#run-{}", self.public_origin, job.id, run.id);
        let work = Work { delivery: &delivery, job: &job, run: &run, link };
        let kind = delivery.target.0.destination().map(|d| d.kind()).unwrap_or("unknown");
        let result = self.attempt(&work).await;
        let settings = self.config.current().map(|s| s.config.service.delivery.clone()).unwrap_or_default();
        let mut conn = self.db.acquire().await?;
        match &result {
            Ok(written) => {
                // A conversation delivery recorded itself with its write.
                if delivery.target.0.conversation.is_none() {
                    deliveries::settle(
                        &mut conn,
                        &delivery.id,
                        DeliveryState::Delivered,
                        written.as_deref(),
                        None,
                        None,
                    )
                    .await?;
                }
                tracing::info!(job = job.name, run = run.id, target = delivery.target_name, kind, "delivered");
            }
            Err(refusal) if !refusal.permanent && delivery.attempts < i64::from(settings.max_attempts) => {
                let factor = 2u32.saturating_pow(u32::try_from(delivery.attempts - 1).unwrap_or(u32::MAX));
                let delay = settings.retry_backoff.saturating_mul(factor).min(MAX_BACKOFF);
                let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                deliveries::settle(
                    &mut conn,
                    &delivery.id,
                    DeliveryState::Pending,
                    None,
                    Some(&refusal.message),
                    Some(at),
                )
                .await?;
                tracing::warn!(job = job.name, run = run.id, target = delivery.target_name, kind, attempt = delivery.attempts, retry_in = ?delay, error = refusal.message, "delivery failed; trying again");
            }
            Err(refusal) => {
                deliveries::settle(&mut conn, &delivery.id, DeliveryState::Failed, None, Some(&refusal.message), None)
                    .await?;
                tracing::warn!(
                    job = job.name,
                    run = run.id,
                    target = delivery.target_name,
                    kind,
                    attempt = delivery.attempts,
                    error = refusal.message,
                    "delivery failed"
                );
            }
        }
        drop(conn);
        let outcome = if result.is_ok() { Outcome::Success } else { Outcome::Failure };
        let detail = format!("run {} target {} ({kind})", run.id, delivery.target_name);
        let event = audit::Event { action: "job.deliver", target: Some(&job.name), outcome, detail: Some(&detail) };
        self.audit.record(&Actor::system(), event).await;
        self.activity.changed(&job);
        Ok(())
    }

    /// One try: the address of what was written (if it has one).
    async fn attempt(&self, work: &Work<'_>) -> Result<Option<String>, Refusal> {
        let target = &work.delivery.target.0;
        match target.destination().map_err(Refusal::permanent)? {
            Destination::JiraComment(comment) => self.jira_comment(work, comment).await.map(Some),
            Destination::ConfluencePage(page) => self.confluence_page(work, page).await.map(Some),
            Destination::Webhook(hook) => self.webhook(work, hook).await.map(|()| None),
            Destination::Conversation => self.conversation(work).await.map(Some),
        }
    }

    /// Calls `tool` on the first MCP server that offers it to the job's principal.
    async fn call(&self, principal: &Principal, tool: &str, arguments: Value) -> Result<ToolOutput, Refusal> {
        let snapshot = self.config.current().ok_or_else(|| Refusal::transient("no valid configuration is loaded"))?;
        let mut unreachable = None;
        for server in snapshot.config.service.mcp_servers.keys() {
            match self.mcp.tools(&snapshot, server, principal).await {
                Ok(tools) if tools.iter().any(|t| t.name == tool && t.allowed) => {
                    let Value::Object(arguments) = arguments else { unreachable!("arguments are an object") };
                    return Ok(self.mcp.call(&snapshot, server, principal, tool, arguments).await?);
                }
                Ok(_) => {}
                Err(e) => unreachable = Some(Refusal::from(e)),
            }
        }
        Err(unreachable.unwrap_or_else(|| Refusal::permanent(format!("no MCP server offers the tool {tool}"))))
    }

    async fn principal(&self, job: &JobRow) -> Result<Principal, Refusal> {
        self.credentials.principal(job).await.map_err(Refusal::transient)
    }

    async fn jira_comment(&self, work: &Work<'_>, target: &JiraComment) -> Result<String, Refusal> {
        let issue = work.fill(&target.issue)?.trim().to_owned();
        let principal = self.principal(work.job).await?;
        let read = json!({"issue_key": issue, "fields": "comment", "comment_limit": COMMENTS_LOOKED_AT});
        let found = tool_result(self.call(&principal, "jira_get_issue", read).await?)?;
        let issue_url = found.pointer("/browse_url").and_then(Value::as_str).map(str::to_owned);
        let mark = mark(&work.delivery.id);
        if let Some(comment) = comments(&found).find(|c| c["body"].as_str().is_some_and(|b| b.contains(&mark))) {
            return Ok(comment_link(issue_url.as_deref(), &issue, comment));
        }
        let write = json!({"issue_key": issue, "comment": work.body()});
        let written = tool_result(self.call(&principal, "jira_add_comment", write).await?)?;
        Ok(comment_link(issue_url.as_deref(), &issue, &written))
    }

    async fn confluence_page(&self, work: &Work<'_>, target: &ConfluencePage) -> Result<String, Refusal> {
        let space = work.fill(&target.space)?.trim().to_owned();
        let title = work.fill(&target.title)?.trim().to_owned();
        let principal = self.principal(work.job).await?;
        let mark = mark(&work.delivery.id);
        let body = work.body();
        let read = json!({"space_key": space, "title": title, "include_metadata": true});
        let existing = self.call(&principal, "confluence_get_page", read).await?;
        let existing = if existing.is_error { None } else { serde_json::from_str::<Value>(&existing.text).ok() };
        let existing = existing.filter(|page| page_id(page).is_some());
        let Some(page) = existing else {
            let mut create = json!({"space_key": space, "title": title, "content": body, "content_format": "markdown"});
            if let Some(parent) = &target.parent_id {
                create["parent_id"] = json!(parent);
            }
            let created = tool_result(self.call(&principal, "confluence_create_page", create).await?)?;
            return page_link(&created).ok_or_else(|| Refusal::transient("the created page's answer has no id"));
        };
        let content = page_content(&page);
        if content.contains(&mark) {
            return page_link(&page).ok_or_else(|| Refusal::transient("the page's answer has no id"));
        }
        let new_content = match target.mode {
            PageMode::Create => {
                return Err(Refusal::permanent(format!(
                    "a page titled {title:?} exists already in space {space} (mode create; use replace or append)"
                )));
            }
            PageMode::Replace => body,
            PageMode::Append => format!("{}\n\n{body}", content.trim_end()),
        };
        let id = page_id(&page).unwrap_or_default();
        let update = json!({"page_id": id, "title": title, "content": new_content, "content_format": "markdown",
            "version_comment": format!("promptops run {}", work.run.id)});
        let updated = tool_result(self.call(&principal, "confluence_update_page", update).await?)?;
        page_link(&updated)
            .or_else(|| page_link(&page))
            .ok_or_else(|| Refusal::transient("the page's answer has no id"))
    }

    async fn webhook(&self, work: &Work<'_>, target: &Webhook) -> Result<(), Refusal> {
        let settings = self.config.current().map(|s| s.config.service.delivery.clone()).unwrap_or_default();
        let url = parse_webhook_url(&target.url).map_err(Refusal::permanent)?;
        let addresses = webhook_addresses(&url, &settings).await?;
        let (content_type, body) = match target.format {
            WebhookFormat::Json => (
                "application/json",
                serde_json::to_vec(&json!({
                    "delivery_id": work.delivery.id,
                    "target": work.delivery.target_name,
                    "job": {"id": work.job.id, "name": work.job.name, "namespace": work.job.namespace},
                    "run": {"id": work.run.id, "scheduled_for": work.run.scheduled_for,
                        "finished_at": work.run.finished_at, "link": work.link},
                    "output": work.run.output,
                }))
                .unwrap_or_default(),
            ),
            WebhookFormat::Markdown => ("text/markdown; charset=utf-8", work.body().into_bytes()),
        };
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .resolve_to_addrs(&host, &addresses)
            .build()
            .map_err(|e| Refusal::transient(format!("cannot build the webhook client: {e}")))?;
        let timestamp = Utc::now().timestamp();
        let mut request = client
            .post(url.clone())
            .header("content-type", content_type)
            .header("idempotency-key", &work.delivery.id)
            .header("x-promptops-timestamp", timestamp.to_string())
            .header("x-promptops-delivery", &work.delivery.id);
        if let Some(secret) = &target.secret_ref {
            let key = self
                .credentials
                .secret(work.job, &secret.name, &secret.key)
                .await
                .map_err(|e| Refusal::transient(format!("the webhook's signing key: {e}")))?;
            request =
                request.header("x-promptops-signature", signature(key.expose_secret().as_bytes(), timestamp, &body));
        }
        let response = request.body(body).send().await.map_err(|e| {
            Refusal::transient(format!("POST {}: {}", url.origin().ascii_serialization(), without_url(e)))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let message = format!("the webhook answered {status}");
        // A 4xx will not change by itself, except for these.
        let transient = status.is_server_error() || matches!(status.as_u16(), 408 | 409 | 425 | 429);
        Err(if transient { Refusal::transient(message) } else { Refusal::permanent(message) })
    }

    /// Appends the run to the owner's conversation for this target (made on the first
    /// run), and records the delivery in the same transaction.
    async fn conversation(&self, work: &Work<'_>) -> Result<String, Refusal> {
        let owner =
            work.job.owner_id.ok_or_else(|| Refusal::permanent("a conversation target needs a personal job"))?;
        let now = Utc::now();
        let mut tx = crate::db::write(&self.db).await?;
        let known = deliveries::last_conversation(&mut tx, &work.job.id, &work.delivery.target_name).await?;
        let existing = match known {
            Some(id) => conversations::get(&mut tx, owner, id).await?,
            None => None,
        };
        let conversation = match existing {
            Some(conversation) => conversation,
            None => conversations::create(&mut tx, owner, &format!("Job: {}", work.job.name), now).await?,
        };
        let question = format!("Scheduled run of {} ({})", work.job.name, work.run.scheduled_for.to_rfc3339());
        for (role, content) in [("user", question.as_str()), ("assistant", work.run.output.as_str())] {
            let message = NewMessage { role, content, status: "complete", prompt_name: None, endpoint: None };
            conversations::add_message(&mut tx, conversation.id, &message, now).await?;
        }
        deliveries::set_conversation(&mut tx, &work.delivery.id, conversation.id).await?;
        let link = format!("{}/c/{}", self.public_origin, conversation.id);
        deliveries::settle(&mut tx, &work.delivery.id, DeliveryState::Delivered, Some(&link), None, None).await?;
        tx.commit().await?;
        Ok(link)
    }
}

/// The JSON a tool answered, or why the call counts as failed: mcp-atlassian reports a
/// service's refusal as an error result whose text names the HTTP status.
fn tool_result(output: ToolOutput) -> Result<Value, Refusal> {
    if output.is_error {
        return Err(classify(&output.text));
    }
    match serde_json::from_str::<Value>(&output.text) {
        Ok(Value::Object(map)) if map.get("success") == Some(&Value::Bool(false)) || map.contains_key("error") => {
            Err(classify(&output.text))
        }
        Ok(value) => Ok(value),
        Err(_) => Ok(Value::String(output.text)),
    }
}

/// A refusal that names a client error (bad request, not allowed, not found) is permanent;
/// everything else (outages, timeouts) may pass. mcp-atlassian passes on the service's own
/// message (`You do not have the permission…`, `User not permitted…`), with the status only
/// for server errors (`503 Server Error…`), so both are looked for.
fn classify(text: &str) -> Refusal {
    let (short, _) = crate::text::prefix(text.trim(), 500);
    let lower = text.to_ascii_lowercase();
    let permanent = [
        "400",
        "401",
        "403",
        "404",
        "forbidden",
        "unauthorized",
        "permission",
        "not permitted",
        "not found",
        "does not exist",
        "already exists",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
        && !["500", "502", "503", "504", "unavailable", "timed out", "timeout"].iter().any(|n| lower.contains(n));
    Refusal { message: short.to_owned(), permanent }
}

/// The comments in a `jira_get_issue` answer.
fn comments(issue: &Value) -> impl Iterator<Item = &Value> {
    let list = issue.pointer("/comments").or_else(|| issue.pointer("/fields/comment/comments"));
    list.and_then(Value::as_array).into_iter().flatten()
}

fn comment_link(issue_url: Option<&str>, issue: &str, comment: &Value) -> String {
    let id = comment.pointer("/id").or_else(|| comment.pointer("/comment/id")).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    let base = issue_url.map_or_else(|| issue.to_owned(), str::to_owned);
    match id {
        Some(id) => format!("{base}?focusedCommentId={id}"),
        None => base,
    }
}

fn page_object(page: &Value) -> &Value {
    page.get("metadata").or_else(|| page.get("page")).unwrap_or(page)
}

fn page_id(page: &Value) -> Option<String> {
    match page_object(page).get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn page_link(page: &Value) -> Option<String> {
    let object = page_object(page);
    object.get("url").and_then(Value::as_str).map(str::to_owned).or_else(|| page_id(page))
}

fn page_content(page: &Value) -> String {
    let object = page_object(page);
    let content = object.get("content").or_else(|| page.get("content"));
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(map)) => map.get("value").and_then(Value::as_str).unwrap_or_default().to_owned(),
        _ => String::new(),
    }
}

/// A reqwest error's text without the URL (which may hold a path people consider secret).
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    if let Some(source) = std::error::Error::source(&e) {
        text = format!("{text}: {source}");
    }
    text
}

/// Delivers due deliveries until `shutdown`; woken when runs succeed.
pub async fn run(deliverer: Arc<Deliverer>, shutdown: CancellationToken) {
    loop {
        let tried = match deliverer.deliver_due().await {
            Ok(tried) => tried,
            Err(e) => {
                tracing::warn!(error = %e, "delivering job results failed; trying again soon");
                0
            }
        };
        if tried > 0 {
            continue;
        }
        let wait = match deliveries::next_due(&mut *match deliverer.db.acquire().await {
            Ok(conn) => conn,
            Err(_) => {
                tokio::time::sleep(IDLE).await;
                continue;
            }
        })
        .await
        {
            Ok(Some(at)) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(IDLE),
            _ => IDLE,
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = deliverer.activity.deliveries.notified() => {}
            () = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
        }
    }
}

impl super::JobStore {
    /// A run's deliveries (for a job the user may see).
    pub async fn deliveries(&self, user_id: i64, job_id: &str, run_id: &str) -> Result<Vec<DeliveryRow>, JobError> {
        self.find_run(user_id, job_id, run_id).await?;
        Ok(deliveries::for_run(&mut *self.db.acquire().await?, run_id).await?)
    }

    /// "Deliver again" for a failed delivery: a personal job's owner, or an admin for a
    /// Kubernetes job.
    pub async fn redeliver(
        &self,
        user_id: i64,
        is_admin: bool,
        job_id: &str,
        run_id: &str,
        target: &str,
        actor: &Actor,
    ) -> Result<DeliveryRow, JobError> {
        let job = self.get(user_id, job_id).await?;
        if job.source == super::Source::Kubernetes && !is_admin {
            return Err(JobError::Forbidden);
        }
        let found = self.deliveries(user_id, job_id, run_id).await?.into_iter().find(|d| d.target_name == target);
        let delivery = found.ok_or(JobError::NotFound)?;
        let mut conn = self.db.acquire().await?;
        if !deliveries::retry(&mut conn, &delivery.id, Utc::now()).await? {
            return Err(JobError::Invalid(format!(
                "the delivery to {target} is {}; only a failed one can be delivered again",
                delivery.state.as_str()
            )));
        }
        self.activity.deliveries.notify_one();
        self.activity.changed(&job);
        self.record(actor, "job.redeliver", &job, Some(&format!("run {run_id} target {target}"))).await;
        deliveries::by_id(&mut conn, &delivery.id).await?.ok_or(JobError::NotFound)
    }

    /// The deliveries of a job's history (the runs [`super::JobStore::runs`] lists), by run.
    pub async fn history_deliveries(
        &self,
        user_id: i64,
        job_id: &str,
    ) -> Result<BTreeMap<String, Vec<DeliveryRow>>, JobError> {
        self.get(user_id, job_id).await?;
        let list = deliveries::for_latest_runs(&mut *self.db.acquire().await?, job_id, super::HISTORY).await?;
        let mut by_run: BTreeMap<String, Vec<DeliveryRow>> = BTreeMap::new();
        for delivery in list {
            by_run.entry(delivery.run_id.clone()).or_default().push(delivery);
        }
        Ok(by_run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_take_the_jobs_variables_and_the_runs_date_in_its_zone() {
        let variables = BTreeMap::from([("project".to_owned(), "PAY".to_owned())]);
        let at: DateTime<Utc> = "2026-12-06T23:30:00Z".parse().unwrap();
        assert_eq!(fill("{{project}}-7", &variables, at, "UTC").unwrap(), "PAY-7");
        assert_eq!(fill("Blockers {{date}}", &variables, at, "Europe/Berlin").unwrap(), "Blockers 2026-12-07");
        assert!(fill("{{nope}}", &variables, at, "UTC").unwrap_err().contains("nope"));
    }

    #[test]
    fn a_target_sets_exactly_one_kind_and_personal_and_cluster_jobs_differ() {
        let target = |json: Value| serde_json::from_value::<Target>(json).unwrap();
        let none = target(json!({"name": "x"}));
        let both = target(json!({"name": "x", "jiraComment": {"issue": "PAY-7"}, "conversation": {}}));
        let conversation = target(json!({"name": "mine", "conversation": {}}));
        let signed =
            target(json!({"name": "hook", "webhook": {"url": "https://example.com/h", "secretRef": {"name": "s"}}}));
        let empty = BTreeMap::new();
        assert!(check_targets(&[none], &empty, true)[0].contains("exactly one"));
        assert!(check_targets(&[both], &empty, true)[0].contains("exactly one"));
        assert!(check_targets(std::slice::from_ref(&conversation), &empty, true).is_empty());
        assert!(check_targets(&[conversation], &empty, false)[0].contains("personal jobs"));
        assert!(check_targets(std::slice::from_ref(&signed), &empty, false).is_empty());
        assert!(check_targets(&[signed], &empty, true)[0].contains("cannot name a Secret"));
        let ftp = target(json!({"name": "f", "webhook": {"url": "ftp://example.com"}}));
        assert!(check_targets(&[ftp], &empty, false)[0].contains("must be https"));
        let unknown = target(json!({"name": "j", "jiraComment": {"issue": "{{project}}-7"}}));
        assert!(check_targets(&[unknown.clone(), unknown], &empty, false).iter().any(|p| p.contains("two delivery")));
        assert!(
            serde_json::from_value::<Target>(json!({"name": "s", "slack": {}})).is_err(),
            "unknown kinds are refused"
        );
    }

    #[tokio::test]
    async fn webhooks_go_to_public_https_or_loopback_and_private_hosts_only_when_allowed() {
        let settings = DeliverySettings::default();
        let check = |url: &str, settings: DeliverySettings| {
            let url = Url::parse(url).unwrap();
            async move { webhook_addresses(&url, &settings).await }
        };
        assert!(check("http://127.0.0.1:9/hook", settings.clone()).await.is_ok());
        assert!(check("http://[::1]:9/hook", settings.clone()).await.is_ok());
        for private in
            ["https://10.0.0.5/h", "https://169.254.169.254/latest", "https://[fd00::1]/h", "http://192.168.1.2/h"]
        {
            let refused = check(private, settings.clone()).await.unwrap_err();
            assert!(refused.permanent && refused.message.contains("refused"), "{private}: {refused:?}");
        }
        assert!(check("http://93.184.215.14/h", settings.clone()).await.unwrap_err().message.contains("plain http"));
        assert!(check("https://93.184.215.14/h", settings.clone()).await.is_ok());
        let allowing = DeliverySettings { webhook_allow: vec!["10.0.0.5".into()], ..settings };
        assert!(check("http://10.0.0.5/h", allowing).await.is_ok());
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_and_body() {
        let key = b"Jefe";
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(b"1.body");
        assert_eq!(signature(key, 1, b"body"), format!("sha256={}", hex::encode(mac.finalize().into_bytes())));
        assert_ne!(signature(key, 2, b"body"), signature(key, 1, b"body"));
    }

    #[test]
    fn client_errors_are_permanent_and_outages_are_not() {
        assert!(classify("Error calling tool: 403 Client Error: Forbidden for url").permanent);
        assert!(classify("Error adding comment: You do not have the permission to comment on this issue.").permanent);
        assert!(classify("Failed to create page 'X' in space PAY: User not permitted to create").permanent);
        assert!(!classify("503 Server Error: Service Unavailable").permanent);
        assert!(!classify("connection reset").permanent);
    }
}
