//! The prompt library: prompts.json, Prompt resources from Kubernetes (read-only here) and
//! the texts of the caller's own scheduled jobs, each with a badge saying where it comes from.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::IntoResponse;

use super::{Layout, PageResult};
use crate::chat::VariableInfo;
use crate::web::AppState;
use crate::web::session::CurrentUser;

#[derive(Debug)]
pub struct PromptCard {
    name: String,
    title: String,
    description: String,
    /// `file` or `kubernetes`.
    source: &'static str,
    namespace: String,
    variables: Vec<VariableInfo>,
}

/// A personal job's own prompt text.
#[derive(Debug)]
pub struct PersonalPrompt {
    job_id: String,
    name: String,
    text: String,
    cut: bool,
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "prompts.html")]
pub struct PromptsPage {
    layout: Layout,
    prompts: Vec<PromptCard>,
    personal: Vec<PersonalPrompt>,
}

pub async fn page(State(state): State<AppState>, CurrentUser(session): CurrentUser) -> PageResult {
    let prompts = state
        .jobs
        .prompts()
        .await?
        .into_iter()
        .map(|p| PromptCard {
            namespace: if p.source == "kubernetes" {
                p.name.split_once('/').map(|(ns, _)| ns.to_owned()).unwrap_or_default()
            } else {
                String::new()
            },
            name: p.name,
            title: p.title,
            description: p.description,
            source: p.source,
            variables: p.variables,
        })
        .collect();
    let personal = state
        .jobs
        .list(session.user.id)
        .await?
        .into_iter()
        .filter(|job| job.owner_id == Some(session.user.id))
        .filter_map(|job| {
            let text = job.prompt?;
            let (shown, cut) = crate::text::prefix(&text, 300);
            Some(PersonalPrompt { job_id: job.id, name: job.name, text: shown.to_owned(), cut })
        })
        .collect();
    let page = PromptsPage { layout: Layout::signed_in("Prompts", "prompts", &session), prompts, personal };
    Ok(page.into_response())
}
