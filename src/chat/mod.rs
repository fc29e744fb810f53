//! Conversations and the answers in them: sending a message starts a generation that runs
//! server-side, detached from the request; its events can be followed and resumed; every
//! message is stored with its outcome. Uses `llm` for the asking and `db` for the keeping.

pub mod generation;
pub mod limits;
pub mod markdown;
mod observer;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::SqlitePool;

use crate::agent::{self, Agent, AgentError};
use crate::config::{ConfigSnapshot, ConfigStore};
use crate::db::repositories::conversations::{self, Conversation, Message, NewMessage, Outcome, ToolCallRow};
use crate::mcp::Principal;
use crate::prompts::{Prompt, PromptError, PromptLibrary, PromptRef};
use crate::telemetry::metrics::Metrics;
use generation::{ChatEvent, Generation, NotPending, RETENTION, Registry};
use limits::SendRate;
use observer::ChatObserver;

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
    Prompt(#[from] PromptError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Messages the chat page shows at first, and loads at a time going back.
pub const PAGE_MESSAGES: i64 = 50;

/// A page of a conversation's messages.
#[derive(Debug)]
pub struct MessagePage {
    pub conversation: Conversation,
    /// Oldest first.
    pub messages: Vec<Message>,
    /// The tool calls of these messages.
    pub calls: Vec<ToolCallRow>,
    /// When older messages exist: the id to load them before.
    pub earlier: Option<i64>,
}

/// Most conversations a list or search returns.
const LIST_LIMIT: i64 = 200;
/// Longest search a user may type.
const MAX_QUERY_CHARS: usize = 200;

/// A conversation in the sidebar or the API's list.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub conversation: Conversation,
    /// For a search that matched its messages: the passage, in plain-text parts, the
    /// matched words marked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snippet: Vec<SnippetPart>,
}

/// A piece of a search snippet: text (never HTML), and whether it is a matched word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnippetPart {
    pub text: String,
    pub hit: bool,
}

/// Splits a snippet at the index's hit marks.
fn snippet_parts(snippet: &str) -> Vec<SnippetPart> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut hit = false;
    for c in snippet.chars() {
        let starts_hit = match c {
            conversations::HIT_START => true,
            conversations::HIT_END => false,
            _ => {
                text.push(c);
                continue;
            }
        };
        if !text.is_empty() {
            parts.push(SnippetPart { text: std::mem::take(&mut text), hit });
        }
        hit = starts_hit;
    }
    if !text.is_empty() {
        parts.push(SnippetPart { text, hit });
    }
    parts
}

/// What a user sends.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    pub content: String,
    /// A prompt of the library (`name`, `namespace/name` or `me:name`); its rendered
    /// template comes first.
    pub prompt: Option<String>,
    pub variables: BTreeMap<String, String>,
}

/// The ids of a sent message and of the answer being generated for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sent {
    pub user_message_id: i64,
    pub message_id: i64,
}

#[derive(Debug)]
pub struct ChatService {
    db: SqlitePool,
    config: Arc<ConfigStore>,
    prompts: Arc<PromptLibrary>,
    agent: Arc<Agent>,
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
        prompts: Arc<PromptLibrary>,
        agent: Arc<Agent>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            db,
            config,
            prompts,
            agent,
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

    /// The tool calls of one of a conversation's answers.
    pub async fn tool_calls(
        &self,
        user_id: i64,
        conversation_id: i64,
        message_id: i64,
    ) -> Result<Vec<ToolCallRow>, ChatError> {
        let mut conn = self.db.acquire().await?;
        Ok(conversations::tool_calls(&mut conn, user_id, conversation_id, message_id..=message_id).await?)
    }

    /// A conversation's newest messages older than `before` (the newest of all when None),
    /// oldest first, with their tool calls: a page of [`PAGE_MESSAGES`], so a long
    /// conversation opens as fast as a short one and loads its history on demand.
    pub async fn page(&self, user_id: i64, id: i64, before: Option<i64>) -> Result<MessagePage, ChatError> {
        let mut conn = self.db.acquire().await?;
        let conversation = conversations::get(&mut conn, user_id, id).await?.ok_or(ChatError::NotFound)?;
        let mut messages = conversations::messages_before(&mut conn, user_id, id, before, PAGE_MESSAGES + 1).await?;
        let earlier = messages.len() > PAGE_MESSAGES as usize;
        if earlier {
            messages.remove(0);
        }
        let calls = match (messages.first(), messages.last()) {
            (Some(first), Some(last)) => conversations::tool_calls(&mut conn, user_id, id, first.id..=last.id).await?,
            _ => Vec::new(),
        };
        let earlier = messages.first().filter(|_| earlier).map(|m| m.id);
        Ok(MessagePage { conversation, messages, calls, earlier })
    }

