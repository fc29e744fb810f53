//! The account service: creating users, checking passwords, and the admin actions.
//! Every change is audited, and changes that must end sessions end them here.

use chrono::Utc;
use secrecy::SecretString;
use sqlx::SqlitePool;
use tokio::sync::OnceCell;

use super::model::{Role, User, Username, check_new_password};
use super::password;
use crate::audit::{Actor, AuditLog, Event, Outcome};
use crate::db::repositories::{sessions, users};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Invalid(String),
    #[error("a user with this name already exists")]
    Exists,
    #[error("no such user")]
    NotFound,
    #[error("at least one active admin must remain")]
    LastAdmin,
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("this account signs in with single sign-on and has no password here")]
    NoPassword,
    #[error(transparent)]
    Hash(#[from] password::HashError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A person as the identity provider vouches for them.
#[derive(Debug)]
pub struct LinkedIdentity<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub username: &'a Username,
    /// Whether they are in an admin group; `None` when groups do not decide roles.
    pub admin: Option<bool>,
    /// A local account of the same name may be taken over without an admin's allowance.
    pub link_by_username: bool,
}

/// Why a signed-in identity gets no account.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "an account named {0:?} already exists here; an administrator must allow it to sign in with single sign-on"
    )]
    NameTaken(String),
    #[error("this account is disabled")]
    Disabled,
    #[error(transparent)]
    Users(#[from] UserError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What a new or reset account's creator gets to see once.
#[derive(Debug)]
pub struct Issued {
    pub user: User,
    /// Set when the password was generated rather than given.
    pub generated_password: Option<SecretString>,
}

#[derive(Debug)]
pub struct UserService {
    db: SqlitePool,
    audit: AuditLog,
    bcrypt_cost: u32,
    /// Verified against when a login names no existing user, so timing tells nothing.
    /// Made on first need: hashing at the configured cost would slow every start.
    dummy_hash: OnceCell<String>,
}

impl UserService {
    pub fn new(db: SqlitePool, audit: AuditLog, bcrypt_cost: u32) -> Self {
        Self { db, audit, bcrypt_cost, dummy_hash: OnceCell::new() }
    }

    pub async fn count(&self) -> Result<i64, UserError> {
        Ok(users::count(&mut *self.db.acquire().await?).await?)
    }

    pub async fn list(&self) -> Result<Vec<User>, UserError> {
        Ok(users::list(&mut *self.db.acquire().await?).await?)
    }

    pub async fn get(&self, id: i64) -> Result<User, UserError> {
        users::by_id(&mut *self.db.acquire().await?, id).await?.ok_or(UserError::NotFound)
    }

    pub async fn by_name(&self, name: &str) -> Result<User, UserError> {
        users::by_username(&mut *self.db.acquire().await?, name).await?.ok_or(UserError::NotFound)
    }

    /// Creates a user; without a password one is generated and returned once.
    pub async fn create(
        &self,
        username: &Username,
        password: Option<SecretString>,
        role: Role,
        actor: &Actor,
    ) -> Result<Issued, UserError> {
        let (password, generated) = match password {
            Some(p) => {
                check_new_password(secrecy::ExposeSecret::expose_secret(&p)).map_err(UserError::Invalid)?;
                (p, false)
            }
            None => (password::generate(), true),
        };
        let hash = password::hash(&password, self.bcrypt_cost).await?;
        let mut conn = self.db.acquire().await?;
        let id = match users::insert(&mut conn, username.as_str(), &hash, role, Utc::now()).await {
            Ok(id) => id,
            Err(e) if is_unique_violation(&e) => return Err(UserError::Exists),
            Err(e) => return Err(e.into()),
        };
        let user = users::by_id(&mut conn, id).await?.ok_or(UserError::NotFound)?;
        drop(conn);
        self.audit
            .record(
                actor,
                Event {
                    action: "user.create",
                    target: Some(username.as_str()),
                    outcome: Outcome::Success,
                    detail: Some(role.as_str()),
                },
            )
            .await;
        Ok(Issued { user, generated_password: generated.then_some(password) })
    }

    /// Checks a login. `None` for an unknown user, a wrong password or a disabled account
    /// alike; the caller learns nothing more and neither does the person trying.
    pub async fn verify_login(&self, username: &str, password: &SecretString) -> Result<Option<User>, UserError> {
        let user = users::by_username(&mut *self.db.acquire().await?, username).await?;
        let hash = match &user {
            Some(u) => u.password_hash.as_str(),
            None => self
                .dummy_hash
                .get_or_try_init(|| {
                    let cost = self.bcrypt_cost;
                    async move { password::hash(&password::generate(), cost).await }
                })
                .await?
                .as_str(),
        };
        let matched = password::verify(password, hash).await;
        Ok(user.filter(|u| matched && !u.disabled))
    }

    /// A user changes their own password; their other sessions end.
    pub async fn change_own_password(
        &self,
        user: &User,
        current: &SecretString,
        new: &SecretString,
        keep_session: &str,
        actor: &Actor,
    ) -> Result<(), UserError> {
        if !user.has_password() {
            return Err(UserError::NoPassword);
        }
        if !password::verify(current, &user.password_hash).await {
            self.audit.record(actor, event("password.change", &user.username, Outcome::Failure)).await;
            return Err(UserError::WrongPassword);
        }
        check_new_password(secrecy::ExposeSecret::expose_secret(new)).map_err(UserError::Invalid)?;
        self.replace_password(user.id, new, Some(keep_session)).await?;
        self.audit.record(actor, event("password.change", &user.username, Outcome::Success)).await;
        Ok(())
    }

    /// An admin resets someone's password to a generated one; all their sessions end.
    pub async fn reset_password(&self, id: i64, actor: &Actor) -> Result<Issued, UserError> {
        let user = self.get(id).await?;
        let password = password::generate();
        self.replace_password(id, &password, None).await?;
        self.audit.record(actor, event("user.reset_password", &user.username, Outcome::Success)).await;
        Ok(Issued { user, generated_password: Some(password) })
    }

    pub async fn set_role(&self, id: i64, role: Role, actor: &Actor) -> Result<User, UserError> {
        let mut tx = crate::db::write(&self.db).await?;
        let user = users::by_id(&mut tx, id).await?.ok_or(UserError::NotFound)?;
        users::set_role(&mut tx, id, role).await?;
        if users::count_active_admins(&mut tx).await? == 0 {
            return Err(UserError::LastAdmin);
        }
        tx.commit().await?;
        self.audit
            .record(
                actor,
                Event {
                    action: "user.role",
                    target: Some(&user.username),
                    outcome: Outcome::Success,
                    detail: Some(role.as_str()),
                },
            )
            .await;
        self.get(id).await
    }

    /// Disabling ends every session of the user at once.
    pub async fn set_disabled(&self, id: i64, disabled: bool, actor: &Actor) -> Result<User, UserError> {
        let mut tx = crate::db::write(&self.db).await?;
        let user = users::by_id(&mut tx, id).await?.ok_or(UserError::NotFound)?;
        users::set_disabled(&mut tx, id, disabled).await?;
        if users::count_active_admins(&mut tx).await? == 0 {
            return Err(UserError::LastAdmin);
        }
        if disabled {
            sessions::revoke_for_user(&mut tx, id, None, Utc::now()).await?;
        }
        tx.commit().await?;
        let action = if disabled { "user.disable" } else { "user.enable" };
        self.audit.record(actor, event(action, &user.username, Outcome::Success)).await;
        self.get(id).await
    }

    /// An admin allows (or no longer allows) the next single sign-on of this account's
    /// name to take the account over.
    pub async fn allow_sso_link(&self, id: i64, allowed: bool, actor: &Actor) -> Result<User, UserError> {
        let user = self.get(id).await?;
        if allowed && user.oidc_subject.is_some() {
            return Err(UserError::Invalid("this account is already linked to a single sign-on identity".into()));
        }
        users::set_sso_link_allowed(&mut *self.db.acquire().await?, id, allowed).await?;
        let detail = if allowed { "allowed" } else { "withdrawn" };
        self.audit
            .record(
                actor,
                Event {
                    action: "user.sso_link",
                    target: Some(&user.username),
                    outcome: Outcome::Success,
                    detail: Some(detail),
                },
            )
            .await;
        self.get(id).await
    }

    /// The account for a person the identity provider signed in: the one linked to their
    /// identity, else a local one of the same name when linking is allowed, else a new
    /// one. `admin` (when groups decide roles) sets the role, audited when it changes;
    /// the last active admin keeps the role.
    pub async fn sign_in_linked(&self, person: &LinkedIdentity<'_>) -> Result<User, LinkError> {
        let mut tx = crate::db::write(&self.db).await?;
        let now = Utc::now();
        let (mut user, created) = match users::by_identity(&mut tx, person.issuer, person.subject).await? {
            Some(user) => (user, false),
            None => match users::by_username(&mut tx, person.username.as_str()).await? {
                Some(local) if local.oidc_subject.is_none() && (person.link_by_username || local.sso_link_allowed) => {
                    users::link(&mut tx, local.id, person.issuer, person.subject).await?;
                    (local, false)
                }
                Some(_) => return Err(LinkError::NameTaken(person.username.as_str().to_owned())),
                None => {
                    let role = if person.admin == Some(true) { Role::Admin } else { Role::User };
                    let id = users::insert_linked(
                        &mut tx,
                        person.username.as_str(),
                        role,
                        person.issuer,
                        person.subject,
                        now,
                    )
                    .await?;
                    (users::by_id(&mut tx, id).await?.ok_or(UserError::NotFound)?, true)
                }
            },
        };
        if user.disabled {
            return Err(LinkError::Disabled);
        }
        let wanted = person.admin.map(|admin| if admin { Role::Admin } else { Role::User });
        let mut kept_last_admin = false;
        let changed = match wanted {
            Some(role) if role != user.role && !created => {
                users::set_role(&mut tx, user.id, role).await?;
                if users::count_active_admins(&mut tx).await? == 0 {
                    users::set_role(&mut tx, user.id, user.role).await?;
                    kept_last_admin = true;
                    None
                } else {
                    user.role = role;
                    Some(role)
                }
            }
            _ => None,
        };
        tx.commit().await?;
        let system = Actor { username: Some(user.username.clone()), client_addr: None };
        if created {
            let detail = Some(user.role.as_str());
            self.audit
                .record(
                    &system,
                    Event { action: "user.create", target: Some(&user.username), outcome: Outcome::Success, detail },
                )
                .await;
        }
        let role_event = match (changed, kept_last_admin) {
            (Some(role), _) => Some((Outcome::Success, format!("{role} (groups at sign-in)"))),
            (None, true) => {
                Some((Outcome::Denied, "left the admin groups but is the last active admin; stays admin".to_owned()))
            }
            (None, false) => None,
        };
        if let Some((outcome, detail)) = role_event {
            self.audit
                .record(
                    &system,
                    Event { action: "user.role", target: Some(&user.username), outcome, detail: Some(&detail) },
                )
                .await;
        }
        Ok(users::by_id(&mut *self.db.acquire().await?, user.id).await?.ok_or(UserError::NotFound)?)
    }

    async fn replace_password(
        &self,
        id: i64,
        password: &SecretString,
        keep_session: Option<&str>,
    ) -> Result<(), UserError> {
        let hash = password::hash(password, self.bcrypt_cost).await?;
        let now = Utc::now();
        let mut tx = crate::db::write(&self.db).await?;
        users::set_password(&mut tx, id, &hash, now).await?;
        sessions::revoke_for_user(&mut tx, id, keep_session, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn event<'a>(action: &'a str, target: &'a str, outcome: Outcome) -> Event<'a> {
    Event { action, target: Some(target), outcome, detail: None }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
