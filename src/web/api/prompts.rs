//! `/api/v1/prompts…`: the prompt library (prompts.json, Prompt resources and the caller's
//! own prompts) and the caller's own prompts kept, changed and deleted. An own prompt is
//! named `me:{name}` in chat and jobs; in these paths `{name}` or `me:{name}`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer};

use crate::prompts::{Prompt, PromptInfo, PromptRef, Variable};
use crate::web::AppState;
use crate::web::error::{ApiError, ApiJson, ApiPath};
use crate::web::session::CurrentUser;

/// `GET /api/v1/prompts`: prompts.json (`source: "file"`), Prompt resources
/// (`"kubernetes"`, named `namespace/name`), then the caller's own (`"personal"`, named
/// `me:name`, `editable: true`).
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
) -> Result<ApiJson<Vec<PromptInfo>>, ApiError> {
    Ok(ApiJson(state.prompts.list(session.user.id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPrompt {
    name: String,
    title: String,
    #[serde(default)]
    description: String,
    template: String,
    #[serde(default)]
    variables: Vec<Variable>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    tools: Option<Vec<String>>,
}

/// `POST /api/v1/prompts`: one of the caller's own prompts. 201 with it; 422 with what is
/// wrong; 409 when they have one of this name.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiJson(body): ApiJson<NewPrompt>,
) -> Result<(StatusCode, ApiJson<PromptInfo>), ApiError> {
    let NewPrompt { name, title, description, template, variables, endpoint, tools } = body;
    let prompt = Prompt { title, description, template, variables, endpoint, tools };
    let created = state.prompts.create_personal(session.user.id, name.trim(), prompt).await?;
    Ok((StatusCode::CREATED, ApiJson(created)))
}

/// `GET /api/v1/prompts/{name}`: one of the caller's own prompts.
pub async fn get(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<PromptInfo>, ApiError> {
    Ok(ApiJson(state.prompts.personal(session.user.id, &own_name(&name)?).await?))
}

/// The fields a change sets; the others keep their value. `endpoint` and `tools` are
/// cleared with `null`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    variables: Option<Vec<Variable>>,
    #[serde(default, deserialize_with = "present")]
    endpoint: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    tools: Option<Option<Vec<String>>>,
}

/// `PATCH /api/v1/prompts/{name}`: changes one of the caller's own prompts; 422 when the
/// result is not valid (nothing is changed then).
pub async fn update(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath(name): ApiPath<String>,
    ApiJson(change): ApiJson<Change>,
) -> Result<ApiJson<PromptInfo>, ApiError> {
    let name = own_name(&name)?;
    let current = state.prompts.personal(session.user.id, &name).await?;
    let prompt = Prompt {
        title: change.title.unwrap_or(current.title),
        description: change.description.unwrap_or(current.description),
        template: change.template.unwrap_or(current.template),
        variables: change.variables.unwrap_or(current.variables),
        endpoint: change.endpoint.unwrap_or(current.endpoint),
        tools: change.tools.unwrap_or(current.tools),
    };
    Ok(ApiJson(state.prompts.update_personal(session.user.id, &name, prompt).await?))
}

/// `DELETE /api/v1/prompts/{name}`: 204. Jobs that run it fail until one of that name is
/// back.
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.prompts.delete_personal(session.user.id, &own_name(&name)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The name of an own prompt in a path: `name` or `me:name`; other prompts cannot be
/// changed here.
fn own_name(path: &str) -> Result<String, ApiError> {
    let reference = if path.contains(':') || path.contains('/') {
        PromptRef::parse(path)?
    } else {
        PromptRef::Personal(path.to_owned())
    };
    match reference {
        PromptRef::Personal(name) => Ok(name),
        _ => Err(ApiError::Forbidden("only your own prompts (me:name) can be changed here")),
    }
}

/// A field that is present (`null` included) as `Some`: `Option<Option<T>>` tells "not
/// given" from "cleared".
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}
