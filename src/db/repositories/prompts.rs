//! The `prompt_resources` and `personal_prompts` tables: Prompt resources as the controller
//! last saw them, and people's own prompts. Personal prompts are always read with their
//! owner's id.

use chrono::{DateTime, Utc};
use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;
use sqlx::types::Json;
use sqlx::{Sqlite, SqliteConnection};

use crate::prompts::{Prompt, Variable};

/// A stored prompt: its name (and namespace, for a resource) and itself.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPrompt {
    pub namespace: Option<String>,
    pub name: String,
    pub prompt: Prompt,
}

#[derive(sqlx::FromRow)]
struct PromptRow {
    namespace: Option<String>,
    name: String,
    title: String,
    description: String,
    template: String,
    variables: Json<Vec<Variable>>,
    endpoint: Option<String>,
    tools: Option<Json<Vec<String>>>,
}

impl From<PromptRow> for StoredPrompt {
    fn from(row: PromptRow) -> Self {
        Self {
            namespace: row.namespace,
            name: row.name,
            prompt: Prompt {
                title: row.title,
                description: row.description,
                template: row.template,
                variables: row.variables.0,
                endpoint: row.endpoint,
                tools: row.tools.map(|t| t.0),
            },
        }
    }
}

macro_rules! select_resources {
    ($rest:literal) => {
        concat!(
            "SELECT namespace, name, COALESCE(title, name) AS title, COALESCE(description, '') AS description, \
             template, variables, endpoint, tools FROM prompt_resources ",
            $rest
        )
    };
}

macro_rules! select_personal {
    ($rest:literal) => {
        concat!(
            "SELECT NULL AS namespace, name, title, description, template, variables, endpoint, tools \
             FROM personal_prompts WHERE owner_id = ? ",
            $rest
        )
    };
}

/// Stores a Prompt resource under its uid (a resource deleted while the controller was
/// away leaves a row under its old uid, which goes).
pub async fn upsert_resource(
    conn: &mut SqliteConnection,
    uid: &str,
    namespace: &str,
    name: &str,
    prompt: &Prompt,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM prompt_resources WHERE namespace = ? AND name = ? AND uid <> ?")
        .bind(namespace)
        .bind(name)
        .bind(uid)
        .execute(&mut *conn)
        .await?;
    let query = sqlx::query(
        "INSERT INTO prompt_resources (uid, namespace, name, title, description, template, variables, endpoint, \
         tools, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (uid) DO UPDATE SET \
         title = excluded.title, description = excluded.description, template = excluded.template, \
         variables = excluded.variables, endpoint = excluded.endpoint, tools = excluded.tools, \
         updated_at = excluded.updated_at",
    )
    .bind(uid)
    .bind(namespace)
    .bind(name);
    bind_fields(query, prompt, now).execute(conn).await?;
    Ok(())
}

pub async fn delete_resource(conn: &mut SqliteConnection, uid: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM prompt_resources WHERE uid = ?").bind(uid).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

pub async fn resource(
    conn: &mut SqliteConnection,
    namespace: &str,
    name: &str,
) -> Result<Option<StoredPrompt>, sqlx::Error> {
    let row: Option<PromptRow> = sqlx::query_as(select_resources!("WHERE namespace = ? AND name = ?"))
        .bind(namespace)
        .bind(name)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Into::into))
}

pub async fn resources(conn: &mut SqliteConnection) -> Result<Vec<StoredPrompt>, sqlx::Error> {
    let rows: Vec<PromptRow> = sqlx::query_as(select_resources!("ORDER BY namespace, name")).fetch_all(conn).await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn personal(
    conn: &mut SqliteConnection,
    owner_id: i64,
    name: &str,
) -> Result<Option<StoredPrompt>, sqlx::Error> {
    let row: Option<PromptRow> =
        sqlx::query_as(select_personal!("AND name = ?")).bind(owner_id).bind(name).fetch_optional(conn).await?;
    Ok(row.map(Into::into))
}

pub async fn personal_list(conn: &mut SqliteConnection, owner_id: i64) -> Result<Vec<StoredPrompt>, sqlx::Error> {
    let rows: Vec<PromptRow> = sqlx::query_as(select_personal!("ORDER BY name")).bind(owner_id).fetch_all(conn).await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn personal_count(conn: &mut SqliteConnection, owner_id: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM personal_prompts WHERE owner_id = ?").bind(owner_id).fetch_one(conn).await
}

/// Adds one of the owner's prompts; `false` when they have one of this name already.
pub async fn insert_personal(
    conn: &mut SqliteConnection,
    owner_id: i64,
    name: &str,
    prompt: &Prompt,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let query = sqlx::query(
        "INSERT INTO personal_prompts (owner_id, name, title, description, template, variables, endpoint, tools, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
         ON CONFLICT (owner_id, name) DO NOTHING",
    )
    .bind(owner_id)
    .bind(name);
    Ok(bind_fields(query, prompt, now).execute(conn).await?.rows_affected() == 1)
}

/// Replaces one of the owner's prompts; `false` when they have none of this name.
pub async fn update_personal(
    conn: &mut SqliteConnection,
    owner_id: i64,
    name: &str,
    prompt: &Prompt,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let query = sqlx::query(
        "UPDATE personal_prompts SET title = $3, description = $4, template = $5, variables = $6, endpoint = $7, \
         tools = $8, updated_at = $9 WHERE owner_id = $1 AND name = $2",
    )
    .bind(owner_id)
    .bind(name);
    Ok(bind_fields(query, prompt, now).execute(conn).await?.rows_affected() == 1)
}

/// Binds a prompt's fields and the time, in the order every statement here numbers them
/// after its keys: title, description, template, variables, endpoint, tools, now.
fn bind_fields<'q>(
    query: Query<'q, Sqlite, SqliteArguments>,
    prompt: &'q Prompt,
    now: DateTime<Utc>,
) -> Query<'q, Sqlite, SqliteArguments> {
    query
        .bind(&prompt.title)
        .bind(&prompt.description)
        .bind(&prompt.template)
        .bind(Json(&prompt.variables))
        .bind(&prompt.endpoint)
        .bind(prompt.tools.as_ref().map(Json))
        .bind(now)
}

pub async fn delete_personal(conn: &mut SqliteConnection, owner_id: i64, name: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM personal_prompts WHERE owner_id = ? AND name = ?")
        .bind(owner_id)
        .bind(name)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
