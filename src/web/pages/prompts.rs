//! The prompt library: prompts.json, Prompt resources from Kubernetes (read-only here), the
//! caller's own prompts (made, edited and deleted here) and the texts of their scheduled
//! jobs, each with a badge saying where it comes from.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::{Layout, PageResult, capitalise, see_other};
use crate::auth::session::Authenticated;
use crate::prompts::{Prompt, PromptError, PromptInfo, Source, Variable};
use crate::web::AppState;
use crate::web::session::CurrentUser;

/// Empty variable rows a form offers beyond the prompt's own.
const SPARE_ROWS: usize = 3;

/// A personal job's own prompt text.
#[derive(Debug)]
pub struct JobText {
    job_id: String,
    name: String,
    text: String,
    cut: bool,
}

/// The form for one of the caller's prompts: empty, filled from the prompt, or what was
/// sent with the reason it was refused.
#[derive(Debug, Default)]
pub struct PromptForm {
    /// Set when editing (the name cannot change).
    editing: Option<String>,
    name: String,
    title: String,
    description: String,
    template: String,
    endpoint: String,
    variables: Vec<VariableRow>,
    error: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct VariableRow {
    name: String,
    description: String,
    required: bool,
    default: String,
}

impl PromptForm {
    fn blank() -> Self {
        Self { variables: vec![VariableRow::default(); SPARE_ROWS], ..Self::default() }
    }

    fn of(info: &PromptInfo) -> Self {
        let mut variables: Vec<VariableRow> = info
            .variables
            .iter()
            .map(|v| VariableRow {
                name: v.name.clone(),
                description: v.description.clone(),
                required: v.required,
                default: v.default.clone().unwrap_or_default(),
            })
            .collect();
        variables.extend(std::iter::repeat_n(VariableRow::default(), SPARE_ROWS));
        let name = info.own_name().unwrap_or_default().to_owned();
        Self {
            editing: Some(name.clone()),
            name,
            title: info.title.clone(),
            description: info.description.clone(),
            template: info.template.clone(),
            endpoint: info.endpoint.clone().unwrap_or_default(),
            variables,
            error: None,
        }
    }

    /// The form as sent: `var.{i}.name`, `var.{i}.description`, `var.{i}.required`,
    /// `var.{i}.default` per variable row, in row order.
    fn from_fields(fields: Vec<(String, String)>, editing: Option<String>) -> Self {
        let mut form = Self { editing, ..Self::default() };
        for (key, value) in fields {
            match key.as_str() {
                "name" => form.name = value,
                "title" => form.title = value,
                "description" => form.description = value,
                "template" => form.template = value,
                "endpoint" => form.endpoint = value,
                _ => {
                    let Some((index, field)) = key.strip_prefix("var.").and_then(|rest| rest.split_once('.')) else {
                        continue;
                    };
                    let Ok(index) = index.parse::<usize>() else { continue };
                    if index >= crate::prompts::MAX_VARIABLES + SPARE_ROWS {
                        continue;
                    }
                    if form.variables.len() <= index {
                        form.variables.resize(index + 1, VariableRow::default());
                    }
                    let row = &mut form.variables[index];
                    match field {
                        "name" => row.name = value,
                        "description" => row.description = value,
                        "required" => row.required = true,
                        "default" => row.default = value,
                        _ => {}
                    }
                }
            }
        }
        if let Some(name) = &form.editing {
            form.name.clone_from(name);
        }
        form
    }

    /// The prompt the form describes; rows without a name are left out.
    fn prompt(&self, tools: Option<Vec<String>>) -> Prompt {
        Prompt {
            title: self.title.clone(),
            description: self.description.clone(),
            template: self.template.replace("\r\n", "\n"),
            variables: self
                .variables
                .iter()
                .filter(|row| !row.name.trim().is_empty())
                .map(|row| Variable {
                    name: row.name.trim().to_owned(),
                    description: row.description.trim().to_owned(),
                    required: row.required,
                    default: Some(row.default.clone()).filter(|d| !d.is_empty()),
                })
                .collect(),
            endpoint: Some(self.endpoint.trim().to_owned()).filter(|e| !e.is_empty()),
            tools,
        }
    }

    fn refused(mut self, error: &PromptError) -> Self {
        self.error = Some(capitalise(&error.to_string()));
        let spare = self.variables.iter().rev().take_while(|row| row.name.is_empty()).count();
        self.variables.extend(std::iter::repeat_n(VariableRow::default(), SPARE_ROWS.saturating_sub(spare)));
        self
    }
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "prompts.html")]
pub struct PromptsPage {
    layout: Layout,
    prompts: Vec<PromptInfo>,
    jobs: Vec<JobText>,
    form: PromptForm,
    endpoints: Vec<String>,
    notice: Option<&'static str>,
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "prompt_edit.html")]
pub struct EditPage {
    layout: Layout,
    form: PromptForm,
    endpoints: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
pub struct NoticeQuery {
    notice: Option<String>,
}

fn notice_text(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "prompt_created" => Some("Prompt saved. Pick it in the chat or in a job as me:name."),
        "prompt_updated" => Some("Prompt updated."),
        "prompt_deleted" => Some("Prompt deleted."),
        _ => None,
    }
}

