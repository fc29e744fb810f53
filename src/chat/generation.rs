//! Generations in flight: each answer being written has an event log that any number of
//! clients can follow, from the start or from the last event id they saw, while the
//! generation runs on detached from every HTTP request.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::Stream;
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::llm::Usage;

/// How long a finished generation's events stay available for late followers.
pub const RETENTION: Duration = Duration::from_secs(10 * 60);

/// One thing that happened while answering.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatEvent {
    /// More of the answer's text.
    Token { text: String },
    /// Something went wrong; the answer so far is kept.
    Error { message: String },
    /// Something the user should know that does not stop the answer (no token stored,
    /// a server down: the answer goes on without those tools).
    Notice { message: String },
    /// The model called a tool.
    ToolCall { call_id: String, server: String, name: String, arguments: serde_json::Value, writes: bool },
    /// A write tool waits for the user's decision (`POST …/approvals/{call_id}`).
    ApprovalRequired { call_id: String, name: String, arguments: serde_json::Value },
    /// What the tool returned (or why it did not run).
    ToolResult { call_id: String, name: String, content: String, is_error: bool, status: String },
    /// The end: `complete`, `cancelled` or `failed`.
    Done { status: String, usage: Usage },
}

impl ChatEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Token { .. } => "token",
            Self::Error { .. } => "error",
            Self::Notice { .. } => "notice",
            Self::ToolCall { .. } => "tool_call",
            Self::ApprovalRequired { .. } => "approval_required",
            Self::ToolResult { .. } => "tool_result",
            Self::Done { .. } => "done",
        }
    }
}

/// An event with its position in the generation's log (1, 2, 3, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StampedEvent {
    pub id: u64,
    #[serde(flatten)]
    pub event: ChatEvent,
}

#[derive(Debug)]
pub struct Generation {
    pub message_id: i64,
    pub conversation_id: i64,
    pub user_id: i64,
    pub cancel: CancellationToken,
    events: Mutex<Vec<StampedEvent>>,
    latest: watch::Sender<u64>,
    finished: AtomicBool,
    /// Write tool calls waiting for the user, by call id: the tool's name and the channel
    /// that carries the decision.
    approvals: Mutex<HashMap<String, (String, oneshot::Sender<bool>)>>,
}

/// Why a decision on a tool call was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no tool call with this id is waiting for approval")]
pub struct NotPending;

impl Generation {
    pub fn new(message_id: i64, conversation_id: i64, user_id: i64) -> Self {
        Self {
            message_id,
            conversation_id,
            user_id,
            cancel: CancellationToken::new(),
            events: Mutex::new(Vec::new()),
            latest: watch::Sender::new(0),
            finished: AtomicBool::new(false),
            approvals: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a tool call that waits for the user; the receiver gets their decision.
    pub fn await_approval(&self, call_id: &str, tool: &str) -> oneshot::Receiver<bool> {
        let (decide, decision) = oneshot::channel();
        self.approvals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(call_id.to_owned(), (tool.to_owned(), decide));
        decision
    }

    /// The user's decision on a waiting tool call; returns the tool's name.
    pub fn decide(&self, call_id: &str, approve: bool) -> Result<String, NotPending> {
        let waiting = self.approvals.lock().unwrap_or_else(PoisonError::into_inner).remove(call_id);
        let (tool, decide) = waiting.ok_or(NotPending)?;
        decide.send(approve).map_err(|_| NotPending)?;
        Ok(tool)
    }

    /// Forgets a waiting call (timed out or cancelled).
    pub fn withdraw(&self, call_id: &str) {
        self.approvals.lock().unwrap_or_else(PoisonError::into_inner).remove(call_id);
    }

    /// Appends an event; a `Done` event closes the log.
    pub fn push(&self, event: ChatEvent) -> u64 {
        let done = matches!(event, ChatEvent::Done { .. });
        let id = {
            let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
            let id = events.len() as u64 + 1;
            events.push(StampedEvent { id, event });
            id
        };
        if done {
            self.finished.store(true, Ordering::Release);
        }
        self.latest.send_replace(id);
        id
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Events after `last_id`, and whether the log is closed.
    pub fn since(&self, last_id: u64) -> (Vec<StampedEvent>, bool) {
        let finished = self.is_finished();
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        let start = usize::try_from(last_id).unwrap_or(usize::MAX).min(events.len());
        (events[start..].to_vec(), finished)
    }

    /// Every event after `last_id`, as they come, ending with the log.
    pub fn follow(self: &Arc<Self>, last_id: u64) -> impl Stream<Item = StampedEvent> + Send + 'static {
        let state = (self.clone(), last_id, self.latest.subscribe(), VecDeque::new());
        futures_util::stream::unfold(state, |(generation, mut last, mut changes, mut pending)| async move {
            loop {
                if let Some(event) = pending.pop_front() {
                    return Some((event, (generation, last, changes, pending)));
                }
                let (events, finished) = generation.since(last);
                if let Some(newest) = events.last() {
                    last = newest.id;
                    pending.extend(events);
                    continue;
                }
                if finished || changes.changed().await.is_err() {
                    return None;
                }
            }
        })
    }
}

/// The generations of this process, by assistant message id.
#[derive(Debug, Default)]
pub struct Registry {
    generations: Mutex<HashMap<i64, Arc<Generation>>>,
}

impl Registry {
    pub fn insert(&self, generation: Arc<Generation>) {
        self.lock().insert(generation.message_id, generation);
    }

    pub fn get(&self, message_id: i64) -> Option<Arc<Generation>> {
        self.lock().get(&message_id).cloned()
    }

    /// Generations of `user_id` still running.
    pub fn running_for(&self, user_id: i64) -> usize {
        self.lock().values().filter(|g| g.user_id == user_id && !g.is_finished()).count()
    }

    /// Running generations of a conversation (to stop them when it is deleted).
    pub fn running_in(&self, conversation_id: i64) -> Vec<Arc<Generation>> {
        self.lock().values().filter(|g| g.conversation_id == conversation_id && !g.is_finished()).cloned().collect()
    }

    pub fn running(&self) -> usize {
        self.lock().values().filter(|g| !g.is_finished()).count()
    }

    pub fn remove(&self, message_id: i64) {
        self.lock().remove(&message_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Generation>>> {
        self.generations.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    fn token(text: &str) -> ChatEvent {
        ChatEvent::Token { text: text.into() }
    }

    #[tokio::test]
    async fn followers_resume_after_their_last_id_without_gaps_or_repeats() {
        let generation = Arc::new(Generation::new(1, 1, 1));
        generation.push(token("a"));
        generation.push(token("b"));
        let from_start = generation.follow(0);
        let resumed = generation.follow(1);
        let writer = generation.clone();
        tokio::spawn(async move {
            writer.push(token("c"));
            writer.push(ChatEvent::Done { status: "complete".into(), usage: Usage::default() });
        });
        let all: Vec<u64> = from_start.map(|e| e.id).collect().await;
        let rest: Vec<u64> = resumed.map(|e| e.id).collect().await;
        assert_eq!(all, [1, 2, 3, 4]);
        assert_eq!(rest, [2, 3, 4]);
        assert!(generation.is_finished());
        assert_eq!(generation.follow(4).collect::<Vec<_>>().await, []);
    }
}
