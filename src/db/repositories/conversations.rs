//! The `conversations` and `messages` tables. Every query is scoped by the owner's id,
//! so one user's rows can never come back for another.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use sqlx::types::Json;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct Conversation {
    pub id: i64,
    #[serde(skip)]
    pub user_id: i64,
    pub title: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct Message {
    pub id: i64,
    pub conversation_id: i64,
    pub role: String,
    pub content: String,
    pub status: String,
    pub error: Option<String>,
    pub prompt_name: Option<String>,
    pub endpoint: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Notices shown while the answer was written.
    #[serde(skip)]
    pub notices: Option<Json<Vec<String>>>,
}

impl Message {
    pub fn notice_list(&self) -> Vec<String> {
        self.notices.as_ref().map(|n| n.0.clone()).unwrap_or_default()
    }
}

/// A message to add.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub role: &'a str,
    pub content: &'a str,
    pub status: &'a str,
    pub prompt_name: Option<&'a str>,
    pub endpoint: Option<&'a str>,
}

/// How a generation ended.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    pub content: &'a str,
    pub status: &'a str,
    pub error: Option<&'a str>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    /// What the user was told on the way (stored only when there was something).
    pub notices: &'a [String],
}

macro_rules! select_messages {
    ($rest:literal) => {
        concat!(
            "SELECT m.id, m.conversation_id, m.role, m.content, m.status, m.error, m.prompt_name, m.endpoint, ",
            "m.prompt_tokens, m.completion_tokens, m.created_at, m.finished_at, m.notices FROM messages m ",
            $rest
        )
    };
}

pub async fn create(
    conn: &mut SqliteConnection,
    user_id: i64,
    title: &str,
    now: DateTime<Utc>,
) -> Result<Conversation, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO conversations (user_id, title, created_at, updated_at) VALUES (?, ?, ?, ?) \
         RETURNING id, user_id, title, created_at, updated_at",
    )
    .bind(user_id)
    .bind(title)
    .bind(now)
    .bind(now)
    .fetch_one(conn)
    .await
}

pub async fn get(conn: &mut SqliteConnection, user_id: i64, id: i64) -> Result<Option<Conversation>, sqlx::Error> {
    sqlx::query_as("SELECT id, user_id, title, created_at, updated_at FROM conversations WHERE id = ? AND user_id = ?")
        .bind(id)
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

/// The user's conversations, most recently active first.
pub async fn list(conn: &mut SqliteConnection, user_id: i64, limit: i64) -> Result<Vec<Conversation>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, user_id, title, created_at, updated_at FROM conversations WHERE user_id = ? \
         ORDER BY updated_at DESC, id DESC LIMIT ?",
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Marks around the matched words in a [`Found::snippet`] (private-use characters).
pub const HIT_START: char = '\u{E000}';
pub const HIT_END: char = '\u{E001}';

/// A conversation a search found, with the best-matching passage of its messages.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Found {
    #[sqlx(flatten)]
    pub conversation: Conversation,
    /// The passage around the matched words, marked with [`HIT_START`] / [`HIT_END`];
    /// None when only the title matched.
    pub snippet: Option<String>,
}

