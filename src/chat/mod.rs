//! Conversations and the answers in them: sending a message starts a generation that runs
//! server-side, detached from the request; its events can be followed and resumed; every
//! message is stored with its outcome. Uses `llm` for the asking and `db` for the keeping.

pub mod agent;
pub mod generation;
pub mod limits;
pub mod markdown;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::SqlitePool;

use crate::config::model::NamedPrompt;
use crate::config::{ConfigSnapshot, ConfigStore};
use crate::db::repositories::conversations::{self, Conversation, Message, NewMessage, Outcome, ToolCallRow};
use crate::db::repositories::jobs;
use crate::llm::LlmClient;
use crate::mcp::McpManager;
use crate::mcp::Principal;
use crate::telemetry::metrics::Metrics;
use agent::{AgentRun, Approval, ToolLog};
use generation::{ChatEvent, Generation, NotPending, RETENTION, Registry};
use limits::SendRate;

/// Title of a conversation until its first message names it.
pub const DEFAULT_TITLE: &str = "New conversation";
const TITLE_CHARS: usize = 60;
/// How often the text of an answer in progress is saved.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("no such conversation")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("too many messages; try again in {} s", .0.as_secs().max(1))]
    RateLimited(Duration),
    #[error("{0} answers are already being written for you; wait for one to finish or stop it")]
    TooManyGenerations(u32),
    #[error("no valid configuration is loaded, so there is no LLM to ask")]
    NoConfig,
    #[error("no tool call with this id is waiting for approval")]
    NotPending,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What a user sends.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    pub content: String,
    /// A named prompt of prompts.json; its rendered template comes first.
    pub prompt: Option<String>,
    pub variables: BTreeMap<String, String>,
}

/// The ids of a sent message and of the answer being generated for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sent {
    pub user_message_id: i64,
    pub message_id: i64,
}

/// A prompt users can pick, as the prompt library and the composer show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromptInfo {
    pub name: String,
    pub title: String,
    pub description: String,
    pub source: &'static str,
    pub variables: Vec<VariableInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VariableInfo {
    pub name: String,
    pub description: String,
    pub required: bool,
    pub default: Option<String>,
}

#[derive(Debug)]
pub struct ChatService {
    db: SqlitePool,
    config: Arc<ConfigStore>,
    llm: Arc<LlmClient>,
    mcp: Arc<McpManager>,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    rate: SendRate,
    /// Sends admitted but whose generation is not registered yet, per user: counted with
    /// the running ones so two concurrent sends cannot both slip under the limit.
    admitting: Mutex<BTreeMap<i64, usize>>,
}

