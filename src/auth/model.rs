//! Plain types of accounts and credentials, validated at the edge.
//! No storage, no HTTP: repositories and handlers both use these.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a user may do: admins also manage users and see config and audit pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "user" => Ok(Self::User),
            other => Err(format!("unknown role {other:?}: use admin or user")),
        }
    }
}

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub username: String,
    /// bcrypt hash; never leaves the server.
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub password_changed_at: DateTime<Utc>,
    /// The single sign-on identity this account is linked to, if any.
    pub oidc_subject: Option<String>,
    /// An admin allowed the next single sign-on of this name to take the account over.
    pub sso_link_allowed: bool,
}

impl User {
    /// Whether the account can sign in with a local password at all (single sign-on
    /// accounts created at sign-in have none).
    pub fn has_password(&self) -> bool {
        !self.password_hash.is_empty()
    }
}

/// A validated user name: 2–64 characters of letters, digits and `.`, `_`, `-`, `@`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// The longest a user name can be.
    pub const MAX_CHARS: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        let valid_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
        if !(2..=Self::MAX_CHARS).contains(&name.len()) || !valid_chars {
            return Err("a user name is 2 to 64 characters: letters, digits, '.', '_', '-' or '@'".into());
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Shortest password a person may choose.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Checks a chosen password (generated ones are always longer).
pub fn check_new_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(format!("a password needs at least {MIN_PASSWORD_LEN} characters"));
    }
    if password.len() > 72 {
        // bcrypt ignores everything after 72 bytes.
        return Err("a password may have at most 72 bytes".into());
    }
    Ok(())
}

/// The services a user can store a personal access token for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum Service {
    Jira,
    Confluence,
}

impl Service {
    pub const ALL: [Service; 2] = [Self::Jira, Self::Confluence];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jira => "jira",
            Self::Confluence => "confluence",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::Jira => "Jira",
            Self::Confluence => "Confluence",
        }
    }
}

impl FromStr for Service {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jira" => Ok(Self::Jira),
            "confluence" => Ok(Self::Confluence),
            other => Err(format!("unknown service {other:?}: use jira or confluence")),
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
