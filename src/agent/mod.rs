//! The agent loop, shared by chat and scheduled jobs: ask the LLM with the selected tools;
//! when it calls tools, run them through MCP (writes only once the observer approves: the
//! user in chat, the job's allow-list when unattended), give it the results, and ask again
//! — until it answers, the step limit is reached or the run is cancelled. What happens on
//! the way goes to an [`Observer`], which each caller implements for itself.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::{BoxFuture, join_all};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::ConfigSnapshot;
use crate::llm::{Completion, LlmClient, LlmError, LlmEvent, LlmRequest, ToolCall, Usage};
use crate::mcp::tools::{self, ToolInfo};
use crate::mcp::{McpError, McpManager, Principal, ToolOutput};
use crate::telemetry::metrics::{Metrics, ServerLabels};

/// Built once at start and shared: what every run asks through.
#[derive(Debug)]
pub struct Agent {
    llm: Arc<LlmClient>,
    mcp: Arc<McpManager>,
    metrics: Arc<Metrics>,
}

/// One run of the loop.
#[derive(Debug)]
pub struct Task {
    /// The config the whole run uses, even if a new one is loaded meanwhile.
    pub snapshot: Arc<ConfigSnapshot>,
    pub endpoint: String,
    /// Whose tokens the tools run with.
    pub principal: Principal,
    /// Tools named by the prompt, or `None` for the servers' default sets.
    pub tools: Option<Vec<String>>,
    /// The conversation so far, system prompt first.
    pub messages: Vec<Value>,
    pub cancel: CancellationToken,
}

/// Why a run ended without an answer.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Llm(LlmError),
    #[error("stopped after {0} rounds of tool calls without a final answer (agent.max_steps)")]
    StepLimit(u32),
    #[error("cancelled")]
    Cancelled,
}

impl From<LlmError> for AgentError {
    fn from(e: LlmError) -> Self {
        if e.is_cancelled() { Self::Cancelled } else { Self::Llm(e) }
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// All text the model wrote, across steps.
    pub text: String,
    /// Tokens of every step, the one cut short included.
    pub usage: Usage,
    pub result: Result<(), AgentError>,
    /// What the caller was told on the way (servers left out).
    pub notices: Vec<String>,
}

/// Where a tool call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolStatus {
    /// A write waiting for approval.
    Pending,
    Running,
    Done,
    Failed,
    Refused,
}

impl ToolStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Refused => "refused",
        }
    }
}

/// A tool call the model made, as it is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    pub call_id: String,
    /// Empty when no offered tool has the name.
    pub server: String,
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
    pub writes: bool,
    pub status: ToolStatus,
    pub result: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What a caller does with what happens in a run. Chat streams it to the browser, asks the
/// user about writes and stores the calls under the answer; a job run checks writes
/// against its allow-list and keeps the calls with the run.
pub trait Observer: Send + Sync {
    /// More of the answer's text.
    fn text(&self, piece: &str);
    /// Something to know that does not stop the run.
    fn notice(&self, message: &str);
    /// A call the model made, before it runs (`arguments` parsed when they are JSON).
    fn tool_call(&self, call: &ToolCallRecord, arguments: &Value);
    /// What a call returned, or why it did not run.
    fn tool_result(&self, call: &ToolCallRecord, output: &ToolOutput);
    /// Whether a write may run: `Err` with what the model is told when it may not.
    fn approve<'a>(
        &'a self,
        call: &'a ToolCallRecord,
        arguments: &'a Map<String, Value>,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Keeps a call: `new` when it is first announced, else a change of its status.
    fn record<'a>(&'a self, call: &'a ToolCallRecord, new: bool) -> BoxFuture<'a, ()>;
}

impl Agent {
    pub fn new(llm: Arc<LlmClient>, mcp: Arc<McpManager>, metrics: Arc<Metrics>) -> Self {
        Self { llm, mcp, metrics }
    }

    /// Runs `task` to its end, telling `observer` what happens.
    pub async fn run(&self, task: Task, observer: &dyn Observer) -> Outcome {
        let Task { snapshot, endpoint, principal, tools, mut messages, cancel } = task;
        let run = Run { agent: self, snapshot: &snapshot, principal: &principal, observer, cancel: &cancel };
        let (offered, notices) = run.offered_tools(tools.as_deref()).await;
        let definitions: Vec<Value> = offered.iter().map(ToolInfo::definition).collect();
        let settings = snapshot.config.service.agent.clone();
        let mut usage = Usage::default();
        let mut text = String::new();
        let mut step = 0;
        let result = loop {
            step += 1;
            let request = LlmRequest { messages: messages.clone(), tools: definitions.clone(), stream: true };
            let completion = match run.ask(&endpoint, &request, &mut text).await {
                Ok(completion) => completion,
                Err(e) => {
                    if let Some(partial) = e.partial() {
                        add_usage(&mut usage, partial.usage);
                    }
                    break Err(AgentError::from(e));
                }
            };
            add_usage(&mut usage, completion.usage);
            if completion.tool_calls.is_empty() || offered.is_empty() {
                break Ok(());
            }
            if step >= settings.max_steps {
                break Err(AgentError::StepLimit(settings.max_steps));
            }
            messages.push(json!({
                "role": "assistant",
                // "" rather than null: OpenAI takes both, llama.cpp's server only the former.
                "content": completion.text,
                "tool_calls": completion.tool_calls.iter().map(|c| json!({
                    "id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments},
                })).collect::<Vec<_>>(),
            }));
            let outputs = join_all(completion.tool_calls.iter().map(|call| run.tool(call, &offered))).await;
            for (call, output) in completion.tool_calls.iter().zip(outputs) {
                messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": clip(&output.text, settings.max_result_chars)}));
            }
            if cancel.is_cancelled() {
                break Err(AgentError::Cancelled);
            }
            // Text of the next step starts a new paragraph.
            if !text.is_empty() && !text.ends_with("\n\n") {
                text.push_str("\n\n");
                observer.text("\n\n");
            }
        };
        Outcome { text, usage, result, notices }
    }
}

