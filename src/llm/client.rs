//! The LLM client: one request to a configured endpoint, streamed back as events, with
//! the endpoint's headers, payload template, timeouts, retries and concurrency limit —
//! all read from the config snapshot the caller started with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use rand::RngExt as _;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::payload::{self, PayloadValues};
use super::response::{self, Answer, Completion, Frame, FrameError, Mapping};
use crate::config::model::{Endpoint, Framing};
use crate::config::{Config, ConfigSnapshot};

/// What streams out of a request as it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    /// A piece of the answer's text.
    Text(String),
}

/// Why a request failed. Messages are for people: they say what happened, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("no endpoint named {0:?} in the configuration")]
    UnknownEndpoint(String),
    #[error("the LLM answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("cannot reach the LLM: {0}")]
    Connect(String),
    #[error("the connection to the LLM was lost: {0}")]
    Interrupted(String),
    #[error("the LLM sent a malformed chunk: {0}")]
    Malformed(String),
    #[error("the LLM did not start answering within {0:?}")]
    FirstTokenTimeout(Duration),
    #[error("the LLM went silent for {0:?}")]
    IdleTimeout(Duration),
    #[error("the answer took longer than {0:?}")]
    TotalTimeout(Duration),
    #[error("cancelled")]
    Cancelled,
    /// What the model had written before a failure after the first token.
    #[error("{error}")]
    Partial { error: Box<LlmError>, partial: Box<Completion> },
}

impl LlmError {
    /// The text already delivered when the failure struck, if any.
    pub fn partial(&self) -> Option<&Completion> {
        match self {
            Self::Partial { partial, .. } => Some(partial),
            _ => None,
        }
    }

    pub fn is_cancelled(&self) -> bool {
        match self {
            Self::Cancelled => true,
            Self::Partial { error, .. } => error.is_cancelled(),
            _ => false,
        }
    }
}

/// What to ask.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    /// Messages in OpenAI's shape (`{role, content, …}`).
    pub messages: Vec<Value>,
    /// Tool definitions in OpenAI's shape; none offered when empty.
    pub tools: Vec<Value>,
    pub stream: bool,
}

#[derive(Debug, Default)]
pub struct LlmClient {
    /// One HTTP client per connect timeout (reqwest sets it per client).
    clients: Mutex<HashMap<Duration, reqwest::Client>>,
    /// Per endpoint: the limit it was made for and the semaphore enforcing it.
    limits: Mutex<HashMap<String, (u32, Arc<Semaphore>)>>,
}

/// A failed attempt and whether another one may follow.
struct Failed {
    error: LlmError,
    retry: bool,
    retry_after: Option<Duration>,
}

