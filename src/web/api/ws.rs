//! `GET /api/v1/ws`: the WebSocket twin of send, stream and cancel over one connection.
//! Client frames: `{"type":"send","conversation_id",…}`, `{"type":"subscribe","message_id",
//! "last_event_id"?}`, `{"type":"cancel","conversation_id","message_id"}`. Server frames:
//! `accepted`, the answer's events (`token`, `error`, `done`, each with `message_id` and
//! `id`), and `failed` for a refused request. Closing the socket stops nothing.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::extract::ws::{Message as Frame, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::auth::session::Authenticated;
use crate::chat::Ask;
use crate::web::AppState;
use crate::web::error::{ApiError, ApiQuery};
use crate::web::session::CurrentUser;

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// Browsers cannot set headers on a WebSocket: the CSRF token comes as a parameter.
    csrf_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Request {
    Send {
        conversation_id: i64,
        #[serde(default)]
        content: String,
        prompt: Option<String>,
        #[serde(default)]
        variables: BTreeMap<String, String>,
    },
    Subscribe {
        message_id: i64,
        #[serde(default)]
        last_event_id: u64,
    },
    Cancel {
        conversation_id: i64,
        message_id: i64,
    },
}

pub async fn upgrade(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiQuery(query): ApiQuery<WsQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if !state.web.origin_allowed(&headers) {
        return Err(ApiError::Forbidden("cross-origin WebSocket refused"));
    }
    if query.csrf_token.as_deref() != Some(session.csrf_token.as_str()) {
        return Err(ApiError::Forbidden("missing or wrong csrf_token parameter"));
    }
    Ok(upgrade.on_upgrade(move |socket| serve(socket, state, session)).into_response())
}

async fn serve(mut socket: WebSocket, state: AppState, session: Authenticated) {
    let (out, mut outgoing) = mpsc::channel::<Value>(256);
    let mut followers: HashMap<i64, JoinHandle<()>> = HashMap::new();
    loop {
        tokio::select! {
            frame = socket.recv() => {
                let Some(Ok(frame)) = frame else { break };
                let text = match frame {
                    Frame::Text(text) => text,
                    Frame::Close(_) => break,
                    _ => continue,
                };
                let reply = match serde_json::from_str::<Request>(&text) {
                    Ok(request) => handle(&state, &session, request, &out, &mut followers).await,
                    Err(e) => Some(json!({"type": "failed", "message": format!("cannot read the request: {e}")})),
                };
                if let Some(reply) = reply
                    && socket.send(Frame::Text(reply.to_string().into())).await.is_err()
                {
                    break;
                }
            }
            Some(event) = outgoing.recv() => {
                if socket.send(Frame::Text(event.to_string().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    for follower in followers.into_values() {
        follower.abort();
    }
}

async fn handle(
    state: &AppState,
    session: &Authenticated,
    request: Request,
    out: &mpsc::Sender<Value>,
    followers: &mut HashMap<i64, JoinHandle<()>>,
) -> Option<Value> {
    let user_id = session.user.id;
    match request {
        Request::Send { conversation_id, content, prompt, variables } => {
            match state.chat.send(user_id, conversation_id, Ask { content, prompt, variables }).await {
                Ok(sent) => {
                    follow(state, user_id, sent.message_id, 0, out, followers);
                    Some(json!({"type": "accepted", "conversation_id": conversation_id, "message_id": sent.message_id,
                        "user_message_id": sent.user_message_id}))
                }
                Err(e) => Some(failed(&e.into())),
            }
        }
        Request::Subscribe { message_id, last_event_id } => {
            if state.chat.generation(user_id, message_id).is_none() {
                return Some(json!({"type": "failed", "message_id": message_id,
                    "message": "no answer in progress or recently finished with this id; read it from the conversation"}));
            }
            follow(state, user_id, message_id, last_event_id, out, followers);
            None
        }
        Request::Cancel { conversation_id, message_id } => {
            match state.chat.cancel(user_id, conversation_id, message_id).await {
                Ok(stopped) => Some(json!({"type": "cancelled", "message_id": message_id, "stopped": stopped})),
                Err(e) => Some(failed(&e.into())),
            }
        }
    }
}

/// Forwards a generation's events to the socket, replacing an earlier follower of it.
fn follow(
    state: &AppState,
    user_id: i64,
    message_id: i64,
    last_event_id: u64,
    out: &mpsc::Sender<Value>,
    followers: &mut HashMap<i64, JoinHandle<()>>,
) {
    let Some(generation) = state.chat.generation(user_id, message_id) else { return };
    let out = out.clone();
    let metrics = state.metrics.clone();
    let task = tokio::spawn(async move {
        let _open = crate::telemetry::metrics::Open::new(&metrics.stream_followers);
        let mut events = Box::pin(generation.follow(last_event_id));
        while let Some(stamped) = events.next().await {
            let mut frame = serde_json::to_value(&stamped).unwrap_or(Value::Null);
            frame["message_id"] = json!(message_id);
            if out.send(frame).await.is_err() {
                break;
            }
        }
    });
    if let Some(previous) = followers.insert(message_id, task) {
        previous.abort();
    }
}

fn failed(error: &ApiError) -> Value {
    json!({"type": "failed", "code": error.code(), "message": error.public_message()})
}