/// The user's conversations whose title contains `query` (most recently active first),
/// then those whose finished messages hold every word of it as a word prefix, best
/// bm25 rank first (full-text index, `message_search`).
pub async fn search(
    conn: &mut SqliteConnection,
    user_id: i64,
    query: &str,
    limit: i64,
) -> Result<Vec<Found>, sqlx::Error> {
    let pattern = format!("%{}%", escape_like(query));
    let mut found: Vec<Found> = sqlx::query_as(
        "SELECT id, user_id, title, created_at, updated_at, NULL AS snippet FROM conversations \
         WHERE user_id = ? AND title LIKE ? ESCAPE '\\' ORDER BY updated_at DESC, id DESC LIMIT ?",
    )
    .bind(user_id)
    .bind(&pattern)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let Some(terms) = match_terms(query) else { return Ok(found) };
    let by_text: Vec<Found> = sqlx::query_as(
        "WITH hits AS ( \
           SELECT m.conversation_id AS cid, message_search.rank AS rank, \
                  snippet(message_search, 1, char(57344), char(57345), '…', 16) AS snippet \
           FROM message_search JOIN messages m ON m.id = message_search.rowid \
           WHERE message_search MATCH ? ORDER BY message_search.rank LIMIT 1000) \
         SELECT c.id, c.user_id, c.title, c.created_at, c.updated_at, h.snippet, MIN(h.rank) AS best \
         FROM hits h JOIN conversations c ON c.id = h.cid WHERE c.user_id = ? \
         GROUP BY c.id ORDER BY best, c.id DESC LIMIT ?",
    )
    .bind(format!("owner : u{user_id} AND body : ({terms})"))
    .bind(user_id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    for hit in by_text {
        match found.iter_mut().find(|f| f.conversation.id == hit.conversation.id) {
            Some(title_match) => title_match.snippet = hit.snippet,
            None => found.push(hit),
        }
    }
    found.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(found)
}

/// The FTS5 query for what someone typed: each whitespace-separated word a quoted phrase
/// matched as a prefix, all of them required; no operator or column of FTS5's syntax
/// gets through. None when no word has a letter or digit to match.
fn match_terms(query: &str) -> Option<String> {
    let terms: Vec<String> = query
        .split_whitespace()
        .filter(|word| word.chars().any(char::is_alphanumeric))
        .map(|word| format!("\"{}\"*", word.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" AND "))
}

pub async fn rename(
    conn: &mut SqliteConnection,
    user_id: i64,
    id: i64,
    title: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("UPDATE conversations SET title = ?, updated_at = ? WHERE id = ? AND user_id = ?")
        .bind(title)
        .bind(now)
        .bind(id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(result.rows_affected() > 0)
}

pub async fn delete(conn: &mut SqliteConnection, user_id: i64, id: i64) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("DELETE FROM conversations WHERE id = ? AND user_id = ?")
        .bind(id)
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(result.rows_affected() > 0)
}

pub async fn add_message(
    conn: &mut SqliteConnection,
    conversation_id: i64,
    message: &NewMessage<'_>,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO messages (conversation_id, role, content, status, prompt_name, endpoint, created_at, finished_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, CASE WHEN ? = 'streaming' THEN NULL ELSE ? END)",
    )
    .bind(conversation_id)
    .bind(message.role)
    .bind(message.content)
    .bind(message.status)
    .bind(message.prompt_name)
    .bind(message.endpoint)
    .bind(now)
    .bind(message.status)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE conversations SET updated_at = ? WHERE id = ?")
        .bind(now)
        .bind(conversation_id)
        .execute(conn)
        .await?;
    Ok(result.last_insert_rowid())
}

