//! `/api/v1/conversations…`: conversations of the caller only,
//! sending (202, the answer is written in the background), following an answer's events
//! over SSE with `Last-Event-ID`, cancelling it, exporting a conversation.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};

use crate::audit::{self, Outcome};
use crate::chat::generation::{ChatEvent, StampedEvent};
use crate::chat::{self, Ask, Listed};
use crate::db::repositories::conversations::{Conversation, Message};
use crate::llm::Usage;
use crate::web::AppState;
use crate::web::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::web::session::{ClientAddr, CurrentUser};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    q: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<Vec<Listed>>, ApiError> {
    Ok(ApiJson(state.chat.list(session.user.id, query.q.as_deref()).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConversation {
    title: Option<String>,
}

/// `POST /api/v1/conversations` with `{"title"?}` or no body at all.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, ApiJson<Conversation>), ApiError> {
    let body = body?;
    let body: NewConversation = if body.iter().all(u8::is_ascii_whitespace) {
        NewConversation::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let title = body.title;
    Ok((StatusCode::CREATED, ApiJson(state.chat.create(session.user.id, title.as_deref()).await?)))
}

/// A message as the API shows it: with its Markdown rendered and sanitised.
#[derive(Debug, Serialize)]
pub struct MessageView {
    #[serde(flatten)]
    message: Message,
    html: String,
}

impl From<Message> for MessageView {
    fn from(message: Message) -> Self {
        let html = if message.role == "assistant" { chat::markdown::render(&message.content) } else { String::new() };
        Self { message, html }
    }
}

#[derive(Debug, Serialize)]
pub struct ConversationView {
    conversation: Conversation,
    messages: Vec<MessageView>,
}

pub async fn get(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> Result<ApiJson<ConversationView>, ApiError> {
    let (conversation, messages) = state.chat.get(session.user.id, id).await?;
    Ok(ApiJson(ConversationView { conversation, messages: messages.into_iter().map(MessageView::from).collect() }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    title: String,
}

pub async fn rename(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Rename>,
) -> Result<ApiJson<Conversation>, ApiError> {
    Ok(ApiJson(state.chat.rename(session.user.id, id, &body.title).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    state.chat.delete(session.user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    #[serde(default)]
    format: Option<String>,
}

pub async fn export(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let (conversation, messages) = state.chat.get(session.user.id, id).await?;
    let (body, content_type, extension) = match query.format.as_deref().unwrap_or("markdown") {
        "markdown" | "md" => (chat::export_markdown(&conversation, &messages), "text/markdown; charset=utf-8", "md"),
        "json" => {
            let view = serde_json::json!({"conversation": conversation, "messages": messages});
            (serde_json::to_string_pretty(&view).map_err(ApiError::internal)?, "application/json", "json")
        }
        other => return Err(ApiError::BadRequest(format!("unknown export format {other:?}: use markdown or json"))),
    };
    let disposition = format!("attachment; filename=\"conversation-{id}.{extension}\"");
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_DISPOSITION, HeaderValue::try_from(disposition).map_err(ApiError::internal)?),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    #[serde(default)]
    content: String,
    prompt: Option<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

/// 202 `{message_id, user_message_id}`, the answer written in the background; or, asked
/// with `Accept: text/event-stream`, the answer's events at once (a `sent` event with the
/// ids first), saving the client the second request.
pub async fn send(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendBody>,
) -> Result<Response, ApiError> {
    let send = Ask { content: body.content, prompt: body.prompt, variables: body.variables };
    let sent = state.chat.send(session.user.id, id, send).await?;
    let streams =
        headers.get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|v| v.contains("text/event-stream")));
    if !streams {
        return Ok((StatusCode::ACCEPTED, ApiJson(sent)).into_response());
    }
    let first = Event::default().event("sent").json_data(sent).map_err(|e| ApiError::Internal(e.into()))?;
    let events = answer_events(&state, session.user.id, id, sent.message_id, 0).await?;
    Ok(event_stream(&state.metrics, futures_util::stream::once(async { Ok(first) }).chain(events)))
}

pub async fn message(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath((id, message_id)): ApiPath<(i64, i64)>,
) -> Result<ApiJson<MessageView>, ApiError> {
    Ok(ApiJson(state.chat.message(session.user.id, id, message_id).await?.into()))
}

/// `text/event-stream` of an answer: `token`, `error`, `done`, each with an `id`. With
/// `Last-Event-ID` it resumes after that event. When the answer ended so long ago that its
/// events are gone, one `snapshot` event carries the stored message, then `done`.
pub async fn events(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath((id, message_id)): ApiPath<(i64, i64)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()))
        .map(|parsed| parsed.ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be an event id (a number)".into())))
        .transpose()?
        .unwrap_or(0);
    Ok(event_stream(&state.metrics, answer_events(&state, session.user.id, id, message_id, last_id).await?))
}

type Events = std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;

/// An answer's events after `last_id`: live while they are kept, else the stored message.
async fn answer_events(
    state: &AppState,
    user_id: i64,
    conversation_id: i64,
    message_id: i64,
    last_id: u64,
) -> Result<Events, ApiError> {
    // A live answer is found in memory (its owner and conversation checked there); only an
    // ended one costs a database read.
    let live = state.chat.generation(user_id, message_id).filter(|g| g.conversation_id == conversation_id);
    if let Some(generation) = live {
        return Ok(Box::pin(generation.follow(last_id).map(|e| Ok(sse_event(&e)))));
    }
    let message = state.chat.message(user_id, conversation_id, message_id).await?;
    Ok(Box::pin(futures_util::stream::iter(snapshot(&message).into_iter().map(Ok))))
}

fn event_stream(
    metrics: &crate::telemetry::metrics::Metrics,
    events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
) -> Response {
    // Counted while the client holds the stream.
    let open = crate::telemetry::metrics::Open::new(&metrics.stream_followers);
    let events = events.map(move |event| {
        let _counted = &open;
        event
    });
    let mut response = Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response();
    // Proxies must not buffer the stream.
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

pub fn sse_event(stamped: &StampedEvent) -> Event {
    Event::default()
        .id(stamped.id.to_string())
        .event(stamped.event.name())
        .json_data(&stamped.event)
        .unwrap_or_else(|_| Event::default().event("error").data("cannot encode event"))
}

/// The stored message as a `snapshot` event and a closing `done`.
fn snapshot(message: &Message) -> Vec<Event> {
    let status = if message.status == "streaming" { "failed" } else { message.status.as_str() };
    let usage = Usage {
        prompt_tokens: message.prompt_tokens.and_then(|t| u64::try_from(t).ok()),
        completion_tokens: message.completion_tokens.and_then(|t| u64::try_from(t).ok()),
    };
    let body =
        serde_json::json!({"type": "snapshot", "content": message.content, "status": status, "error": message.error});
    let done = ChatEvent::Done { status: status.to_owned(), usage };
    vec![
        Event::default().event("snapshot").data(body.to_string()),
        Event::default().event("done").json_data(&done).unwrap_or_default(),
    ]
}

pub async fn cancel(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath((id, message_id)): ApiPath<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    let stopped = state.chat.cancel(session.user.id, id, message_id).await?;
    Ok(if stopped { StatusCode::ACCEPTED } else { StatusCode::NO_CONTENT })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    approve: bool,
}

/// `POST …/messages/{mid}/approvals/{call_id}` `{approve}`: the user's decision on a write
/// tool call the answer waits for. 204 taken; 409 when nothing waits under that id.
pub async fn decide(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    client: ClientAddr,
    ApiPath((id, message_id, call_id)): ApiPath<(i64, i64, String)>,
    ApiJson(decision): ApiJson<Decision>,
) -> Result<StatusCode, ApiError> {
    let tool = state.chat.decide(session.user.id, id, message_id, &call_id, decision.approve).await?;
    let action = if decision.approve { "tool.approve" } else { "tool.refuse" };
    let detail = format!("conversation {id}, message {message_id}, call {call_id}");
    let event = audit::Event { action, target: Some(&tool), outcome: Outcome::Success, detail: Some(&detail) };
    state.auth.audit.record(&client.actor(&session), event).await;
    Ok(StatusCode::NO_CONTENT)
}
