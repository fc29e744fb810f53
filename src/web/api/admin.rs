//! `/api/v1/admin/…`: config status and history, users, audit log. Admins only.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::audit::{self, AuditPage, Outcome};
use crate::auth::model::{Role, User, Username};
use crate::auth::oidc::ProviderStatus;
use crate::db::repositories::config_reloads::ConfigReload;
use crate::db::repositories::maintenance::TaskRow;
use crate::maintenance::{MaintenanceError, Ran, Task};
use crate::web::AppState;
use crate::web::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::web::pages::admin::AuditQuery;
use crate::web::session::{AdminUser, ClientAddr};

#[derive(Debug, Serialize)]
pub struct ConfigStatus {
    generation: Option<u64>,
    sha256: Option<String>,
    loaded_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    /// The identity provider's state when single sign-on is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    sso: Option<ProviderStatus>,
}

pub async fn config(State(state): State<AppState>, AdminUser(_): AdminUser) -> ApiJson<ConfigStatus> {
    let live = state.config.current();
    ApiJson(ConfigStatus {
        generation: live.as_ref().map(|s| s.generation),
        sha256: live.as_ref().map(|s| s.sha256.clone()),
        loaded_at: live.as_ref().map(|s| s.loaded_at),
        last_error: state.config.last_rejected().map(|r| r.error),
        sso: state.sso_status().await,
    })
}

#[derive(Debug, Serialize)]
pub struct ReloadEntry {
    generation: Option<i64>,
    sha256: String,
    outcome: String,
    error: Option<String>,
    occurred_at: DateTime<Utc>,
}

impl From<ConfigReload> for ReloadEntry {
    fn from(r: ConfigReload) -> Self {
        Self {
            generation: r.generation,
            sha256: r.sha256,
            outcome: r.outcome,
            error: r.error,
            occurred_at: r.occurred_at,
        }
    }
}

pub async fn reloads(
    State(state): State<AppState>,
    AdminUser(_): AdminUser,
) -> Result<ApiJson<Vec<ReloadEntry>>, ApiError> {
    Ok(ApiJson(state.reloader.history(100).await?.into_iter().map(ReloadEntry::from).collect()))
}

#[derive(Debug, Serialize)]
pub struct UserEntry {
    id: i64,
    username: String,
    role: Role,
    disabled: bool,
    created_at: DateTime<Utc>,
    /// Linked to a single sign-on identity.
    sso_linked: bool,
    /// An admin allowed the next single sign-on of this name to take the account over.
    sso_link_allowed: bool,
}

impl From<User> for UserEntry {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            sso_linked: u.oidc_subject.is_some(),
            sso_link_allowed: u.sso_link_allowed,
            username: u.username,
            role: u.role,
            disabled: u.disabled,
            created_at: u.created_at,
        }
    }
}

pub async fn users(
    State(state): State<AppState>,
    AdminUser(_): AdminUser,
) -> Result<ApiJson<Vec<UserEntry>>, ApiError> {
    Ok(ApiJson(state.auth.users.list().await?.into_iter().map(UserEntry::from).collect()))
}

