//! The agent loop, shared by chat and scheduled jobs: ask the LLM with the selected tools;
//! when it calls tools, run them through MCP (writes only after approval — asked of the
//! user in chat, decided by the job's allow-list when unattended), give it the results,
//! and ask again — until it answers or the step limit is reached.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use futures_util::future::join_all;
use serde_json::{Value, json};
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;

use super::generation::{ChatEvent, Generation};
use crate::config::ConfigSnapshot;
use crate::db::repositories::conversations::{self, ToolCallRow};
use crate::llm::{Completion, LlmClient, LlmError, LlmEvent, LlmRequest, ToolCall, Usage};
use crate::mcp::tools::{self, ToolInfo};
use crate::mcp::{McpError, McpManager, Principal, ToolOutput};
use crate::telemetry::metrics::{Metrics, ServerLabels};

/// What an agent run needs.
#[derive(Debug)]
pub struct AgentRun {
    pub db: SqlitePool,
    pub llm: Arc<LlmClient>,
    pub mcp: Arc<McpManager>,
    pub metrics: Arc<Metrics>,
    pub snapshot: Arc<ConfigSnapshot>,
    pub endpoint: String,
    pub principal: Principal,
    /// Tools named by the prompt, or `None` for the servers' default sets.
    pub prompt_tools: Option<Vec<String>>,
    pub approval: Approval,
    pub tool_log: ToolLog,
    pub generation: Arc<Generation>,
}

/// Who decides whether a write tool may run.
#[derive(Debug, Clone)]
pub enum Approval {
    /// The user, asked through the generation's events.
    Ask,
    /// A fixed list of tool names or `*` patterns; every other write is refused.
    Allow(Vec<String>),
}

/// Where tool calls are kept.
#[derive(Debug, Clone)]
pub enum ToolLog {
    /// In the `tool_calls` table, under the generation's message.
    Message,
    /// In memory, for the caller to store with its own record (a job run).
    Memory(Arc<Mutex<Vec<ToolCallRow>>>),
}

/// How an agent run ended.
#[derive(Debug)]
pub struct AgentOutcome {
    /// All text the model wrote, across steps.
    pub text: String,
    pub usage: Usage,
    pub result: Result<(), LlmError>,
    /// What the user was told on the way.
    pub notices: Vec<String>,
}

impl AgentRun {
    pub async fn run(self, text: Arc<Mutex<String>>, mut messages: Vec<Value>) -> AgentOutcome {
        let (offered, notices) = self.offered_tools().await;
        let definitions: Vec<Value> = offered.iter().map(ToolInfo::definition).collect();
        let settings = self.snapshot.config.service.agent.clone();
        let cancel = self.generation.cancel.clone();
        let mut usage = Usage::default();
        let mut step = 0;
        let result = loop {
            step += 1;
            let request = LlmRequest { messages: messages.clone(), tools: definitions.clone(), stream: true };
            let completion = match self.ask(&request, &cancel, &text).await {
                Ok(completion) => completion,
                Err(e) => break Err(e),
            };
            add_usage(&mut usage, completion.usage);
            if completion.tool_calls.is_empty() || offered.is_empty() {
                break Ok(());
            }
            if step >= settings.max_steps {
                let message = format!(
                    "stopped after {} rounds of tool calls without a final answer (agent.max_steps)",
                    settings.max_steps
                );
                break Err(LlmError::Status { status: 0, message });
            }
            messages.push(json!({
                "role": "assistant",
                // "" rather than null: OpenAI takes both, llama.cpp's server only the former.
                "content": completion.text,
                "tool_calls": completion.tool_calls.iter().map(|c| json!({
                    "id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments},
                })).collect::<Vec<_>>(),
            }));
            let outputs = join_all(completion.tool_calls.iter().map(|call| self.run_tool(call, &offered))).await;
            for (call, output) in completion.tool_calls.iter().zip(outputs) {
                messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": clip(&output.text, settings.max_result_chars)}));
            }
            if cancel.is_cancelled() {
                break Err(LlmError::Cancelled);
            }
            // Text of the next step starts a new paragraph.
            let mut written = text.lock().unwrap_or_else(PoisonError::into_inner);
            if !written.is_empty() && !written.ends_with("\n\n") {
                written.push_str("\n\n");
                self.generation.push(ChatEvent::Token { text: "\n\n".into() });
            }
        };
        let text = text.lock().unwrap_or_else(PoisonError::into_inner).clone();
        AgentOutcome { text, usage, result, notices }
    }