pub async fn page(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    axum::extract::Query(query): axum::extract::Query<NoticeQuery>,
) -> PageResult {
    render_page(&state, &session, StatusCode::OK, PromptForm::blank(), notice_text(query.notice.as_deref())).await
}

async fn render_page(
    state: &AppState,
    session: &Authenticated,
    status: StatusCode,
    form: PromptForm,
    notice: Option<&'static str>,
) -> PageResult {
    let prompts = state.prompts.list(session.user.id).await?;
    let jobs = state
        .jobs
        .list(session.user.id)
        .await?
        .into_iter()
        .filter(|job| job.owner_id == Some(session.user.id))
        .filter_map(|job| {
            let text = job.prompt?;
            let (shown, cut) = crate::text::prefix(&text, 300);
            Some(JobText { job_id: job.id, name: job.name, text: shown.to_owned(), cut })
        })
        .collect();
    let page = PromptsPage {
        layout: Layout::signed_in("Prompts", "prompts", session),
        prompts,
        jobs,
        form,
        endpoints: endpoints(state),
        notice,
    };
    Ok((status, page).into_response())
}

fn endpoints(state: &AppState) -> Vec<String> {
    state.config.current().map(|s| s.config.service.endpoints.keys().cloned().collect()).unwrap_or_default()
}

/// `POST /prompts`: one of the caller's prompts from the form; the form again, kept, with
/// the reason when refused.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    Form(fields): Form<Vec<(String, String)>>,
) -> PageResult {
    let form = PromptForm::from_fields(fields, None);
    match state.prompts.create_personal(session.user.id, form.name.trim(), form.prompt(None)).await {
        Ok(_) => Ok(see_other("/prompts?notice=prompt_created")),
        Err(PromptError::Db(e)) => Err(e.into()),
        Err(e) => render_page(&state, &session, StatusCode::UNPROCESSABLE_ENTITY, form.refused(&e), None).await,
    }
}

/// `GET /prompts/{name}/edit`: the form for one of the caller's prompts.
pub async fn edit(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    Path(name): Path<String>,
) -> PageResult {
    let info = state.prompts.personal(session.user.id, &name).await?;
    let page = EditPage {
        layout: Layout::signed_in(&format!("Edit {}", info.title), "prompts", &session),
        form: PromptForm::of(&info),
        endpoints: endpoints(&state),
    };
    Ok(page.into_response())
}

/// `POST /prompts/{name}`: the edited prompt; the form again with the reason when refused.
pub async fn update(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    Path(name): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> PageResult {
    let current = state.prompts.personal(session.user.id, &name).await?;
    let form = PromptForm::from_fields(fields, Some(name.clone()));
    match state.prompts.update_personal(session.user.id, &name, form.prompt(current.tools)).await {
        Ok(_) => Ok(see_other("/prompts?notice=prompt_updated")),
        Err(PromptError::Db(e)) => Err(e.into()),
        Err(e) => {
            let page = EditPage {
                layout: Layout::signed_in(&format!("Edit {}", current.title), "prompts", &session),
                form: form.refused(&e),
                endpoints: endpoints(&state),
            };
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
    }
}

/// `POST /prompts/{name}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(session): CurrentUser,
    Path(name): Path<String>,
) -> PageResult {
    state.prompts.delete_personal(session.user.id, &name).await?;
    Ok(see_other("/prompts?notice=prompt_deleted"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_reads_its_variable_rows_in_order_and_skips_empty_ones() {
        let fields = [
            ("name", "weekly"),
            ("title", "Weekly"),
            ("template", "Hi {{who}}\r\n{{when}}"),
            ("var.1.name", "when"),
            ("var.1.default", "today"),
            ("var.0.name", " who "),
            ("var.0.required", "on"),
            ("var.2.name", ""),
            ("var.999.name", "ignored"),
        ];
        let form = PromptForm::from_fields(fields.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(), None);
        let prompt = form.prompt(None);
        assert_eq!(prompt.template, "Hi {{who}}\n{{when}}");
        let names: Vec<(&str, bool, Option<&str>)> =
            prompt.variables.iter().map(|v| (v.name.as_str(), v.required, v.default.as_deref())).collect();
        assert_eq!(names, [("who", true, None), ("when", false, Some("today"))]);
        assert!(crate::prompts::validate(&prompt, None).is_empty());
    }
}
