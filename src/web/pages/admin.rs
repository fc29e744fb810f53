//! Admin pages: users (add, role, disable, reset password), config status with reload
//! history, and the audit log with filters and paging.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Layout, PageResult, see_other, when};
use crate::auth::model::{Role, User, Username};
use crate::auth::session::Authenticated;
use crate::auth::users::{Issued, UserError};
use crate::db::repositories::audit::{AuditFilter, Cursor};
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::session::{AdminUser, ClientAddr};

pub async fn index(AdminUser(_): AdminUser) -> Redirect {
    Redirect::to("/admin/users")
}

#[derive(Debug, Clone)]
pub struct UserView {
    id: i64,
    username: String,
    is_admin: bool,
    disabled: bool,
    created: String,
    sso_linked: bool,
    sso_link_allowed: bool,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        Self {
            id: user.id,
            username: user.username.clone(),
            is_admin: user.role == Role::Admin,
            disabled: user.disabled,
            created: when(user.created_at),
            sso_linked: user.oidc_subject.is_some(),
            sso_link_allowed: user.sso_link_allowed,
        }
    }
}

pub struct IssuedView {
    username: String,
    password: String,
}

impl std::fmt::Debug for IssuedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedView").field("username", &self.username).finish_non_exhaustive()
    }
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "admin_users.html")]
pub struct UsersPage {
    layout: Layout,
    users: Vec<UserView>,
    notice: Option<&'static str>,
    error: Option<String>,
    issued: Option<IssuedView>,
    /// Single sign-on is configured, so linking accounts means something.
    sso: bool,
}

#[derive(Debug, Deserialize)]
pub struct NoticeQuery {
    notice: Option<String>,
}

fn notice_text(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "user_created" => Some("User added."),
        "role_changed" => Some("Role changed."),
        "user_disabled" => Some("User disabled; their sessions have ended."),
        "user_enabled" => Some("User enabled."),
        "sso_link_allowed" => Some("The next single sign-on with this name will take the account over."),
        "sso_link_withdrawn" => Some("Single sign-on may no longer take the account over."),
        _ => None,
    }
}

async fn render_users(
    state: &AppState,
    session: &Authenticated,
    status: StatusCode,
    notice: Option<&'static str>,
    error: Option<String>,
    issued: Option<Issued>,
) -> PageResult {
    let users = state.auth.users.list().await?.iter().map(UserView::from).collect();
    let issued = issued.and_then(|i| {
        Some(IssuedView { username: i.user.username, password: i.generated_password?.expose_secret().to_owned() })
    });
    let shows_secret = issued.is_some();
    let sso = state.auth_settings().oidc.is_some();
    let layout = Layout::signed_in("Users", "users", session);
    let page = UsersPage { layout, users, notice, error, issued, sso };
    let mut response = (status, page).into_response();
    if shows_secret {
        response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    }
    Ok(response)
}

pub async fn users(
    State(state): State<AppState>,
    AdminUser(session): AdminUser,
    Query(query): Query<NoticeQuery>,
) -> PageResult {
    render_users(&state, &session, StatusCode::OK, notice_text(query.notice.as_deref()), None, None).await
}

#[derive(Debug, Deserialize)]
pub struct NewUserForm {
    username: String,
    role: String,
    #[serde(default)]
    password: Option<SecretString>,
}