    /// One LLM request whose text streams to the generation.
    async fn ask(
        &self,
        request: &LlmRequest,
        cancel: &CancellationToken,
        text: &Arc<Mutex<String>>,
    ) -> Result<Completion, LlmError> {
        let started = std::time::Instant::now();
        let mut first = true;
        let generation = self.generation.clone();
        let metrics = self.metrics.clone();
        let text = text.clone();
        let mut on_event = move |event: LlmEvent| match event {
            LlmEvent::Text(piece) => {
                if first {
                    first = false;
                    metrics.llm_first_token_seconds.observe(started.elapsed().as_secs_f64());
                }
                text.lock().unwrap_or_else(PoisonError::into_inner).push_str(&piece);
                generation.push(ChatEvent::Token { text: piece });
            }
        };
        self.llm.complete(&self.snapshot, &self.endpoint, request, cancel, &mut on_event).await
    }

    /// The tools offered to the model; a server that cannot be used is reported and left
    /// out, so the answer goes on without its tools.
    async fn offered_tools(&self) -> (Vec<ToolInfo>, Vec<String>) {
        let mut offered: Vec<ToolInfo> = Vec::new();
        let mut notices = Vec::new();
        if self.prompt_tools.as_ref().is_some_and(Vec::is_empty) {
            return (offered, notices);
        }
        for server in self.snapshot.config.service.mcp_servers.keys() {
            match self.mcp.tools(&self.snapshot, server, &self.principal).await {
                Ok(list) => {
                    for tool in tools::select(list.iter(), self.prompt_tools.as_deref()) {
                        if offered.iter().any(|t| t.name == tool.name) {
                            tracing::warn!(server, tool = tool.name, "a tool of this name came from another server first");
                            continue;
                        }
                        offered.push(tool);
                    }
                }
                Err(McpError::NoToken(service)) => notices.push(match self.principal {
                    Principal::User(_) => format!(
                        "No {} token is stored, so the {server} tools are off for this answer. Add your personal access token under Settings.",
                        service.title()
                    ),
                    Principal::Token { .. } => format!(
                        "The job has no {} token (credentialsSecretRef), so the {server} tools are off for this run.",
                        service.title()
                    ),
                }),
                Err(e) => {
                    tracing::warn!(server, error = %e, "MCP server unavailable; answering without its tools");
                    notices.push(format!("The {server} tools are unavailable right now ({e}); answering without them."));
                }
            }
        }
        for message in &notices {
            self.generation.push(ChatEvent::Notice { message: message.clone() });
        }
        (offered, notices)
    }

    /// Runs one tool call: announce it, wait for approval if it writes, call it, report.
    async fn run_tool(&self, call: &ToolCall, offered: &[ToolInfo]) -> ToolOutput {
        let arguments: Value =
            serde_json::from_str(if call.arguments.trim().is_empty() { "{}" } else { &call.arguments })
                .unwrap_or_else(|_| Value::String(call.arguments.clone()));
        let Some(tool) = offered.iter().find(|t| t.name == call.name) else {
            let output =
                ToolOutput { text: format!("There is no tool named {:?} available.", call.name), is_error: true };
            self.generation.push(ChatEvent::ToolCall {
                call_id: call.id.clone(),
                server: String::new(),
                name: call.name.clone(),
                arguments: arguments.clone(),
                writes: false,
            });
            self.report(call, output.clone(), "failed");
            return output;
        };
        self.generation.push(ChatEvent::ToolCall {
            call_id: call.id.clone(),
            server: tool.server.clone(),
            name: call.name.clone(),
            arguments: arguments.clone(),
            writes: tool.writes,
        });
        let row = ToolCallRow {
            message_id: self.generation.message_id,
            call_id: call.id.clone(),
            server: tool.server.clone(),
            name: call.name.clone(),
            arguments: arguments.to_string(),
            writes: tool.writes,
            status: if tool.writes { "pending" } else { "running" }.into(),
            result: None,
            created_at: Utc::now(),
            finished_at: None,
        };
        self.log_call(row).await;

        let Value::Object(arguments) = arguments else {
            let output = ToolOutput { text: "The arguments must be a JSON object.".into(), is_error: true };
            return self.finish_tool(call, output, "failed").await;
        };
        if tool.writes && !self.approved(call, &arguments).await {
            let text = match self.approval {
                Approval::Ask => {
                    "The user refused this action; it was not carried out. Do not try it again unless they ask."
                }
                Approval::Allow(_) => {
                    "This unattended run may not use this tool (it is not in the job's allowedWriteTools); it was not carried out."
                }
            };
            let output = ToolOutput { text: text.into(), is_error: true };
            return self.finish_tool(call, output, "refused").await;
        }
        self.metrics.mcp_tool_calls.get_or_create(&ServerLabels { server: tool.server.clone() }).inc();
        match self.mcp.call(&self.snapshot, &tool.server, &self.principal, &call.name, arguments).await {
            Ok(output) => {
                let status = if output.is_error { "failed" } else { "done" };
                self.finish_tool(call, output, status).await
            }
            Err(e) => {
                let output = ToolOutput { text: format!("The tool could not be called: {e}."), is_error: true };
                self.finish_tool(call, output, "failed").await
            }
        }
    }

