//! Sessions: a signed JWT (subject, role, expiry, unique id) sealed with AES-256-GCM into
//! the cookie value, and a server-side row that logout, disabling and password changes
//! revoke. The cookie alone is never enough: its row must be live and its user enabled.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;

use super::keys::{Keyring, Purpose, Sealed};
use super::model::User;
use crate::db::repositories::sessions;

const COOKIE_AAD: &[u8] = b"promptops:session-cookie";

/// What a session cookie says, once opened and verified.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    sub: String,
    name: String,
    role: String,
    jti: String,
    iat: i64,
    exp: i64,
}

/// A request's verified session.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: User,
    pub session_id: String,
    pub csrf_token: String,
}

#[derive(Debug)]
pub struct SessionService {
    db: SqlitePool,
    cookies: CookieSeal,
    /// Idle lifetime, extended by activity.
    ttl: Duration,
    /// Absolute lifetime, whatever the activity.
    max_lifetime: Duration,
}

impl SessionService {
    pub fn new(db: SqlitePool, keyring: Arc<Keyring>, ttl: Duration, max_lifetime: Duration) -> Self {
        Self { db, cookies: CookieSeal::new(keyring), ttl, max_lifetime }
    }

    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    /// Starts a session: returns the cookie value and the session.
    pub async fn create(&self, user: &User) -> Result<(String, Authenticated), sqlx::Error> {
        let now = Utc::now();
        let session_id = random_token();
        let csrf_token = random_token();
        let row = sessions::SessionRow {
            id: session_id.clone(),
            user_id: user.id,
            csrf_token: csrf_token.clone(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + self.ttl.min(self.max_lifetime),
        };
        let mut conn = self.db.acquire().await?;
        // Housekeeping on the rare path: forget sessions that ended a day ago.
        sessions::delete_ended(&mut conn, now - chrono::Duration::days(1)).await?;
        sessions::insert(&mut conn, &row).await?;
        let claims = Claims {
            sub: user.id.to_string(),
            name: user.username.clone(),
            role: user.role.as_str().to_owned(),
            jti: session_id.clone(),
            iat: now.timestamp(),
            exp: (now + self.max_lifetime).timestamp(),
        };
        let cookie = self.cookies.seal(&claims);
        Ok((cookie, Authenticated { user: user.clone(), session_id, csrf_token }))
    }

    /// The session a cookie value stands for, if it is genuine, live and its user enabled.
    /// Moves the sliding expiry when half of it has passed.
    pub async fn authenticate(&self, cookie: &str) -> Result<Option<Authenticated>, sqlx::Error> {
        let Some(claims) = self.cookies.open(cookie) else { return Ok(None) };
        let now = Utc::now();
        let mut conn = self.db.acquire().await?;
        let Some(live) = sessions::live_with_user(&mut conn, &claims.jti, now).await? else { return Ok(None) };
        if live.user.id.to_string() != claims.sub || live.user.disabled {
            return Ok(None);
        }
        if live.session_expires_at - now < chrono::Duration::from_std(self.ttl / 2).unwrap_or_default() {
            let expires_at = self.extended_expiry(live.session_created_at, now);
            sessions::touch(&mut conn, &live.session_id, now, expires_at).await?;
        }
        Ok(Some(Authenticated { user: live.user, session_id: live.session_id, csrf_token: live.session_csrf_token }))
    }

    pub async fn revoke(&self, session_id: &str) -> Result<(), sqlx::Error> {
        sessions::revoke(&mut *self.db.acquire().await?, session_id, Utc::now()).await
    }

    fn extended_expiry(&self, created_at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        let cap = created_at + chrono::Duration::from_std(self.max_lifetime).unwrap_or_default();
        (now + chrono::Duration::from_std(self.ttl).unwrap_or_default()).min(cap)
    }
}

/// The session cookie's value: a JWT signed with a key derived for sessions, sealed with
/// AES-256-GCM under the ring's active key. Opening tries the key the envelope names.
#[derive(Debug)]
pub struct CookieSeal {
    keyring: Arc<Keyring>,
}

impl CookieSeal {
    pub fn new(keyring: Arc<Keyring>) -> Self {
        Self { keyring }
    }

    pub fn seal(&self, claims: &Claims) -> String {
        let key_id = self.keyring.active_id();
        let signing = self.keyring.derived(key_id, Purpose::SessionJwt).expect("the active key is always in the ring");
        let header = Header { kid: Some(key_id.to_owned()), ..Header::new(Algorithm::HS256) };
        let jwt = jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(&signing))
            .expect("HS256 signing of serialisable claims cannot fail");
        self.seal_token(jwt.as_bytes())
    }

    /// The envelope around any token: key id length, key id, nonce, ciphertext. Public so
    /// the fuzz target can reach the JWT checks behind the seal.
    pub fn seal_token(&self, jwt: &[u8]) -> String {
        let sealed = self.keyring.seal(Purpose::SessionCookie, COOKIE_AAD, jwt);
        let mut envelope = Vec::with_capacity(1 + sealed.key_id.len() + sealed.nonce.len() + sealed.ciphertext.len());
        envelope.push(u8::try_from(sealed.key_id.len()).expect("key ids are at most 32 bytes"));
        envelope.extend_from_slice(sealed.key_id.as_bytes());
        envelope.extend_from_slice(&sealed.nonce);
        envelope.extend_from_slice(&sealed.ciphertext);
        B64URL.encode(envelope)
    }

    /// The claims of a genuine cookie; `None` for anything else, whatever the input.
    pub fn open(&self, cookie: &str) -> Option<Claims> {
        let envelope = B64URL.decode(cookie).ok()?;
        let (&id_len, rest) = envelope.split_first()?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + 12 {
            return None;
        }
        let key_id = std::str::from_utf8(&rest[..id_len]).ok()?.to_owned();
        let sealed =
            Sealed { key_id, nonce: rest[id_len..id_len + 12].to_vec(), ciphertext: rest[id_len + 12..].to_vec() };
        let jwt = self.keyring.open(Purpose::SessionCookie, COOKIE_AAD, &sealed).ok()?;
        let jwt = std::str::from_utf8(&jwt).ok()?;
        let kid = jsonwebtoken::decode_header(jwt).ok()?.kid?;
        let verifying = self.keyring.derived(&kid, Purpose::SessionJwt)?;
        let validation = Validation::new(Algorithm::HS256);
        jsonwebtoken::decode::<Claims>(jwt, &DecodingKey::from_secret(&verifying), &validation).ok().map(|d| d.claims)
    }
}

/// 256 random bits, URL-safe.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    B64URL.encode(bytes)
}
