//! A scripted OpenAI-compatible LLM on a loopback port, for tests and benchmarks: each
//! request takes the next script from a queue (or the default), so a test says exactly
//! what the "model" does — stream with delays, fail with a status, reset mid-stream,
//! send garbage, drip slowly, never end, call a tool — and reads back what it was sent.

#![allow(dead_code, clippy::needless_pass_by_value)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// What the mock does with one request.
#[derive(Debug, Clone)]
pub enum Script {
    /// Streams these pieces, `delay` apart, then a finish chunk with usage and `[DONE]`.
    Stream { pieces: Vec<String>, delay: Duration },
    /// Streams the last user message back word by word.
    Echo { delay: Duration },
    /// Answers with this HTTP status and an OpenAI-style error body.
    Status { status: u16, retry_after: Option<&'static str> },
    /// Streams these pieces, then breaks the connection.
    ResetAfter { pieces: Vec<String> },
    /// Streams these pieces, then a chunk that is not JSON.
    MalformedAfter { pieces: Vec<String> },
    /// Streams these pieces, then keeps the connection open without a word, forever.
    Hang { pieces: Vec<String> },
    /// Waits this long before sending the response head at all.
    Silent { wait: Duration },
    /// One JSON body (no streaming).
    Json { text: String },
    /// Streams a tool call in OpenAI's delta shape.
    ToolCall { name: String, arguments: String },
    /// Raw body lines with a content type, for company formats (NDJSON, odd SSE).
    Raw { content_type: &'static str, body: String },
    /// A tiny Jira "agent" for demos and browser tests: asked to comment, it calls
    /// `jira_add_comment` on PAY-7; asked about PAY-7, it calls `jira_get_issue`; given a
    /// tool result, it answers from it; anything else is echoed.
    Agent { delay: Duration },
}

/// What the mock received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Debug)]
struct MockState {
    /// What a request gets when no script is queued.
    default: Script,
    scripts: Mutex<VecDeque<Script>>,
    received: Mutex<Vec<Received>>,
    /// Streams whose client went away before the mock finished them.
    abandoned: AtomicUsize,
    /// Streams open right now.
    open: AtomicUsize,
}

#[derive(Debug, Clone)]
pub struct MockLlm {
    /// Base URL in OpenAI style, e.g. `http://127.0.0.1:40000/v1`.
    pub base: String,
    state: Arc<MockState>,
}

impl MockLlm {
    /// A mock that echoes by default.
    pub async fn start() -> Self {
        Self::start_with_default(Script::Echo { delay: Duration::from_millis(5) }).await
    }

    pub async fn start_with_default(default: Script) -> Self {
        Self::start_on("127.0.0.1", default).await
    }

    /// A mock listening on `ip` (a test node's address, so that Pods reach it).
    pub async fn start_on(ip: &str, default: Script) -> Self {
        let state = Arc::new(MockState {
            default,
            scripts: Mutex::default(),
            received: Mutex::default(),
            abandoned: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        });
        let app = Router::new().route("/v1/chat/completions", post(complete)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base: format!("http://{addr}/v1"), state }
    }

    /// Queues what the next request gets.
    pub fn push(&self, script: Script) {
        self.state.scripts.lock().unwrap().push_back(script);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    pub fn abandoned(&self) -> usize {
        self.state.abandoned.load(Ordering::SeqCst)
    }

    pub fn open_streams(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }
}

pub fn words(text: &str) -> Vec<String> {
    let mut pieces: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    if pieces.is_empty() {
        pieces.push(String::new());
    }
    pieces
}

/// Counts a stream as abandoned when it is dropped before it finished.
struct Watch {
    state: Arc<MockState>,
    finished: bool,
}

impl Watch {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.state.open.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.state.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

enum Step {
    Send(String),
    Sleep(Duration),
    Fail,
    HangForever,
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let body = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": "mock",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {body}\n\n")
}

fn stream_steps(pieces: &[String], delay: Duration) -> Vec<Step> {
    let mut steps = vec![Step::Send(chunk(json!({"role": "assistant"}), None))];
    for piece in pieces {
        if !delay.is_zero() {
            steps.push(Step::Sleep(delay));
        }
        steps.push(Step::Send(chunk(json!({"content": piece}), None)));
    }
    steps.push(Step::Send(chunk(json!({}), Some("stop"))));
    let usage = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "choices": [],
        "usage": {"prompt_tokens": 11, "completion_tokens": pieces.len()}});
    steps.push(Step::Send(format!("data: {usage}\n\n")));
    steps.push(Step::Send("data: [DONE]\n\n".into()));
    steps
}

fn sse(state: Arc<MockState>, steps: Vec<Step>, content_type: &'static str) -> Response {
    state.open.fetch_add(1, Ordering::SeqCst);
    let watch = Watch { state, finished: false };
    let stream = futures_util::stream::unfold((VecDeque::from(steps), watch), |(mut steps, mut watch)| async move {
        loop {
            match steps.pop_front() {
                None => {
                    watch.finish();
                    return None;
                }
                Some(Step::Sleep(d)) => tokio::time::sleep(d).await,
                Some(Step::Send(text)) => {
                    return Some((Ok::<Bytes, std::io::Error>(Bytes::from(text)), (steps, watch)));
                }
                Some(Step::Fail) => {
                    watch.finish();
                    return Some((Err(std::io::Error::other("mock reset")), (steps, watch)));
                }
                Some(Step::HangForever) => std::future::pending::<()>().await,
            }
        }
    });
    ([("content-type", content_type), ("cache-control", "no-cache")], Body::from_stream(stream)).into_response()
}

async fn complete(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.received.lock().unwrap().push(Received { headers, body: body.clone() });
    let script = state.scripts.lock().unwrap().pop_front().unwrap_or_else(|| state.default.clone());
    match script {
        Script::Stream { pieces, delay } => sse(state, stream_steps(&pieces, delay), "text/event-stream"),
        Script::Echo { delay } => {
            let last = body["messages"]
                .as_array()
                .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                .and_then(|m| m["content"].as_str())
                .unwrap_or("")
                .to_owned();
            sse(state, stream_steps(&words(&format!("You said: {last}")), delay), "text/event-stream")
        }
        Script::Status { status, retry_after } => {
            let status = StatusCode::from_u16(status).unwrap();
            let error = json!({"error": {"message": format!("mock says {}", status.as_u16()), "type": "mock"}});
            let mut response = (status, axum::Json(error)).into_response();
            if let Some(wait) = retry_after {
                response.headers_mut().insert("retry-after", wait.parse().unwrap());
            }
            response
        }
        Script::ResetAfter { pieces } => {
            let mut steps = stream_steps(&pieces, Duration::from_millis(5));
            steps.truncate(pieces.len() * 2 + 1);
            steps.push(Step::Sleep(Duration::from_millis(20)));
            steps.push(Step::Fail);
            sse(state, steps, "text/event-stream")
        }
        Script::MalformedAfter { pieces } => {
            let mut steps = stream_steps(&pieces, Duration::ZERO);
            steps.truncate(pieces.len() + 1);
            steps.push(Step::Send("data: {this is not json\n\n".into()));
            sse(state, steps, "text/event-stream")
        }
        Script::Hang { pieces } => {
            let mut steps = stream_steps(&pieces, Duration::from_millis(5));
            steps.truncate(pieces.len() * 2 + 1);
            steps.push(Step::HangForever);
            sse(state, steps, "text/event-stream")
        }
        Script::Silent { wait } => {
            tokio::time::sleep(wait).await;
            sse(state, stream_steps(&words("late answer"), Duration::ZERO), "text/event-stream")
        }
        Script::Json { text } => axum::Json(json!({
            "id": "chatcmpl-mock", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2}
        }))
        .into_response(),
        Script::ToolCall { name, arguments } => {
            let (head, tail) = arguments.split_at(arguments.len() / 2);
            let steps = vec![
                Step::Send(chunk(
                    json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": name, "arguments": head}}]}),
                    None,
                )),
                Step::Send(chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": tail}}]}), None)),
                Step::Send(chunk(json!({}), Some("tool_calls"))),
                Step::Send("data: [DONE]\n\n".into()),
            ];
            sse(state, steps, "text/event-stream")
        }
        Script::Agent { delay } => {
            let messages = body["messages"].as_array().cloned().unwrap_or_default();
            let last = messages.last().cloned().unwrap_or(Value::Null);
            let asked = last["content"].as_str().unwrap_or("").to_lowercase();
            let call = |name: &str, arguments: Value| {
                let steps = vec![
                    Step::Send(chunk(
                        json!({"role": "assistant", "tool_calls": [{"index": 0, "id": format!("call_{}", messages.len()),
                        "type": "function", "function": {"name": name, "arguments": arguments.to_string()}}]}),
                        None,
                    )),
                    Step::Send(chunk(json!({}), Some("tool_calls"))),
                    Step::Send("data: [DONE]\n\n".into()),
                ];
                steps
            };
            let steps = if last["role"] == "tool" {
                let result = last["content"].as_str().unwrap_or("");
                let answer = if result.starts_with("The user refused") {
                    "Understood: I did not comment.".to_owned()
                } else if result.contains("PAY-9") {
                    "**PAY-7** (Payment retries fail) is blocked by **PAY-9**: the gateway SDK upgrade.".to_owned()
                } else {
                    format!("Done. The tool answered: {}", result.chars().take(80).collect::<String>())
                };
                stream_steps(&words(&answer), delay)
            } else if asked.contains("comment") {
                call("jira_add_comment", json!({"issue_key": "PAY-7", "body": "Escalated by promptops."}))
            } else if asked.contains("pay-7") {
                call("jira_get_issue", json!({"issue_key": "PAY-7"}))
            } else {
                stream_steps(&words(&format!("You said: {}", last["content"].as_str().unwrap_or(""))), delay)
            };
            sse(state, steps, "text/event-stream")
        }
        Script::Raw { content_type, body } => {
            let steps = body.split_inclusive('\n').map(|line| Step::Send(line.to_owned())).collect();
            sse(state, steps, content_type)
        }
    }
}
