//! What chat does with an agent run: every event goes to the answer's generation (so the
//! browser follows it live), writes wait for the user's decision, tool calls are kept under
//! the answer's message, and the text so far is kept for the periodic save.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value};
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;

use super::generation::{ChatEvent, Generation};
use crate::agent::{Observer, ToolCallRecord};
use crate::db::repositories::conversations::{self, ToolCallRow};
use crate::mcp::ToolOutput;

pub struct ChatObserver {
    pub db: SqlitePool,
    pub generation: Arc<Generation>,
    /// The answer's text so far, for the periodic save.
    pub text: Arc<Mutex<String>>,
    /// How long a write waits for the user (a timeout is a refusal).
    pub approval_timeout: Duration,
}

impl Observer for ChatObserver {
    fn text(&self, piece: &str) {
        self.text.lock().unwrap_or_else(PoisonError::into_inner).push_str(piece);
        self.generation.push(ChatEvent::Token { text: piece.to_owned() });
    }

    fn notice(&self, message: &str) {
        self.generation.push(ChatEvent::Notice { message: message.to_owned() });
    }

    fn tool_call(&self, call: &ToolCallRecord, arguments: &Value) {
        self.generation.push(ChatEvent::ToolCall {
            call_id: call.call_id.clone(),
            server: call.server.clone(),
            name: call.name.clone(),
            arguments: arguments.clone(),
            writes: call.writes,
        });
    }

    fn tool_result(&self, call: &ToolCallRecord, output: &ToolOutput) {
        self.generation.push(ChatEvent::ToolResult {
            call_id: call.call_id.clone(),
            name: call.name.clone(),
            content: output.text.clone(),
            is_error: output.is_error,
            status: call.status.as_str().to_owned(),
        });
    }

    /// Asks the user; a timeout or a cancelled answer counts as a refusal.
    fn approve<'a>(
        &'a self,
        call: &'a ToolCallRecord,
        arguments: &'a Map<String, Value>,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let decision = self.generation.await_approval(&call.call_id, &call.name);
            self.generation.push(ChatEvent::ApprovalRequired {
                call_id: call.call_id.clone(),
                name: call.name.clone(),
                arguments: Value::Object(arguments.clone()),
            });
            let approved = tokio::select! {
                decided = decision => decided.unwrap_or(false),
                () = tokio::time::sleep(self.approval_timeout) => false,
                () = cancel.cancelled() => false,
            };
            self.generation.withdraw(&call.call_id);
            if approved {
                Ok(())
            } else {
                Err("The user refused this action; it was not carried out. Do not try it again unless they ask.".into())
            }
        })
    }

    /// Keeps the call in the `tool_calls` table; the answer goes on if the database hiccups.
    fn record<'a>(&'a self, call: &'a ToolCallRecord, new: bool) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let message_id = self.generation.message_id;
            let written = match self.db.acquire().await {
                Ok(mut conn) if new => conversations::add_tool_call(&mut conn, &row(message_id, call)).await,
                Ok(mut conn) => {
                    conversations::update_tool_call(
                        &mut conn,
                        message_id,
                        &call.call_id,
                        call.status.as_str(),
                        call.result.as_deref(),
                        call.finished_at,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                tracing::error!(message_id, error = %e, "cannot store a tool call");
            }
        })
    }
}

fn row(message_id: i64, call: &ToolCallRecord) -> ToolCallRow {
    ToolCallRow {
        message_id,
        call_id: call.call_id.clone(),
        server: call.server.clone(),
        name: call.name.clone(),
        arguments: call.arguments.clone(),
        writes: call.writes,
        status: call.status.as_str().to_owned(),
        result: call.result.clone(),
        created_at: call.created_at,
        finished_at: call.finished_at,
    }
}