    pub async fn create(&self, user_id: i64, title: Option<&str>) -> Result<Conversation, ChatError> {
        let title = clean_title(title.unwrap_or(DEFAULT_TITLE))?;
        Ok(conversations::create(&mut *self.db.acquire().await?, user_id, &title, Utc::now()).await?)
    }

    /// The user's conversations, most recently active first; with `query`, those whose
    /// title holds it, then those whose messages hold all its words (as word prefixes),
    /// best match first, each with the passage that matched.
    pub async fn list(&self, user_id: i64, query: Option<&str>) -> Result<Vec<Listed>, ChatError> {
        let mut conn = self.db.acquire().await?;
        let Some(query) = query.map(str::trim).filter(|q| !q.is_empty()) else {
            let all = conversations::list(&mut conn, user_id, LIST_LIMIT).await?;
            return Ok(all.into_iter().map(|conversation| Listed { conversation, snippet: Vec::new() }).collect());
        };
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(ChatError::Invalid(format!("a search is at most {MAX_QUERY_CHARS} characters")));
        }
        let found = conversations::search(&mut conn, user_id, query, LIST_LIMIT).await?;
        Ok(found
            .into_iter()
            .map(|f| Listed {
                conversation: f.conversation,
                snippet: f.snippet.as_deref().map(snippet_parts).unwrap_or_default(),
            })
            .collect())
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