impl ChatService {
    pub fn new(
        db: SqlitePool,
        config: Arc<ConfigStore>,
        llm: Arc<LlmClient>,
        mcp: Arc<McpManager>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            db,
            config,
            llm,
            mcp,
            metrics,
            registry: Arc::new(Registry::default()),
            rate: SendRate::default(),
            admitting: Mutex::new(BTreeMap::new()),
        }
    }

    /// At start no generation can be running: answers left 'streaming' by a crash or a
    /// kill are marked failed, their partial text kept, and so are their open tool calls.
    pub async fn recover(&self) -> Result<u64, sqlx::Error> {
        let reason = "interrupted: the server stopped while this answer was being written";
        let mut conn = self.db.acquire().await?;
        conversations::fail_interrupted_tool_calls(&mut conn, Utc::now()).await?;
        conversations::fail_interrupted(&mut conn, reason, Utc::now()).await
    }

    /// The user's decision on a write tool call an answer is waiting for; returns the tool.
    pub async fn decide(
        &self,
        user_id: i64,
        conversation_id: i64,
        message_id: i64,
        call_id: &str,
        approve: bool,
    ) -> Result<String, ChatError> {
        self.message(user_id, conversation_id, message_id).await?;
        let generation = self.generation(user_id, message_id).ok_or(ChatError::NotPending)?;
        generation.decide(call_id, approve).map_err(|NotPending| ChatError::NotPending)
    }

    /// The tool calls of a conversation's answers.
    pub async fn tool_calls(&self, user_id: i64, conversation_id: i64) -> Result<Vec<ToolCallRow>, ChatError> {
        Ok(conversations::tool_calls(&mut *self.db.acquire().await?, user_id, conversation_id).await?)
    }

    pub async fn create(&self, user_id: i64, title: Option<&str>) -> Result<Conversation, ChatError> {
        let title = clean_title(title.unwrap_or(DEFAULT_TITLE))?;
        Ok(conversations::create(&mut *self.db.acquire().await?, user_id, &title, Utc::now()).await?)
    }

    pub async fn list(&self, user_id: i64, query: Option<&str>) -> Result<Vec<Conversation>, ChatError> {
        let query = query.map(str::trim).filter(|q| !q.is_empty());
        Ok(conversations::list(&mut *self.db.acquire().await?, user_id, query, 200).await?)
    }

    pub async fn get(&self, user_id: i64, id: i64) -> Result<(Conversation, Vec<Message>), ChatError> {
        let mut conn = self.db.acquire().await?;
        let conversation = conversations::get(&mut conn, user_id, id).await?.ok_or(ChatError::NotFound)?;
        let messages = conversations::messages(&mut conn, user_id, id).await?;
        Ok((conversation, messages))
    }

    pub async fn message(&self, user_id: i64, conversation_id: i64, id: i64) -> Result<Message, ChatError> {
        conversations::message(&mut *self.db.acquire().await?, user_id, conversation_id, id)
            .await?
            .ok_or(ChatError::NotFound)
    }

    pub async fn rename(&self, user_id: i64, id: i64, title: &str) -> Result<Conversation, ChatError> {
        let title = clean_title(title)?;
        let mut conn = self.db.acquire().await?;
        if !conversations::rename(&mut conn, user_id, id, &title, Utc::now()).await? {
            return Err(ChatError::NotFound);
        }
        conversations::get(&mut conn, user_id, id).await?.ok_or(ChatError::NotFound)
    }

    /// Deletes a conversation, stopping any answer still being written in it.
    pub async fn delete(&self, user_id: i64, id: i64) -> Result<(), ChatError> {
        conversations::get(&mut *self.db.acquire().await?, user_id, id).await?.ok_or(ChatError::NotFound)?;
        for generation in self.registry.running_in(id) {
            generation.cancel.cancel();
        }
        if !conversations::delete(&mut *self.db.acquire().await?, user_id, id).await? {
            return Err(ChatError::NotFound);
        }
        Ok(())
    }

    /// The prompts users can pick from the live prompts.json.
    pub fn prompts(&self) -> Vec<PromptInfo> {
        self.config.current().map(|snapshot| prompt_infos(&snapshot)).unwrap_or_default()
    }

    /// Stores the user's message and starts the answer. Returns at once; the answer is
    /// written in the background whatever happens to the request that asked for it.
    pub async fn send(&self, user_id: i64, conversation_id: i64, send: Ask) -> Result<Sent, ChatError> {
        let snapshot = self.config.current().ok_or(ChatError::NoConfig)?;
        let limits = snapshot.config.service.limits.clone();
        let resource = match send.prompt.as_deref().and_then(|name| name.split_once('/')) {
            Some((namespace, name)) => jobs::prompt_named(&mut *self.db.acquire().await?, namespace, name)
                .await?
                .map(crate::jobs::named_prompt),
            None => None,
        };
        let (content, prompt) = compose(&snapshot, resource.as_ref(), &send)?;
        let length = content.chars().count();
        if length > limits.max_message_chars {
            return Err(ChatError::TooLarge(format!(
                "the message has {length} characters; the limit is {}",
                limits.max_message_chars
            )));
        }
        let endpoint =
            prompt.and_then(|p| p.endpoint.clone()).unwrap_or_else(|| snapshot.config.service.default_endpoint.clone());

        let mut conn = self.db.acquire().await?;
        let conversation = conversations::get(&mut conn, user_id, conversation_id).await?.ok_or(ChatError::NotFound)?;
        self.rate.check(user_id, limits.requests_per_minute).map_err(ChatError::RateLimited)?;
        let admitted = self.admit(user_id, limits.concurrent_generations)?;
        let now = Utc::now();
        let prompt_name = send.prompt.as_deref();
        let user_message_id = conversations::add_message(
            &mut conn,
            conversation_id,
            &NewMessage { role: "user", content: &content, status: "complete", prompt_name, endpoint: None },
            now,
        )
        .await?;
        let message_id = conversations::add_message(
            &mut conn,
            conversation_id,
            &NewMessage { role: "assistant", content: "", status: "streaming", prompt_name, endpoint: Some(&endpoint) },
            now,
        )
        .await?;
        if conversation.title == DEFAULT_TITLE {
            let title: String =
                content.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(TITLE_CHARS).collect();
            conversations::rename(&mut conn, user_id, conversation_id, &title, now).await?;
        }
        drop(conn);

        let generation = Arc::new(Generation::new(message_id, conversation_id, user_id));
        self.registry.insert(generation.clone());
        drop(admitted);
        let history = self.history(user_id, conversation_id, &snapshot).await?;
        let prompt_tools = prompt.and_then(|p| p.tools.clone());
        let task = Task {
            agent: AgentRun {
                db: self.db.clone(),
                llm: self.llm.clone(),
                mcp: self.mcp.clone(),
                metrics: self.metrics.clone(),
                snapshot,
                endpoint,
                principal: Principal::User(user_id),
                prompt_tools,
                approval: Approval::Ask,
                tool_log: ToolLog::Message,
                generation,
            },
            history,
            registry: self.registry.clone(),
        };
        tokio::spawn(task.run());
        Ok(Sent { user_message_id, message_id })
    }

    /// Reserves one of the user's concurrent generations until the guard is dropped.
    fn admit(&self, user_id: i64, limit: u32) -> Result<Admitted<'_>, ChatError> {
        let mut admitting = self.admitting.lock().unwrap_or_else(PoisonError::into_inner);
        let pending = admitting.get(&user_id).copied().unwrap_or(0);
        if self.registry.running_for(user_id) + pending >= limit as usize {
            return Err(ChatError::TooManyGenerations(limit));
        }
        admitting.insert(user_id, pending + 1);
        Ok(Admitted { service: self, user_id })
    }

    /// The generation of one of the user's messages, while its events are kept.
    pub fn generation(&self, user_id: i64, message_id: i64) -> Option<Arc<Generation>> {
        self.registry.get(message_id).filter(|g| g.user_id == user_id)
    }

    /// Stops an answer being written; false when it had already ended.
    pub async fn cancel(&self, user_id: i64, conversation_id: i64, message_id: i64) -> Result<bool, ChatError> {
        self.message(user_id, conversation_id, message_id).await?;
        match self.generation(user_id, message_id) {
            Some(generation) if !generation.is_finished() => {
                generation.cancel.cancel();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Answers being generated now, across all users.
    pub fn running(&self) -> usize {
        self.registry.running()
    }

    /// The conversation so far, as the LLM reads it: the system prompt, then every user
    /// message and every answer that has text.
    async fn history(
        &self,
        user_id: i64,
        conversation_id: i64,
        snapshot: &ConfigSnapshot,
    ) -> Result<Vec<Value>, ChatError> {
        let messages = conversations::messages(&mut *self.db.acquire().await?, user_id, conversation_id).await?;
        let mut history = vec![json!({"role": "system", "content": snapshot.config.prompts.system})];
        history.extend(
            messages
                .iter()
                .filter(|m| m.status != "streaming" && !m.content.is_empty())
                .map(|m| json!({"role": m.role, "content": m.content})),
        );
        Ok(history)
    }
}

/// A send counted against the concurrency limit until its generation is registered.
struct Admitted<'a> {
    service: &'a ChatService,
    user_id: i64,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let mut admitting = self.service.admitting.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = admitting.get_mut(&self.user_id) {
            *count -= 1;
            if *count == 0 {
                admitting.remove(&self.user_id);
            }
        }
    }
}