impl LlmClient {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `request` to `endpoint` and feeds the answer to `on_event` as it streams.
    /// Retries (per the endpoint's policy) only while nothing reached `on_event`.
    pub async fn complete(
        &self,
        snapshot: &ConfigSnapshot,
        endpoint: &str,
        request: &LlmRequest,
        cancel: &CancellationToken,
        on_event: &mut (dyn FnMut(LlmEvent) + Send),
    ) -> Result<Completion, LlmError> {
        let config = &snapshot.config;
        let settings =
            config.service.endpoints.get(endpoint).ok_or_else(|| LlmError::UnknownEndpoint(endpoint.to_owned()))?;
        let deadline = Instant::now() + settings.timeouts.total;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut delivered = false;
            let mut forward = |event: LlmEvent| {
                delivered = true;
                on_event(event);
            };
            let outcome = tokio::select! {
                () = cancel.cancelled() => Err(Failed { error: LlmError::Cancelled, retry: false, retry_after: None }),
                () = tokio::time::sleep_until(deadline) => Err(Failed {
                    error: LlmError::TotalTimeout(settings.timeouts.total), retry: false, retry_after: None,
                }),
                result = self.attempt(config, endpoint, settings, request, &mut forward) => result,
            };
            let failed = match outcome {
                Ok(mut completion) => {
                    completion.attempts = attempt;
                    return Ok(completion);
                }
                Err(failed) => failed,
            };
            if delivered || !failed.retry || attempt >= settings.retry.max_attempts {
                return Err(failed.error);
            }
            let wait = backoff(settings, attempt, failed.retry_after);
            tracing::warn!(endpoint, attempt, error = %failed.error, wait_ms = wait.as_millis() as u64, "LLM request failed; retrying");
            tokio::select! {
                () = cancel.cancelled() => return Err(LlmError::Cancelled),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn attempt(
        &self,
        config: &Config,
        endpoint: &str,
        settings: &Endpoint,
        request: &LlmRequest,
        on_event: &mut (dyn FnMut(LlmEvent) + Send),
    ) -> Result<Completion, Failed> {
        let _permit = self.permit(endpoint, settings.max_concurrency).await;
        let started = Instant::now();
        let first_token = settings.timeouts.first_token;
        let mut values = PayloadValues::new()
            .set("messages", Value::Array(request.messages.clone()))
            .set("stream", Value::Bool(request.stream));
        if let Some(model) = &settings.model {
            values = values.set("model", Value::String(model.clone()));
        }
        if !request.tools.is_empty() {
            values = values.set("tools", Value::Array(request.tools.clone()));
        }
        let body = payload::render(config.payloads.get(endpoint).unwrap_or(&Value::Null), &values);
        let mut http = self.client(settings.timeouts.connect).post(settings.url.clone()).json(&body);
        for (name, value) in config.headers.get(endpoint).into_iter().flatten() {
            http = http.header(name, value);
        }
        let response = match tokio::time::timeout(first_token, http.send()).await {
            Err(_) => return Err(retryable(LlmError::FirstTokenTimeout(first_token))),
            Ok(Err(e)) => return Err(retryable(LlmError::Connect(describe(&e)))),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            let retry_after = response.headers().get(http::header::RETRY_AFTER).and_then(parse_retry_after);
            let message = error_message(response).await;
            return Err(Failed {
                retry: settings.retry.on_status.contains(&status.as_u16()),
                error: LlmError::Status { status: status.as_u16(), message },
                retry_after,
            });
        }
        let mapping = Mapping::new(&settings.response, request.stream);
        let mut reader = Reader::new(mapping.clone(), started + first_token, settings.timeouts.idle, first_token);
        if mapping.framing == Framing::Json {
            let bytes = reader.next_within(Box::pin(response.bytes())).await?;
            let bytes = bytes.map_err(|e| fail(LlmError::Interrupted(describe(&e))))?;
            let value: Value = serde_json::from_slice(&bytes).map_err(|e| fail(LlmError::Malformed(e.to_string())))?;
            reader.take(&value, on_event)?;
        } else {
            let body = response.bytes_stream().map_err(|e| describe(&e));
            let mut frames = Box::pin(response::frames(&mapping, body));
            while let Some(frame) = reader.next_item(&mut frames).await? {
                match frame {
                    Ok(Frame::Chunk(value)) => reader.take(&value, on_event)?,
                    Ok(Frame::Done) => {
                        reader.finished = true;
                        break;
                    }
                    Err(FrameError::Interrupted(reason)) => return Err(reader.failure(LlmError::Interrupted(reason))),
                    Err(FrameError::Malformed(reason)) => return Err(reader.failure(LlmError::Malformed(reason))),
                }
            }
        }
        reader.finish()
    }

    fn client(&self, connect: Duration) -> reqwest::Client {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        clients
            .entry(connect)
            .or_insert_with(|| {
                reqwest::Client::builder()
                    .connect_timeout(connect)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .build()
                    .unwrap_or_default()
            })
            .clone()
    }

    /// Waits for a slot of the endpoint's concurrency limit. A changed limit takes effect
    /// for new requests; those in flight keep the slot they hold.
    async fn permit(&self, endpoint: &str, limit: u32) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
            let entry =
                limits.entry(endpoint.to_owned()).or_insert_with(|| (limit, Arc::new(Semaphore::new(limit as usize))));
            if entry.0 != limit {
                *entry = (limit, Arc::new(Semaphore::new(limit as usize)));
            }
            entry.1.clone()
        };
        semaphore.acquire_owned().await.ok()
    }
}