    /// Stores the user's message and starts the answer. Returns at once; the answer is
    /// written in the background whatever happens to the request that asked for it.
    pub async fn send(&self, user_id: i64, conversation_id: i64, send: Ask) -> Result<Sent, ChatError> {
        let snapshot = self.config.current().ok_or(ChatError::NoConfig)?;
        let limits = snapshot.config.service.limits.clone();
        let prompt = match send.prompt.as_deref().filter(|p| !p.trim().is_empty()) {
            Some(name) => Some(self.prompts.find(&PromptRef::parse(name)?, Some(user_id)).await?),
            None => None,
        };
        let content = compose(prompt.as_ref(), &send)?;
        let prompt = prompt.as_ref();
        let length = content.chars().count();
        if length > limits.max_message_chars {
            return Err(ChatError::TooLarge(format!(
                "the message has {length} characters; the limit is {}",
                limits.max_message_chars
            )));
        }
        let endpoint =
            prompt.and_then(|p| p.endpoint.clone()).unwrap_or_else(|| snapshot.config.service.default_endpoint.clone());

        // Both messages and the title in one write transaction: one commit per send, and a
        // send refused below (rate, concurrency) leaves nothing behind.
        let mut conn = self.db.acquire().await?;
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
        let conversation = conversations::get(&mut tx, user_id, conversation_id).await?.ok_or(ChatError::NotFound)?;
        self.rate.check(user_id, limits.requests_per_minute).map_err(ChatError::RateLimited)?;
        let admitted = self.admit(user_id, limits.concurrent_generations)?;
        let now = Utc::now();
        let prompt_name = send.prompt.as_deref();
        let user_message_id = conversations::add_message(
            &mut tx,
            conversation_id,
            &NewMessage { role: "user", content: &content, status: "complete", prompt_name, endpoint: None },
            now,
        )
        .await?;
        let message_id = conversations::add_message(
            &mut tx,
            conversation_id,
            &NewMessage { role: "assistant", content: "", status: "streaming", prompt_name, endpoint: Some(&endpoint) },
            now,
        )
        .await?;
        if conversation.title == DEFAULT_TITLE {
            let title: String =
                content.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(TITLE_CHARS).collect();
            conversations::rename(&mut tx, user_id, conversation_id, &title, now).await?;
        }
        tx.commit().await?;
        let history = history(&mut conn, user_id, conversation_id, &snapshot).await?;
        drop(conn);

        let generation = Arc::new(Generation::new(message_id, conversation_id, user_id));
        self.registry.insert(generation.clone());
        drop(admitted);
        let task = Answer {
            agent: self.agent.clone(),
            task: agent::Task {
                endpoint: endpoint.clone(),
                principal: Principal::User(user_id),
                tools: prompt.and_then(|p| p.tools.clone()),
                messages: history,
                cancel: generation.cancel.clone(),
                snapshot,
            },
            db: self.db.clone(),
            metrics: self.metrics.clone(),
            generation,
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
}

/// The conversation so far, as the LLM reads it: the system prompt, then every user
/// message and every answer that has text.
async fn history(
    conn: &mut sqlx::SqliteConnection,
    user_id: i64,
    conversation_id: i64,
    snapshot: &ConfigSnapshot,
) -> Result<Vec<Value>, ChatError> {
    let messages = conversations::messages(conn, user_id, conversation_id).await?;
    let mut history = vec![json!({"role": "system", "content": snapshot.config.prompts.system})];
    history.extend(
        messages
            .iter()
            .filter(|m| m.status != "streaming" && !m.content.is_empty())
            .map(|m| json!({"role": m.role, "content": m.content})),
    );
    Ok(history)
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

/// One answer, written detached from the request that asked for it.
struct Answer {
    agent: Arc<Agent>,
    task: agent::Task,
    db: SqlitePool,
    metrics: Arc<Metrics>,
    generation: Arc<Generation>,
    registry: Arc<Registry>,
}

impl Answer {
    async fn run(self) {
        let Self { agent, task, db, metrics, generation, registry } = self;
        let message_id = generation.message_id;
        let endpoint = task.endpoint.clone();
        let observer = ChatObserver {
            db: db.clone(),
            generation: generation.clone(),
            text: Arc::new(Mutex::new(String::new())),
            approval_timeout: task.snapshot.config.service.agent.approval_timeout,
        };
        let flusher = tokio::spawn(flush_periodically(db.clone(), message_id, observer.text.clone()));
        let outcome = agent.run(task, &observer).await;
        flusher.abort();
        let usage = outcome.usage;
        let (status, error) = match outcome.result {
            Ok(()) => ("complete", None),
            Err(AgentError::Cancelled) => ("cancelled", None),
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(message_id, endpoint, error = %message, "generation failed");
                generation.push(ChatEvent::Error { message: message.clone() });
                ("failed", Some(message))
            }
        };
        metrics
            .generations
            .get_or_create(&crate::telemetry::metrics::OutcomeLabels { outcome: status.to_owned() })
            .inc();
        for (direction, tokens) in [("in", usage.prompt_tokens), ("out", usage.completion_tokens)] {
            let labels =
                crate::telemetry::metrics::TokenLabels { endpoint: endpoint.clone(), direction: direction.into() };
            metrics.llm_tokens.get_or_create(&labels).inc_by(tokens.unwrap_or(0));
        }
        let outcome = Outcome {
            content: &outcome.text,
            status,
            error: error.as_deref(),
            prompt_tokens: usage.prompt_tokens.and_then(|t| i64::try_from(t).ok()),
            completion_tokens: usage.completion_tokens.and_then(|t| i64::try_from(t).ok()),
            notices: &outcome.notices,
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

/// The text to send: the picked prompt's template with its variables, then what the user
/// typed.
fn compose(prompt: Option<&Prompt>, send: &Ask) -> Result<String, ChatError> {
    let typed = send.content.trim();
    let Some(prompt) = prompt else {
        if typed.is_empty() {
            return Err(ChatError::Invalid("the message is empty".into()));
        }
        return Ok(typed.to_owned());
    };
    let rendered = crate::prompts::render(prompt, &send.variables)?;
    Ok(if typed.is_empty() { rendered } else { format!("{rendered}\n\n{typed}") })
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

    #[test]
    fn snippets_split_at_their_hit_marks() {
        let part = |text: &str, hit| SnippetPart { text: text.into(), hit };
        let snippet = "…the \u{E000}blocker\u{E001} of \u{E000}PAY\u{E001}-7";
        assert_eq!(
            snippet_parts(snippet),
            [part("…the ", false), part("blocker", true), part(" of ", false), part("PAY", true), part("-7", false)]
        );
        assert_eq!(snippet_parts("\u{E001}\u{E001}x"), [part("x", false)], "stray marks are dropped");
        assert!(snippet_parts("").is_empty());
    }
}