/// One generation, run detached from the request that started it.
struct Task {
    agent: AgentRun,
    history: Vec<Value>,
    registry: Arc<Registry>,
}

impl Task {
    async fn run(self) {
        let Self { agent, history, registry } = self;
        let generation = agent.generation.clone();
        let (db, metrics, endpoint) = (agent.db.clone(), agent.metrics.clone(), agent.endpoint.clone());
        let message_id = generation.message_id;
        let text = Arc::new(Mutex::new(String::new()));
        let flusher = tokio::spawn(flush_periodically(db.clone(), message_id, text.clone()));
        let outcome = agent.run(text, history).await;
        flusher.abort();
        let (status, error, usage) = match outcome.result {
            Ok(()) => ("complete", None, outcome.usage),
            Err(e) if e.is_cancelled() => ("cancelled", None, outcome.usage),
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(message_id, endpoint, error = %message, "generation failed");
                generation.push(ChatEvent::Error { message: message.clone() });
                let usage = e.partial().map_or(outcome.usage, |p| p.usage);
                ("failed", Some(message), usage)
            }
        };
        metrics
            .generations
            .get_or_create(&crate::telemetry::metrics::OutcomeLabels { outcome: status.to_owned() })
            .inc();
        let notices =
            (!outcome.notices.is_empty()).then(|| serde_json::to_string(&outcome.notices).unwrap_or_default());
        let outcome = Outcome {
            content: &outcome.text,
            status,
            error: error.as_deref(),
            prompt_tokens: usage.prompt_tokens.and_then(|t| i64::try_from(t).ok()),
            completion_tokens: usage.completion_tokens.and_then(|t| i64::try_from(t).ok()),
            notices: notices.as_deref(),
        };
        let stored = match db.acquire().await {
            Ok(mut conn) => conversations::finish(&mut conn, message_id, &outcome, Utc::now()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            tracing::error!(message_id, error = %e, "cannot store the outcome of a generation");
        }
        generation.push(ChatEvent::Done { status: status.to_owned(), usage });
        tokio::spawn(async move {
            tokio::time::sleep(RETENTION).await;
            registry.remove(message_id);
        });
    }
}