pub async fn create_user(
    State(state): State<AppState>,
    AdminUser(session): AdminUser,
    client: ClientAddr,
    Form(form): Form<NewUserForm>,
) -> PageResult {
    let invalid =
        |message: String| render_users(&state, &session, StatusCode::UNPROCESSABLE_ENTITY, None, Some(message), None);
    let username = match Username::parse(&form.username) {
        Ok(name) => name,
        Err(message) => return invalid(message).await,
    };
    let role: Role = match form.role.parse() {
        Ok(role) => role,
        Err(message) => return invalid(message).await,
    };
    let password = form.password.filter(|p| !p.expose_secret().is_empty());
    match state.auth.users.create(&username, password, role, &client.actor(&session)).await {
        Ok(issued) if issued.generated_password.is_some() => {
            render_users(&state, &session, StatusCode::OK, Some("User added."), None, Some(issued)).await
        }
        Ok(_) => Ok(see_other("/admin/users?notice=user_created")),
        Err(e @ (UserError::Exists | UserError::Invalid(_))) => {
            let status =
                if matches!(e, UserError::Exists) { StatusCode::CONFLICT } else { StatusCode::UNPROCESSABLE_ENTITY };
            render_users(&state, &session, status, None, Some(e.to_string()), None).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct RoleForm {
    role: String,
}

pub async fn set_role(
    State(state): State<AppState>,
    AdminUser(session): AdminUser,
    client: ClientAddr,
    Path(id): Path<i64>,
    Form(form): Form<RoleForm>,
) -> PageResult {
    let role: Role = form.role.parse().map_err(ApiError::Unprocessable)?;
    let result = state.auth.users.set_role(id, role, &client.actor(&session)).await;
    admin_action(&state, &session, result.map(|_| "role_changed")).await
}

pub async fn disable(
    State(state): State<AppState>,
    AdminUser(session): AdminUser,
    client: ClientAddr,
    Path(id): Path<i64>,
) -> PageResult {
    let result = state.auth.users.set_disabled(id, true, &client.actor(&session)).await;
    admin_action(&state, &session, result.map(|_| "user_disabled")).await
}

pub async fn enable(
    State(state): State<AppState>,
    AdminUser(session): AdminUser,
    client: ClientAddr,
    Path(id): Path<i64>,
) -> PageResult {
    let result = state.auth.users.set_disabled(id, false, &client.actor(&session)).await;
    admin_action(&state, &session, result.map(|_| "user_enabled")).await
}

#[derive(Debug, Deserialize)]
pub struct SsoLinkForm {
    allowed: bool,
}

pub async fn allow_sso_link(
    State(state): State<AppState>,
    AdminUser(session): AdminUser,
    client: ClientAddr,
    Path(id): Path<i64>,
    Form(form): Form<SsoLinkForm>,
) -> PageResult {
    let result = state.auth.users.allow_sso_link(id, form.allowed, &client.actor(&session)).await;
    let notice = if form.allowed { "sso_link_allowed" } else { "sso_link_withdrawn" };
    admin_action(&state, &session, result.map(|_| notice)).await
}

pub async fn reset_password(
    State(state): State<AppState>,
    AdminUser(session): AdminUser,
    client: ClientAddr,
    Path(id): Path<i64>,
) -> PageResult {
    let issued = state.auth.users.reset_password(id, &client.actor(&session)).await?;
    render_users(
        &state,
        &session,
        StatusCode::OK,
        Some("Password reset; their sessions have ended."),
        None,
        Some(issued),
    )
    .await
}

async fn admin_action(state: &AppState, session: &Authenticated, result: Result<&str, UserError>) -> PageResult {
    match result {
        Ok(notice) => Ok(see_other(&format!("/admin/users?notice={notice}"))),
        Err(e @ UserError::LastAdmin) => {
            render_users(state, session, StatusCode::CONFLICT, None, Some(format!("Refused: {e}.")), None).await
        }
        Err(UserError::Invalid(reason)) => {
            render_users(
                state,
                session,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                Some(format!("Refused: {reason}.")),
                None,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug)]
pub struct LiveView {
    generation: u64,
    sha256: String,
    loaded_at: String,
}

#[derive(Debug)]
pub struct RejectedView {
    error: String,
    at: String,
}

#[derive(Debug)]
pub struct ReloadView {
    occurred_at: String,
    applied: bool,
    generation: String,
    sha256: String,
    sha256_short: String,
    error: String,
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "admin_config.html")]
pub struct ConfigPage {
    layout: Layout,
    dir: String,
    live: Option<LiveView>,
    rejected: Option<RejectedView>,
    history: Vec<ReloadView>,
    sso: Option<SsoView>,
    maintenance: Vec<MaintenanceView>,
}

/// A housekeeping task's row on the config page.
#[derive(Debug)]
pub struct MaintenanceView {
    name: &'static str,
    schedule: String,
    last_run: String,
    running: bool,
    outcome: String,
    took: String,
    detail: String,
}

/// The identity provider as the last look found it.
#[derive(Debug)]
pub struct SsoView {
    issuer: String,
    checked_at: String,
    error: Option<String>,
    end_session: bool,
}

pub async fn config(State(state): State<AppState>, AdminUser(session): AdminUser) -> PageResult {
    let live = state.config.current().map(|s| LiveView {
        generation: s.generation,
        sha256: s.sha256.clone(),
        loaded_at: when(s.loaded_at),
    });
    let rejected = state.config.last_rejected().map(|r| RejectedView { error: r.error, at: when(r.at) });
    let history = state
        .reloader
        .history(50)
        .await?
        .into_iter()
        .map(|r| ReloadView {
            occurred_at: when(r.occurred_at),
            applied: r.outcome == "applied",
            generation: r.generation.map(|g| g.to_string()).unwrap_or_default(),
            sha256_short: r.sha256.chars().take(12).collect(),
            sha256: r.sha256,
            error: r.error.unwrap_or_default(),
        })
        .collect();
    let page = ConfigPage {
        layout: Layout::signed_in("Configuration", "config", &session),
        dir: state.reloader.dir().display().to_string(),
        live,
        rejected,
        history,
        sso: state.sso_status().await.map(|s| SsoView {
            issuer: s.issuer,
            checked_at: when(s.checked_at),
            error: s.error,
            end_session: s.end_session_url.is_some(),
        }),
        maintenance: maintenance_views(&state).await?,
    };
    Ok(page.into_response())
}

async fn maintenance_views(state: &AppState) -> Result<Vec<MaintenanceView>, ApiError> {
    let tasks = state.maintenance.status().await.map_err(|e| ApiError::Internal(e.into()))?;
    let now = chrono::Utc::now();
    Ok(tasks
        .into_iter()
        .map(|t| {
            let row = t.row.unwrap_or_default();
            MaintenanceView {
                name: t.task.as_str(),
                schedule: t.schedule,
                last_run: row.last_started.map(when).unwrap_or_else(|| "never".into()),
                running: row.holder.is_some() && row.lease_until.is_some_and(|until| until > now),
                outcome: row.last_outcome.unwrap_or_default(),
                took: row
                    .last_duration_ms
                    .map(|ms| if ms < 1000 { format!("{ms} ms") } else { format!("{:.1} s", ms as f64 / 1000.0) })
                    .unwrap_or_default(),
                detail: row.last_detail.unwrap_or_default(),
            }
        })
        .collect())
}

/// Runs a housekeeping task from the config page, then shows the page with its outcome.
pub async fn run_maintenance(
    State(state): State<AppState>,
    AdminUser(session): AdminUser,
    client: ClientAddr,
    Path(task): Path<String>,
) -> PageResult {
    crate::web::api::admin::run_task(&state, &session, &client, &task).await?;
    Ok(see_other("/admin/config#maintenance"))
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub outcome: String,
    /// Entries older than this id (the "Older" link).
    pub before: Option<i64>,
    /// Entries newer than this id (the "Newer" link).
    pub after: Option<i64>,
}

impl AuditQuery {
    pub fn filter(&self) -> AuditFilter {
        let some = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        AuditFilter { actor: some(&self.actor), action: some(&self.action), outcome: some(&self.outcome) }
    }

    pub fn cursor(&self) -> Result<Cursor, ApiError> {
        match (self.before, self.after) {
            (None, None) => Ok(Cursor::Newest),
            (Some(id), None) => Ok(Cursor::Before(id)),
            (None, Some(id)) => Ok(Cursor::After(id)),
            (Some(_), Some(_)) => Err(ApiError::Unprocessable("give `before` or `after`, not both".into())),
        }
    }

    /// This filter at another cursor.
    fn url(&self, cursor: Cursor) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [("actor", &self.actor), ("action", &self.action), ("outcome", &self.outcome)] {
            if !value.is_empty() {
                query.append_pair(key, value);
            }
        }
        match cursor {
            Cursor::Newest => {}
            Cursor::Before(id) => {
                query.append_pair("before", &id.to_string());
            }
            Cursor::After(id) => {
                query.append_pair("after", &id.to_string());
            }
        }
        format!("/admin/audit?{}", query.finish())
    }
}

#[derive(Debug)]
pub struct AuditEntryView {
    occurred_at: String,
    actor: String,
    action: String,
    target: String,
    outcome: String,
    client_addr: String,
    detail: String,
}

#[derive(Debug)]
pub struct OutcomeOption {
    value: &'static str,
    selected: bool,
}

#[derive(Debug, Template, WebTemplate)]
#[template(path = "admin_audit.html")]
pub struct AuditPage {
    layout: Layout,
    filter: AuditQuery,
    outcome_options: Vec<OutcomeOption>,
    known_actions: &'static [&'static str],
    entries: Vec<AuditEntryView>,
    newest_url: Option<String>,
    previous_url: Option<String>,
    next_url: Option<String>,
}

/// Actions the services record, offered as suggestions in the filter.
const KNOWN_ACTIONS: &[&str] = &[
    "login",
    "logout",
    "password.change",
    "token.set",
    "token.remove",
    "user.",
    "user.create",
    "user.disable",
    "user.enable",
    "user.role",
    "user.reset_password",
    "config.reload",
    "tool.",
    "tool.approve",
    "tool.refuse",
];

pub async fn audit(
    State(state): State<AppState>,
    AdminUser(session): AdminUser,
    Query(query): Query<AuditQuery>,
) -> PageResult {
    let page = state.auth.audit.page(&query.filter(), query.cursor()?).await?;
    let entries = page
        .entries
        .into_iter()
        .map(|e| AuditEntryView {
            occurred_at: e.occurred_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            actor: e.actor.unwrap_or_else(|| "system".into()),
            action: e.action,
            target: e.target.unwrap_or_default(),
            outcome: e.outcome,
            client_addr: e.client_addr.unwrap_or_default(),
            detail: e.detail.unwrap_or_default(),
        })
        .collect();
    let outcome_options = ["success", "failure", "denied"]
        .into_iter()
        .map(|value| OutcomeOption { value, selected: query.outcome == value })
        .collect();
    let previous_url = page.newer.map(|id| query.url(Cursor::After(id)));
    let next_url = page.older.map(|id| query.url(Cursor::Before(id)));
    let newest_url = previous_url.as_ref().map(|_| query.url(Cursor::Newest));
    let page_view = AuditPage {
        layout: Layout::signed_in("Audit log", "audit", &session),
        outcome_options,
        known_actions: KNOWN_ACTIONS,
        entries,
        newest_url,
        previous_url,
        next_url,
        filter: query,
    };
    Ok(page_view.into_response())
}
