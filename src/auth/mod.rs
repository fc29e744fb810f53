//! Accounts and their security: users and passwords, sessions, login throttling, the
//! encryption keyring and the token vault. Knows nothing of HTTP: `web` adapts it.

pub mod keys;
pub mod model;
pub mod oidc;
pub mod password;
pub mod session;
pub mod throttle;
pub mod users;
pub mod vault;

use std::time::Duration;

use secrecy::SecretString;

use crate::audit::{Actor, AuditLog, Event, Outcome};
use crate::config::model::{LocalLogin, OidcSettings};
use model::{Role, Username};
use oidc::{Callback, OidcService, Refusal};
use session::{Authenticated, SessionService};
use throttle::LoginThrottle;
use url::Url;
use users::{LinkError, LinkedIdentity, UserError, UserService};

/// Why a login did not start a session.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("wrong user name or password")]
    Invalid,
    /// Longer than any user name can be: refused before it is stored or counted anywhere.
    #[error("a user name is at most {} characters", crate::auth::model::Username::MAX_CHARS)]
    NameTooLong,
    #[error("local sign-in is turned off; use single sign-on")]
    LocalOff,
    #[error("local sign-in is for administrators only; use single sign-on")]
    AdminOnly,
    #[error("too many failed attempts; try again in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    #[error(transparent)]
    Users(#[from] UserError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The login flow: throttle, verify, start a session, audit every attempt.
#[derive(Debug)]
pub struct AuthService {
    pub users: UserService,
    pub sessions: SessionService,
    pub throttle: LoginThrottle,
    pub audit: AuditLog,
    pub oidc: OidcService,
}

/// A single sign-on that started a session.
#[derive(Debug)]
pub struct SsoSignIn {
    pub cookie: String,
    pub session: Authenticated,
    /// Where the person wanted to go.
    pub next: String,
}

impl AuthService {
    /// Returns the session cookie value and the new session. `local` says who may sign in
    /// with a password at all (config `auth.local`).
    pub async fn login(
        &self,
        username: &str,
        password: &SecretString,
        client_addr: &str,
        local: LocalLogin,
    ) -> Result<(String, Authenticated), LoginError> {
        if username.chars().count() > Username::MAX_CHARS {
            return Err(LoginError::NameTooLong);
        }
        let actor = Actor { username: Some(username.to_owned()), client_addr: Some(client_addr.to_owned()) };
        if local == LocalLogin::Off {
            self.audit.record(&actor, login_event(Outcome::Denied, Some("local sign-in is off"))).await;
            return Err(LoginError::LocalOff);
        }
        if let Err(wait) = self.throttle.check(username, client_addr) {
            self.audit.record(&actor, login_event(Outcome::Denied, Some("throttled"))).await;
            return Err(LoginError::Throttled(wait));
        }
        let Some(user) = self.users.verify_login(username, password).await? else {
            self.throttle.record_failure(username, client_addr);
            self.audit.record(&actor, login_event(Outcome::Failure, None)).await;
            return Err(LoginError::Invalid);
        };
        self.throttle.record_success(username);
        if !local.allows(user.role) {
            self.audit.record(&actor, login_event(Outcome::Denied, Some("local sign-in is for admins only"))).await;
            return Err(LoginError::AdminOnly);
        }
        let (cookie, session) = self.sessions.create(&user).await?;
        let actor = Actor { username: Some(user.username.clone()), ..actor };
        self.audit.record(&actor, login_event(Outcome::Success, None)).await;
        Ok((cookie, session))
    }

    /// Finishes a single sign-on from the provider's redirect: the answer checked, the
    /// group rules applied, the account found, linked or created, a session started.
    /// Every outcome is audited (`login.sso`), refusals with their reason.
    pub async fn sign_in_sso(
        &self,
        settings: &OidcSettings,
        redirect: &Url,
        callback: &Callback,
        binding: Option<&str>,
        client_addr: &str,
    ) -> Result<SsoSignIn, Refusal> {
        let mut actor = Actor { username: None, client_addr: Some(client_addr.to_owned()) };
        let result = self.sso_account(settings, redirect, callback, binding, &mut actor).await;
        let (user, next) = match result {
            Ok(found) => found,
            Err(refusal) => {
                let outcome = if refusal.is_outage() { Outcome::Failure } else { Outcome::Denied };
                let detail: String = format!("{}: {refusal}", refusal.code()).chars().take(300).collect();
                self.audit.record(&actor, sso_event(outcome, Some(&detail))).await;
                return Err(refusal);
            }
        };
        let (cookie, session) = self.sessions.create(&user).await?;
        self.audit.record(&actor, sso_event(Outcome::Success, Some(user.role.as_str()))).await;
        Ok(SsoSignIn { cookie, session, next })
    }

    async fn sso_account(
        &self,
        settings: &OidcSettings,
        redirect: &Url,
        callback: &Callback,
        binding: Option<&str>,
        actor: &mut Actor,
    ) -> Result<(model::User, String), Refusal> {
        let identity = self.oidc.finish(settings, redirect, callback, binding).await?;
        let shown: String = identity.username.chars().take(Username::MAX_CHARS).collect();
        actor.username = Some(shown.clone());
        let admin = oidc::decide(settings, &identity.groups)?;
        let username = Username::parse(&identity.username).map_err(|_| Refusal::InvalidUsername(shown))?;
        let person = LinkedIdentity {
            issuer: &identity.issuer,
            subject: &identity.subject,
            username: &username,
            admin,
            link_by_username: settings.link_by_username,
        };
        let user = self.users.sign_in_linked(&person).await.map_err(|e| match e {
            LinkError::NameTaken(_) => Refusal::Account(e.to_string()),
            LinkError::Disabled => Refusal::Disabled,
            LinkError::Db(e) => Refusal::Db(e),
            LinkError::Users(e) => Refusal::Internal(e.to_string()),
        })?;
        actor.username = Some(user.username.clone());
        Ok((user, identity.next))
    }

    pub async fn logout(&self, session: &Authenticated, actor: &Actor) -> Result<(), sqlx::Error> {
        self.sessions.revoke(&session.session_id).await?;
        self.audit
            .record(actor, Event { action: "logout", target: None, outcome: Outcome::Success, detail: None })
            .await;
        Ok(())
    }

    /// On a database without users, creates `admin` with the given password or a generated
    /// one. Returns the generated password, which the caller prints once.
    pub async fn bootstrap_admin(&self, password: Option<SecretString>) -> Result<Option<SecretString>, UserError> {
        if self.users.count().await? > 0 {
            return Ok(None);
        }
        let username = Username::parse("admin").map_err(UserError::Invalid)?;
        let issued = self.users.create(&username, password, Role::Admin, &Actor::system()).await?;
        Ok(issued.generated_password)
    }
}

fn sso_event(outcome: Outcome, detail: Option<&str>) -> Event<'_> {
    Event { action: "login.sso", target: None, outcome, detail }
}

fn login_event(outcome: Outcome, detail: Option<&str>) -> Event<'_> {
    Event { action: "login", target: None, outcome, detail }
}