async fn flush_periodically(db: SqlitePool, message_id: i64, text: Arc<Mutex<String>>) {
    let mut saved_len = 0;
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        let current = text.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if current.len() == saved_len {
            continue;
        }
        if let Ok(mut conn) = db.acquire().await
            && conversations::save_partial(&mut conn, message_id, &current).await.is_ok()
        {
            saved_len = current.len();
        }
    }
}

/// The text to send: a named prompt's template with its variables, then what the user typed.
/// `resource` is the Prompt resource the user picked (named `namespace/name`), if any.
fn compose<'a>(
    snapshot: &'a ConfigSnapshot,
    resource: Option<&'a NamedPrompt>,
    send: &Ask,
) -> Result<(String, Option<&'a NamedPrompt>), ChatError> {
    let typed = send.content.trim();
    let Some(name) = send.prompt.as_deref().filter(|p| !p.is_empty()) else {
        if typed.is_empty() {
            return Err(ChatError::Invalid("the message is empty".into()));
        }
        return Ok((typed.to_owned(), None));
    };
    let prompt = resource
        .or_else(|| snapshot.config.prompts.prompts.get(name))
        .ok_or_else(|| ChatError::Invalid(format!("there is no prompt named {name:?}")))?;
    let rendered = render_prompt(prompt, &send.variables)?;
    Ok((if typed.is_empty() { rendered } else { format!("{rendered}\n\n{typed}") }, Some(prompt)))
}