/// Accumulates an answer from chunks and enforces the first-token and idle timeouts.
struct Reader {
    mapping: Mapping,
    answer: Answer,
    first_deadline: Instant,
    idle: Duration,
    first_token: Duration,
    got_output: bool,
    finished: bool,
}

impl Reader {
    fn new(mapping: Mapping, first_deadline: Instant, idle: Duration, first_token: Duration) -> Self {
        Self {
            mapping,
            answer: Answer::default(),
            first_deadline,
            idle,
            first_token,
            got_output: false,
            finished: false,
        }
    }

    /// The next item of a body stream, within the first-token or idle timeout.
    async fn next_item<S: Stream + Unpin>(&mut self, stream: &mut S) -> Result<Option<S::Item>, Failed> {
        let wait =
            if self.got_output { tokio::time::sleep(self.idle) } else { tokio::time::sleep_until(self.first_deadline) };
        tokio::select! {
            item = stream.next() => Ok(item),
            () = wait => Err(if self.got_output {
                self.failure(LlmError::IdleTimeout(self.idle))
            } else {
                retryable(LlmError::FirstTokenTimeout(self.first_token))
            }),
        }
    }

    async fn next_within<F: Future + Unpin>(&mut self, body: F) -> Result<F::Output, Failed> {
        tokio::select! {
            out = body => Ok(out),
            () = tokio::time::sleep_until(self.first_deadline) => Err(retryable(LlmError::FirstTokenTimeout(self.first_token))),
        }
    }

    fn take(&mut self, value: &Value, on_event: &mut (dyn FnMut(LlmEvent) + Send)) -> Result<(), Failed> {
        let text =
            self.answer.take(&self.mapping, value).map_err(|reason| self.failure(LlmError::Malformed(reason)))?;
        self.got_output = self.answer.has_output();
        if let Some(text) = text {
            on_event(LlmEvent::Text(text));
        }
        Ok(())
    }

    fn finish(self) -> Result<Completion, Failed> {
        let ended_properly =
            self.finished || self.answer.finish_reason().is_some() || self.mapping.framing == Framing::Json;
        if !ended_properly {
            return Err(self.failure(LlmError::Interrupted("the stream ended before the answer was complete".into())));
        }
        Ok(self.answer.completion())
    }

    /// A failure that keeps what was written so far; retryable only before any output.
    fn failure(&self, error: LlmError) -> Failed {
        if !self.got_output {
            return Failed { retry: matches!(error, LlmError::Interrupted(_)), error, retry_after: None };
        }
        Failed {
            error: LlmError::Partial { error: Box::new(error), partial: Box::new(self.answer.completion()) },
            retry: false,
            retry_after: None,
        }
    }
}

fn retryable(error: LlmError) -> Failed {
    Failed { error, retry: true, retry_after: None }
}

fn fail(error: LlmError) -> Failed {
    Failed { error, retry: false, retry_after: None }
}

/// Exponential backoff with full jitter, or the server's `Retry-After`, capped.
fn backoff(settings: &Endpoint, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let policy = &settings.retry;
    if let Some(wait) = retry_after {
        return wait.min(policy.max_backoff);
    }
    let ceiling =
        policy.initial_backoff.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1))).min(policy.max_backoff);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(millis / 2..=millis.max(1)))
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &http::HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    (when.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok()
}

/// The error message an endpoint sent, from OpenAI's `{"error": {"message"}}` or the body.
async fn error_message(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let from_json = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.pointer("/error/message").or_else(|| v.get("error")).or_else(|| v.get("message")).cloned())
        .and_then(|v| v.as_str().map(str::to_owned));
    from_json
        .or_else(|| Some(response::clip(body.trim()).to_owned()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned())
}

fn describe(error: &reqwest::Error) -> String {
    crate::text::error_chain(error)
}
