//! The chat page: conversation sidebar with search, the messages (answers rendered from
//! Markdown and sanitised on the server), the composer with the prompt picker.
//! Streaming happens in `static/js/chat.js` against the JSON API.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use serde::Deserialize;

use super::{Layout, PageResult, see_other, when};
use crate::chat::{self, Listed, SnippetPart};
use crate::db::repositories::conversations::{Conversation, Message, ToolCallRow};
use crate::prompts::PromptInfo;
use crate::web::AppState;
use crate::web::session::CurrentUser;

#[derive(Debug)]
pub struct ConversationLink {
    id: i64,
    title: String,
    updated: String,
    current: bool,
    /// The passage a search matched, its words marked.
    snippet: Vec<SnippetPart>,
}

#[derive(Debug)]
pub struct ToolCallView {
    name: String,
    arguments: String,
    status: String,
    result: String,
    writes: bool,
}

impl From<&ToolCallRow> for ToolCallView {
    fn from(row: &ToolCallRow) -> Self {
        let arguments = serde_json::from_str::<serde_json::Value>(&row.arguments)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| row.arguments.clone());
        Self {
            name: row.name.clone(),
            arguments,
            status: row.status.clone(),
            result: row.result.clone().unwrap_or_default(),
            writes: row.writes,
        }
    }
}

#[derive(Debug)]
pub struct MessageView {
    id: i64,
    conversation_id: i64,
    is_user: bool,
    content: String,
    /// Sanitised HTML of an answer.
    html: String,
    status: String,
    error: String,
    streaming: bool,
    when: String,
    tool_calls: Vec<ToolCallView>,
    notices: Vec<String>,
}

impl MessageView {
    fn new(message: &Message, calls: &[ToolCallRow]) -> Self {
        let is_user = message.role == "user";
        Self {
            id: message.id,
            conversation_id: message.conversation_id,
            is_user,
            html: if is_user { String::new() } else { chat::markdown::render(&message.content) },
            content: message.content.clone(),
            status: message.status.clone(),
            error: message.error.clone().unwrap_or_default(),
            streaming: message.status == "streaming",
            when: when(message.created_at),
            notices: message.notice_list(),
            // An answer still being written shows its calls as they replay from its events.
            tool_calls: if message.status == "streaming" {
                Vec::new()
            } else {
                calls.iter().filter(|c| c.message_id == message.id).map(ToolCallView::from).collect()
            },
        }
    }
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "chat.html")]
pub struct ChatPage {
    layout: Layout,
    conversations: Vec<ConversationLink>,
    query: String,
    conversation: Option<Conversation>,
    messages: Vec<MessageView>,
    /// When older messages exist: the id to load them before.
    earlier: Option<i64>,
    prompts: Vec<PromptInfo>,
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "partials/message.html")]
pub struct MessagePartial {
    message: MessageView,
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "partials/earlier.html")]
pub struct EarlierPartial {
    conversation_id: i64,
    messages: Vec<MessageView>,
    earlier: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct EarlierQuery {
    /// None: the newest page.
    before: Option<i64>,
}

/// `GET /c/{id}/earlier?before=ID`: the page of messages before `ID`, with the control
/// that loads the page before that, swapped in above the messages shown.
pub async fn earlier(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    Path(id): Path<i64>,
    Query(query): Query<EarlierQuery>,
) -> PageResult {
    let page = state.chat.page(session.user.id, id, query.before).await?;
    let messages = page.messages.iter().map(|m| MessageView::new(m, &page.calls)).collect();
    Ok(EarlierPartial { conversation_id: id, messages, earlier: page.earlier }.into_response())
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// `GET /`: the most recent conversation, or the empty chat.
pub async fn home(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    Query(query): Query<SearchQuery>,
) -> PageResult {
    if query.q.is_empty()
        && let Some(latest) = state.chat.list(session.user.id, None).await?.first()
    {
        return Ok(Redirect::to(&format!("/c/{}", latest.conversation.id)).into_response());
    }
    render(&state, &session, None, &query.q).await
}

pub async fn conversation(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    Path(id): Path<i64>,
    Query(query): Query<SearchQuery>,
) -> PageResult {
    render(&state, &session, Some(id), &query.q).await
}

async fn render(
    state: &AppState,
    session: &crate::auth::session::Authenticated,
    id: Option<i64>,
    query: &str,
) -> PageResult {
    let (conversation, messages, earlier) = match id {
        Some(id) => {
            let page = state.chat.page(session.user.id, id, None).await?;
            let messages = page.messages.iter().map(|m| MessageView::new(m, &page.calls)).collect();
            (Some(page.conversation), messages, page.earlier)
        }
        None => (None, Vec::new(), None),
    };
    let search = Some(query).filter(|q| !q.is_empty());
    let conversations = state
        .chat
        .list(session.user.id, search)
        .await?
        .into_iter()
        .map(|Listed { conversation: c, snippet }| ConversationLink {
            current: Some(c.id) == id,
            id: c.id,
            updated: when(c.updated_at),
            title: c.title,
            snippet,
        })
        .collect();
    let title = conversation.as_ref().map_or("Chat", |c| c.title.as_str()).to_owned();
    let page = ChatPage {
        layout: Layout::signed_in(&title, "chat", session),
        conversations,
        query: query.to_owned(),
        conversation,
        messages,
        earlier,
        prompts: state.prompts.list(session.user.id).await?,
    };
    Ok(page.into_response())
}

/// `GET /c/{id}/m/{message_id}`: one message, for swapping in when an answer ends.
pub async fn message(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    Path((id, message_id)): Path<(i64, i64)>,
) -> PageResult {
    let message = state.chat.message(session.user.id, id, message_id).await?;
    let calls = state.chat.tool_calls(session.user.id, id, message_id).await?;
    Ok(MessagePartial { message: MessageView::new(&message, &calls) }.into_response())
}

pub async fn create(State(state): State<AppState>, CurrentUser(session): CurrentUser) -> PageResult {
    let conversation = state.chat.create(session.user.id, None).await?;
    Ok(see_other(&format!("/c/{}", conversation.id)))
}

#[derive(Debug, Deserialize)]
pub struct RenameForm {
    title: String,
}

pub async fn rename(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    Path(id): Path<i64>,
    Form(form): Form<RenameForm>,
) -> PageResult {
    state.chat.rename(session.user.id, id, &form.title).await?;
    Ok(see_other(&format!("/c/{id}")))
}

pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    Path(id): Path<i64>,
) -> PageResult {
    state.chat.delete(session.user.id, id).await?;
    Ok(see_other("/"))
}