/// Fills a prompt's `{{variables}}`; a required variable without a value is an error.
pub fn render_prompt(prompt: &NamedPrompt, values: &BTreeMap<String, String>) -> Result<String, ChatError> {
    if let Some(unknown) = values.keys().find(|k| !prompt.variables.iter().any(|v| &v.name == *k)) {
        return Err(ChatError::Invalid(format!("the prompt has no variable {unknown:?}")));
    }
    let mut resolved = BTreeMap::new();
    for variable in &prompt.variables {
        let given = values.get(&variable.name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let value = match (given, &variable.default) {
            (Some(value), _) => value.to_owned(),
            (None, Some(default)) => default.clone(),
            (None, None) if variable.required => {
                return Err(ChatError::Invalid(format!("the prompt needs a value for {}", variable.name)));
            }
            (None, None) => String::new(),
        };
        resolved.insert(variable.name.as_str(), value);
    }
    let placeholders =
        crate::config::template::placeholders(&prompt.template).map_err(|e| ChatError::Invalid(e.to_string()))?;
    let mut text = String::with_capacity(prompt.template.len());
    let mut at = 0;
    for placeholder in placeholders {
        text.push_str(&prompt.template[at..placeholder.span.start]);
        text.push_str(resolved.get(placeholder.name).map_or("", String::as_str));
        at = placeholder.span.end;
    }
    text.push_str(&prompt.template[at..]);
    Ok(text)
}

/// The named prompts of a prompts.json.
pub fn prompt_infos(snapshot: &ConfigSnapshot) -> Vec<PromptInfo> {
    snapshot.config.prompts.prompts.iter().map(|(name, prompt)| prompt_info(name, prompt)).collect()
}

fn prompt_info(name: &str, prompt: &NamedPrompt) -> PromptInfo {
    PromptInfo {
        name: name.to_owned(),
        title: prompt.title.clone(),
        description: prompt.description.clone(),
        source: "file",
        variables: prompt
            .variables
            .iter()
            .map(|v| VariableInfo {
                name: v.name.clone(),
                description: v.description.clone(),
                required: v.required,
                default: v.default.clone(),
            })
            .collect(),
    }
}

fn clean_title(title: &str) -> Result<String, ChatError> {
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    match title.chars().count() {
        0 => Err(ChatError::Invalid("a title cannot be empty".into())),
        n if n > 200 => Err(ChatError::Invalid("a title has at most 200 characters".into())),
        _ => Ok(title),
    }
}

/// A conversation as Markdown: a heading, then each message under its author.
pub fn export_markdown(conversation: &Conversation, messages: &[Message]) -> String {
    let mut out = format!("# {}\n\n", conversation.title);
    for message in messages {
        let who = if message.role == "user" { "You" } else { "Assistant" };
        out.push_str(&format!(
            "## {who} — {}\n\n{}\n",
            message.created_at.format("%Y-%m-%d %H:%M UTC"),
            message.content
        ));
        match message.status.as_str() {
            "cancelled" => out.push_str("\n*(stopped)*\n"),
            "failed" => {
                out.push_str(&format!("\n*(failed: {})*\n", message.error.as_deref().unwrap_or("unknown error")));
            }
            _ => {}
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::PromptVariable;

    fn prompt() -> NamedPrompt {
        NamedPrompt {
            title: "t".into(),
            description: String::new(),
            template: "Blockers of {{project}} in a {{tone}} tone.".into(),
            variables: vec![
                PromptVariable { name: "project".into(), description: String::new(), required: true, default: None },
                PromptVariable {
                    name: "tone".into(),
                    description: String::new(),
                    required: false,
                    default: Some("calm".into()),
                },
            ],
            endpoint: None,
            tools: None,
        }
    }

    #[test]
    fn prompts_fill_values_and_defaults_and_refuse_missing_or_unknown_ones() {
        let values = BTreeMap::from([("project".to_owned(), "PAY".to_owned())]);
        assert_eq!(render_prompt(&prompt(), &values).unwrap(), "Blockers of PAY in a calm tone.");
        let error = render_prompt(&prompt(), &BTreeMap::new()).unwrap_err();
        assert_eq!(error.to_string(), "the prompt needs a value for project");
        let unknown = BTreeMap::from([("team".to_owned(), "x".to_owned())]);
        assert!(render_prompt(&prompt(), &unknown).is_err());
    }
}