/// What one run's steps share.
struct Run<'a> {
    agent: &'a Agent,
    snapshot: &'a Arc<ConfigSnapshot>,
    principal: &'a Principal,
    observer: &'a dyn Observer,
    cancel: &'a CancellationToken,
}

impl Run<'_> {
    /// One LLM request whose text goes to the observer as it comes.
    async fn ask(&self, endpoint: &str, request: &LlmRequest, text: &mut String) -> Result<Completion, LlmError> {
        let started = std::time::Instant::now();
        let mut first = true;
        let metrics = &self.agent.metrics;
        let observer = self.observer;
        let mut on_event = |event: LlmEvent| match event {
            LlmEvent::Text(piece) => {
                if first {
                    first = false;
                    metrics.llm_first_token_seconds.observe(started.elapsed().as_secs_f64());
                }
                text.push_str(&piece);
                observer.text(&piece);
            }
        };
        self.agent.llm.complete(self.snapshot, endpoint, request, self.cancel, &mut on_event).await
    }

    /// The tools offered to the model; a server that cannot be used is reported and left
    /// out, so the answer goes on without its tools.
    async fn offered_tools(&self, selection: Option<&[String]>) -> (Vec<ToolInfo>, Vec<String>) {
        let mut offered: Vec<ToolInfo> = Vec::new();
        let mut notices = Vec::new();
        if selection.is_some_and(<[String]>::is_empty) {
            return (offered, notices);
        }
        for server in self.snapshot.config.service.mcp_servers.keys() {
            match self.agent.mcp.tools(self.snapshot, server, self.principal).await {
                Ok(list) => {
                    for tool in tools::select(list.iter(), selection) {
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
            self.observer.notice(message);
        }
        (offered, notices)
    }

    /// Runs one tool call: announce it, have a write approved, call it, report.
    async fn tool(&self, call: &ToolCall, offered: &[ToolInfo]) -> ToolOutput {
        let arguments: Value =
            serde_json::from_str(if call.arguments.trim().is_empty() { "{}" } else { &call.arguments })
                .unwrap_or_else(|_| Value::String(call.arguments.clone()));
        let tool = offered.iter().find(|t| t.name == call.name);
        let writes = tool.is_some_and(|t| t.writes);
        let mut record = ToolCallRecord {
            call_id: call.id.clone(),
            server: tool.map(|t| t.server.clone()).unwrap_or_default(),
            name: call.name.clone(),
            arguments: arguments.to_string(),
            writes,
            status: if writes { ToolStatus::Pending } else { ToolStatus::Running },
            result: None,
            created_at: Utc::now(),
            finished_at: None,
        };
        self.observer.tool_call(&record, &arguments);
        let Some(tool) = tool else {
            // Not kept: there is no such tool to have called.
            let output =
                ToolOutput { text: format!("There is no tool named {:?} available.", call.name), is_error: true };
            record.status = ToolStatus::Failed;
            self.observer.tool_result(&record, &output);
            return output;
        };
        self.observer.record(&record, true).await;

        let Value::Object(arguments) = arguments else {
            let output = ToolOutput { text: "The arguments must be a JSON object.".into(), is_error: true };
            return self.finish(record, output, ToolStatus::Failed).await;
        };
        if tool.writes {
            if let Err(refusal) = self.observer.approve(&record, &arguments, self.cancel).await {
                let output = ToolOutput { text: refusal, is_error: true };
                return self.finish(record, output, ToolStatus::Refused).await;
            }
            record.status = ToolStatus::Running;
            self.observer.record(&record, false).await;
        }
        self.agent.metrics.mcp_tool_calls.get_or_create(&ServerLabels { server: tool.server.clone() }).inc();
        match self.agent.mcp.call(self.snapshot, &tool.server, self.principal, &call.name, arguments).await {
            Ok(output) => {
                let status = if output.is_error { ToolStatus::Failed } else { ToolStatus::Done };
                self.finish(record, output, status).await
            }
            Err(e) => {
                let output = ToolOutput { text: format!("The tool could not be called: {e}."), is_error: true };
                self.finish(record, output, ToolStatus::Failed).await
            }
        }
    }

    async fn finish(&self, mut record: ToolCallRecord, output: ToolOutput, status: ToolStatus) -> ToolOutput {
        record.status = status;
        record.result = Some(output.text.clone());
        record.finished_at = Some(Utc::now());
        self.observer.record(&record, false).await;
        self.observer.tool_result(&record, &output);
        output
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