pub async fn user(
    State(state): State<AppState>,
    AdminUser(_): AdminUser,
    ApiPath(id): ApiPath<i64>,
) -> Result<ApiJson<UserEntry>, ApiError> {
    Ok(ApiJson(state.auth.users.get(id).await?.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    #[serde(default = "default_role")]
    role: Role,
    password: Option<SecretString>,
}

fn default_role() -> Role {
    Role::User
}

#[derive(Serialize)]
pub struct IssuedUser {
    user: UserEntry,
    /// Present when the password was generated: shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

pub async fn create_user(
    State(state): State<AppState>,
    AdminUser(session): AdminUser,
    client: ClientAddr,
    ApiJson(request): ApiJson<NewUser>,
) -> Result<(StatusCode, ApiJson<IssuedUser>), ApiError> {
    let username = Username::parse(&request.username).map_err(ApiError::Unprocessable)?;
    let issued = state.auth.users.create(&username, request.password, request.role, &client.actor(&session)).await?;
    let password = issued.generated_password.map(|p| p.expose_secret().to_owned());
    Ok((StatusCode::CREATED, ApiJson(IssuedUser { user: issued.user.into(), password })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    role: Option<Role>,
    disabled: Option<bool>,
    sso_link_allowed: Option<bool>,
}

pub async fn update_user(
    State(state): State<AppState>,
    AdminUser(session): AdminUser,
    client: ClientAddr,
    ApiPath(id): ApiPath<i64>,
    ApiJson(update): ApiJson<UserUpdate>,
) -> Result<ApiJson<UserEntry>, ApiError> {
    let actor = client.actor(&session);
    let mut user = state.auth.users.get(id).await?;
    if let Some(role) = update.role.filter(|r| *r != user.role) {
        user = state.auth.users.set_role(id, role, &actor).await?;
    }
    if let Some(disabled) = update.disabled.filter(|d| *d != user.disabled) {
        user = state.auth.users.set_disabled(id, disabled, &actor).await?;
    }
    if let Some(allowed) = update.sso_link_allowed.filter(|a| *a != user.sso_link_allowed) {
        user = state.auth.users.allow_sso_link(id, allowed, &actor).await?;
    }
    Ok(ApiJson(user.into()))
}

#[derive(Serialize)]
pub struct NewPassword {
    password: String,
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPassword").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for IssuedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedUser").field("user", &self.user).finish_non_exhaustive()
    }
}

pub async fn reset_password(
    State(state): State<AppState>,
    AdminUser(session): AdminUser,
    client: ClientAddr,
    ApiPath(id): ApiPath<i64>,
) -> Result<ApiJson<NewPassword>, ApiError> {
    let issued = state.auth.users.reset_password(id, &client.actor(&session)).await?;
    let password = issued.generated_password.map(|p| p.expose_secret().to_owned()).unwrap_or_default();
    Ok(ApiJson(NewPassword { password }))
}

/// `GET /api/v1/admin/audit?before=ID | after=ID`: a page of the log, newest first, with
/// the cursors of the older and newer pages (keyset paging: any depth costs the same).
pub async fn audit(
    State(state): State<AppState>,
    AdminUser(_): AdminUser,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<ApiJson<AuditPage>, ApiError> {
    Ok(ApiJson(state.auth.audit.page(&query.filter(), query.cursor()?).await?))
}

/// A housekeeping task: its schedule and its last run.
#[derive(Debug, Serialize)]
pub struct MaintenanceTask {
    task: &'static str,
    /// Five-field cron (UTC); empty when it runs only on demand.
    schedule: String,
    /// The replica running it now, if one is.
    running_on: Option<String>,
    last_started: Option<DateTime<Utc>>,
    last_finished: Option<DateTime<Utc>>,
    last_outcome: Option<String>,
    last_duration_ms: Option<i64>,
    last_detail: Option<String>,
}

/// `GET /api/v1/admin/maintenance`: every housekeeping task.
pub async fn maintenance(
    State(state): State<AppState>,
    AdminUser(_): AdminUser,
) -> Result<ApiJson<Vec<MaintenanceTask>>, ApiError> {
    let tasks = state.maintenance.status().await.map_err(maintenance_error)?;
    Ok(ApiJson(
        tasks
            .into_iter()
            .map(|t| {
                let row = t.row.unwrap_or_else(|| TaskRow { task: t.task.as_str().into(), ..TaskRow::default() });
                MaintenanceTask {
                    task: t.task.as_str(),
                    schedule: t.schedule,
                    running_on: row.holder.filter(|_| row.lease_until.is_some_and(|until| until > Utc::now())),
                    last_started: row.last_started,
                    last_finished: row.last_finished,
                    last_outcome: row.last_outcome,
                    last_duration_ms: row.last_duration_ms,
                    last_detail: row.last_detail,
                }
            })
            .collect(),
    ))
}

/// How a run asked for by an admin went.
#[derive(Debug, Serialize)]
pub struct MaintenanceRun {
    outcome: &'static str,
    detail: String,
}

/// `POST /api/v1/admin/maintenance/{task}`: runs a task now and answers how it went
/// (409 while another replica runs it).
pub async fn run_maintenance(
    State(state): State<AppState>,
    AdminUser(session): AdminUser,
    client: ClientAddr,
    ApiPath(task): ApiPath<String>,
) -> Result<ApiJson<MaintenanceRun>, ApiError> {
    let ran = run_task(&state, &session, &client, &task).await?;
    Ok(ApiJson(MaintenanceRun { outcome: if ran.succeeded { "succeeded" } else { "failed" }, detail: ran.detail }))
}

/// Runs the task named `task` for an admin, audited; shared with the config page.
pub async fn run_task(
    state: &AppState,
    session: &crate::auth::session::Authenticated,
    client: &ClientAddr,
    task: &str,
) -> Result<Ran, ApiError> {
    let task = Task::parse(task).ok_or(ApiError::NotFound("no such maintenance task"))?;
    let ran = state.maintenance.run(task).await.map_err(maintenance_error)?;
    let outcome = if ran.succeeded { Outcome::Success } else { Outcome::Failure };
    let event =
        audit::Event { action: "maintenance.run", target: Some(task.as_str()), outcome, detail: Some(&ran.detail) };
    state.auth.audit.record(&client.actor(session), event).await;
    Ok(ran)
}

fn maintenance_error(e: MaintenanceError) -> ApiError {
    match e {
        MaintenanceError::Busy(_) => ApiError::Conflict(e.to_string()),
        MaintenanceError::NoConfig => ApiError::Unavailable(e.to_string()),
        other => ApiError::Internal(other.into()),
    }
}
