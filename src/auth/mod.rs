//! Accounts and their security: users and passwords, sessions, login throttling, the
//! encryption keyring and the token vault. Knows nothing of HTTP: `web` adapts it.

pub mod keys;
pub mod model;
pub mod password;
pub mod session;
pub mod throttle;
pub mod users;
pub mod vault;

use std::time::Duration;

use secrecy::SecretString;

use crate::audit::{Actor, AuditLog, Event, Outcome};
use model::{Role, Username};
use session::{Authenticated, SessionService};
use throttle::LoginThrottle;
use users::{UserError, UserService};

/// Why a login did not start a session.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("wrong user name or password")]
    Invalid,
    /// Longer than any user name can be: refused before it is stored or counted anywhere.
    #[error("a user name is at most {} characters", crate::auth::model::Username::MAX_CHARS)]
    NameTooLong,
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
}

impl AuthService {
    /// Returns the session cookie value and the new session.
    pub async fn login(
        &self,
        username: &str,
        password: &SecretString,
        client_addr: &str,
    ) -> Result<(String, Authenticated), LoginError> {
        if username.chars().count() > Username::MAX_CHARS {
            return Err(LoginError::NameTooLong);
        }
        let actor = Actor { username: Some(username.to_owned()), client_addr: Some(client_addr.to_owned()) };
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
        let (cookie, session) = self.sessions.create(&user).await?;
        let actor = Actor { username: Some(user.username.clone()), ..actor };
        self.audit.record(&actor, login_event(Outcome::Success, None)).await;
        Ok((cookie, session))
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

fn login_event(outcome: Outcome, detail: Option<&str>) -> Event<'_> {
    Event { action: "login", target: None, outcome, detail }
}