    /// Asks the user (a timeout or a cancelled answer counts as a refusal), or looks the
    /// tool up in the run's allow-list.
    async fn approved(&self, call: &ToolCall, arguments: &serde_json::Map<String, Value>) -> bool {
        if let Approval::Allow(patterns) = &self.approval {
            let allowed = patterns.iter().any(|p| wildmatch::WildMatch::new(p).matches(&call.name));
            if allowed {
                self.log_update(call.id.clone(), "running", None, None).await;
            }
            return allowed;
        }
        let decision = self.generation.await_approval(&call.id, &call.name);
        self.generation.push(ChatEvent::ApprovalRequired {
            call_id: call.id.clone(),
            name: call.name.clone(),
            arguments: Value::Object(arguments.clone()),
        });
        let timeout = self.snapshot.config.service.agent.approval_timeout;
        let approved = tokio::select! {
            decided = decision => decided.unwrap_or(false),
            () = tokio::time::sleep(timeout) => false,
            () = self.generation.cancel.cancelled() => false,
        };
        self.generation.withdraw(&call.id);
        if approved {
            self.log_update(call.id.clone(), "running", None, None).await;
        }
        approved
    }

    async fn finish_tool(&self, call: &ToolCall, output: ToolOutput, status: &str) -> ToolOutput {
        self.log_update(call.id.clone(), status, Some(output.text.clone()), Some(Utc::now())).await;
        self.report(call, output.clone(), status);
        output
    }

    async fn log_call(&self, row: ToolCallRow) {
        match &self.tool_log {
            ToolLog::Message => {
                self.store(|conn| Box::pin(async move { conversations::add_tool_call(conn, &row).await })).await;
            }
            ToolLog::Memory(rows) => rows.lock().unwrap_or_else(PoisonError::into_inner).push(row),
        }
    }

    async fn log_update(
        &self,
        call_id: String,
        status: &str,
        result: Option<String>,
        finished: Option<chrono::DateTime<Utc>>,
    ) {
        match &self.tool_log {
            ToolLog::Message => {
                let (message_id, status) = (self.generation.message_id, status.to_owned());
                self.store(move |conn| {
                    Box::pin(async move {
                        conversations::update_tool_call(
                            conn,
                            message_id,
                            &call_id,
                            &status,
                            result.as_deref(),
                            finished,
                        )
                        .await
                    })
                })
                .await;
            }
            ToolLog::Memory(rows) => {
                let mut rows = rows.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(row) = rows.iter_mut().find(|r| r.call_id == call_id) {
                    row.status = status.to_owned();
                    row.result = result.or(row.result.take());
                    row.finished_at = finished.or(row.finished_at);
                }
            }
        }
    }

    fn report(&self, call: &ToolCall, output: ToolOutput, status: &str) {
        self.generation.push(ChatEvent::ToolResult {
            call_id: call.id.clone(),
            name: call.name.clone(),
            content: output.text,
            is_error: output.is_error,
            status: status.to_owned(),
        });
    }

    /// Runs a repository write; the answer goes on if the database hiccups.
    async fn store<F>(&self, write: F)
    where
        F: for<'c> FnOnce(
            &'c mut sqlx::SqliteConnection,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>>,
    {
        let written = match self.db.acquire().await {
            Ok(mut conn) => write(&mut conn).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot store a tool call");
        }
    }
}

fn add_usage(total: &mut Usage, more: Usage) {
    let add = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    };
    total.prompt_tokens = add(total.prompt_tokens, more.prompt_tokens);
    total.completion_tokens = add(total.completion_tokens, more.completion_tokens);
}

/// At most `limit` characters, with a note when cut.
fn clip(text: &str, limit: usize) -> String {
    match crate::text::prefix(text, limit) {
        (kept, true) => format!("{kept}\n[… cut: the result had more than {limit} characters]"),
        (all, false) => all.to_owned(),
    }
}