/// The messages of one of the user's conversations, oldest first.
pub async fn messages(
    conn: &mut SqliteConnection,
    user_id: i64,
    conversation_id: i64,
) -> Result<Vec<Message>, sqlx::Error> {
    sqlx::query_as(select_messages!(
        "JOIN conversations c ON c.id = m.conversation_id WHERE m.conversation_id = ? AND c.user_id = ? ORDER BY m.id"
    ))
    .bind(conversation_id)
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// Up to `limit` of the newest messages of one of the user's conversations older than
/// `before` (all when None), oldest first.
pub async fn messages_before(
    conn: &mut SqliteConnection,
    user_id: i64,
    conversation_id: i64,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Message>, sqlx::Error> {
    sqlx::query_as(select_messages!(
        "JOIN conversations c ON c.id = m.conversation_id WHERE c.user_id = ? AND m.id IN ( \
           SELECT id FROM messages WHERE conversation_id = ? AND id < ? ORDER BY id DESC LIMIT ?) \
         ORDER BY m.id"
    ))
    .bind(user_id)
    .bind(conversation_id)
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn message(
    conn: &mut SqliteConnection,
    user_id: i64,
    conversation_id: i64,
    id: i64,
) -> Result<Option<Message>, sqlx::Error> {
    sqlx::query_as(select_messages!(
        "JOIN conversations c ON c.id = m.conversation_id WHERE m.id = ? AND m.conversation_id = ? AND c.user_id = ?"
    ))
    .bind(id)
    .bind(conversation_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// Stores the text so far of a message still being generated.
pub async fn save_partial(conn: &mut SqliteConnection, id: i64, content: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE messages SET content = ? WHERE id = ? AND status = 'streaming'")
        .bind(content)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn finish(
    conn: &mut SqliteConnection,
    id: i64,
    outcome: &Outcome<'_>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE messages SET content = ?, status = ?, error = ?, prompt_tokens = ?, completion_tokens = ?, finished_at = ?, \
         notices = ? WHERE id = ?",
    )
    .bind(outcome.content)
    .bind(outcome.status)
    .bind(outcome.error)
    .bind(outcome.prompt_tokens)
    .bind(outcome.completion_tokens)
    .bind(now)
    .bind((!outcome.notices.is_empty()).then_some(Json(outcome.notices)))
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks every message still 'streaming' as failed: run at start, when no generation can
/// be running, so a crash never leaves an answer "in progress" forever.
pub async fn fail_interrupted(
    conn: &mut SqliteConnection,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let result =
        sqlx::query("UPDATE messages SET status = 'failed', error = ?, finished_at = ? WHERE status = 'streaming'")
            .bind(reason)
            .bind(now)
            .execute(conn)
            .await?;
    Ok(result.rows_affected())
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// A tool call of an answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct ToolCallRow {
    pub message_id: i64,
    pub call_id: String,
    pub server: String,
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
    pub writes: bool,
    /// `pending` (waiting for approval), `running`, `done`, `failed` or `refused`.
    pub status: String,
    pub result: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub async fn add_tool_call(conn: &mut SqliteConnection, call: &ToolCallRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tool_calls (message_id, call_id, server, name, arguments, writes, status, result, created_at, finished_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (message_id, call_id) DO NOTHING",
    )
    .bind(call.message_id)
    .bind(&call.call_id)
    .bind(&call.server)
    .bind(&call.name)
    .bind(&call.arguments)
    .bind(call.writes)
    .bind(&call.status)
    .bind(&call.result)
    .bind(call.created_at)
    .bind(call.finished_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn update_tool_call(
    conn: &mut SqliteConnection,
    message_id: i64,
    call_id: &str,
    status: &str,
    result: Option<&str>,
    finished_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tool_calls SET status = ?, result = ?, finished_at = ? WHERE message_id = ? AND call_id = ?")
        .bind(status)
        .bind(result)
        .bind(finished_at)
        .bind(message_id)
        .bind(call_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The tool calls of every answer in one of the user's conversations, in order.
/// The tool calls of the messages `messages` (ids, inclusive) of one of the user's
/// conversations.
pub async fn tool_calls(
    conn: &mut SqliteConnection,
    user_id: i64,
    conversation_id: i64,
    messages: std::ops::RangeInclusive<i64>,
) -> Result<Vec<ToolCallRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.message_id, t.call_id, t.server, t.name, t.arguments, t.writes, t.status, t.result, t.created_at, \
         t.finished_at FROM tool_calls t JOIN messages m ON m.id = t.message_id JOIN conversations c ON c.id = m.conversation_id \
         WHERE t.message_id BETWEEN ? AND ? AND m.conversation_id = ? AND c.user_id = ? ORDER BY t.id",
    )
    .bind(messages.start())
    .bind(messages.end())
    .bind(conversation_id)
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// Calls still waiting or running when the process stopped: they never finished.
pub async fn fail_interrupted_tool_calls(conn: &mut SqliteConnection, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE tool_calls SET status = 'failed', result = 'interrupted: the server stopped', finished_at = ? \
         WHERE status IN ('pending', 'running')",
    )
    .bind(now)
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// Deletes conversations (with their messages) untouched since `before`; how many.
pub async fn delete_untouched_since(conn: &mut SqliteConnection, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM conversations WHERE updated_at < ?").bind(before).execute(conn).await?.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::match_terms;

    #[test]
    fn typed_words_become_quoted_prefix_phrases() {
        assert_eq!(match_terms("PAY blocker").as_deref(), Some("\"PAY\"* AND \"blocker\"*"));
        assert_eq!(match_terms("2.4").as_deref(), Some("\"2.4\"*"));
        // FTS5 syntax is text here: quotes doubled, operators and columns inert.
        assert_eq!(match_terms("a\"b OR owner:u1").as_deref(), Some("\"a\"\"b\"* AND \"OR\"* AND \"owner:u1\"*"));
        assert_eq!(match_terms("% * \"\""), None, "nothing to match");
    }
}
