//! Single sign-on with OpenID Connect: the authorization code flow with PKCE, `state` and
//! `nonce`, against the provider named in `auth.oidc`. The protocol is the
//! `openidconnect` crate's (discovery, ID token signature, issuer, audience, expiry and
//! nonce checks); this module keeps what is ours: the pending sign-ins (single use, bound
//! to the browser that started them), the provider's metadata and keys (cached, fetched
//! again for a key it has not seen: rotation), the group rules, and one plain reason for
//! every refusal.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AccessToken, AdditionalClaims, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IdToken, IdTokenClaims, IdTokenVerifier, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadataWithLogout, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;
use url::Url;

use crate::config::model::OidcSettings;
use crate::db::repositories::oidc_logins::{self, PendingLogin};
use crate::text::error_chain;

/// How long a sign-in may stay at the provider.
pub const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
/// Sign-ins under way at once, over all browsers; more are refused until some end.
const MAX_PENDING: i64 = 10_000;
/// Metadata and keys are fetched again after this long.
const METADATA_TTL: Duration = Duration::from_secs(60 * 60);
/// A token with an unknown key makes the keys be fetched again at most this often.
const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(30);
/// Longest answer read from the provider.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Every claim of the ID token beyond the standard ones (the groups claim among them).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct OtherClaims {
    #[serde(flatten)]
    claims: BTreeMap<String, Value>,
}

impl AdditionalClaims for OtherClaims {}

type Claims = IdTokenClaims<OtherClaims, CoreGenderClaim>;
type Token = IdToken<OtherClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;
type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// Why a sign-in through the provider did not start a session. Each has a plain message
/// for the person and a short code for the audit log.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("single sign-on is not configured")]
    NotConfigured,
    #[error("too many sign-ins are under way; try again in a few minutes")]
    Busy,
    #[error("this sign-in is unknown or was already used; start again")]
    UnknownState,
    #[error("this sign-in was started in another browser; start again here")]
    OtherBrowser,
    #[error("this sign-in took longer than ten minutes; start again")]
    Stale,
    #[error("the identity provider refused: {0}")]
    Provider(String),
    #[error("the identity provider cannot be reached: {0}")]
    Unreachable(String),
    #[error("the identity provider answered with something that is not valid: {0}")]
    BadResponse(String),
    #[error("the identity provider's token does not belong to this sign-in (nonce)")]
    WrongNonce,
    #[error("the identity provider's token was issued to another application (audience)")]
    WrongAudience,
    #[error("the identity provider's token comes from another issuer")]
    WrongIssuer,
    #[error("the identity provider's token has expired")]
    Expired,
    #[error("the identity provider's token is not validly signed")]
    BadSignature,
    #[error("the identity provider sent no user name (claims {0} and email)")]
    NoUsername(String),
    #[error("the user name {0:?} from the identity provider is not a valid user name here")]
    InvalidUsername(String),
    #[error("you are not in a group that may use promptops")]
    NotAllowed,
    #[error("{0}")]
    Account(String),
    #[error("this account is disabled")]
    Disabled,
    #[error("the database failed: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

impl Refusal {
    /// Short, stable words for the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotConfigured => "not_configured",
            Self::Busy => "busy",
            Self::UnknownState => "unknown_or_replayed_state",
            Self::OtherBrowser => "other_browser",
            Self::Stale => "sign_in_too_slow",
            Self::Provider(_) => "provider_error",
            Self::Unreachable(_) => "provider_unreachable",
            Self::BadResponse(_) => "bad_provider_response",
            Self::WrongNonce => "wrong_nonce",
            Self::WrongAudience => "wrong_audience",
            Self::WrongIssuer => "wrong_issuer",
            Self::Expired => "token_expired",
            Self::BadSignature => "bad_signature",
            Self::NoUsername(_) => "no_username",
            Self::InvalidUsername(_) => "invalid_username",
            Self::NotAllowed => "not_in_allowed_groups",
            Self::Account(_) => "name_taken",
            Self::Disabled => "disabled",
            Self::Db(_) | Self::Internal(_) => "internal",
        }
    }

    /// Whether the fault is ours or the provider's rather than the person's.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Db(_) | Self::Internal(_) | Self::BadResponse(_))
    }
}

/// A sign-in sent to the provider: where the browser goes, and the value of the cookie
/// that binds the sign-in to this browser.
#[derive(Debug)]
pub struct Started {
    pub authorize_url: Url,
    pub binding: String,
}

/// What the provider vouched for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    /// The user name claim's value (or the email), not yet validated.
    pub username: String,
    pub groups: Vec<String>,
    /// Where the person wanted to go after signing in.
    pub next: String,
}

/// The outcome of the last fetch of the provider's metadata, for the admin config page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProviderStatus {
    pub issuer: String,
    pub checked_at: DateTime<Utc>,
    pub error: Option<String>,
    pub end_session_url: Option<String>,
}

#[derive(Debug, Clone)]
struct Discovered {
    issuer: String,
    metadata: ProviderMetadataWithLogout,
    fetched: Instant,
}

#[derive(Debug)]
pub struct OidcService {
    db: SqlitePool,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<Discovered>>,
    status: Mutex<Option<ProviderStatus>>,
    /// When a token signed with an unknown key last made us fetch the keys again.
    forced_at: Mutex<Option<Instant>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl OidcService {
    pub fn new(db: SqlitePool) -> Self {
        let http = reqwest::Client::builder()
            // A redirect from the provider's endpoints is not followed (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()
            // Only a broken TLS backend makes this fail, and then nothing works.
            .unwrap_or_default();
        Self { db, http, cached: tokio::sync::Mutex::new(None), status: Mutex::new(None), forced_at: Mutex::new(None) }
    }

    /// How long a look at the provider is trusted by the pages that show its state.
    pub const RECHECK: Duration = Duration::from_secs(5);

    /// The last known state of the provider (None before the first look).
    pub fn status(&self) -> Option<ProviderStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Looks at the provider (its discovery document and keys) when the last look is older
    /// than `max_age` or was at another issuer, and returns its status.
    pub async fn check(&self, settings: &OidcSettings, max_age: Duration) -> ProviderStatus {
        if let Some(status) = self.status()
            && status.issuer == settings.issuer
            && (Utc::now() - status.checked_at).to_std().is_ok_and(|age| age < max_age)
        {
            return status;
        }
        let mut cached = self.cached.lock().await;
        let _ = self.fetch(settings, &mut cached).await;
        drop(cached);
        self.status().unwrap_or_else(|| ProviderStatus {
            issuer: settings.issuer.clone(),
            checked_at: Utc::now(),
            error: Some("not looked at yet".into()),
            end_session_url: None,
        })
    }

    /// Starts a sign-in: records it and returns the provider's authorization URL.
    pub async fn start(&self, settings: &OidcSettings, redirect: &Url, next: &str) -> Result<Started, Refusal> {
        let now = Utc::now();
        let mut conn = self.db.acquire().await?;
        let pending = oidc_logins::prune(&mut conn, now - chrono_duration(LOGIN_TTL)).await?;
        if pending >= MAX_PENDING {
            return Err(Refusal::Busy);
        }
        drop(conn);
        let client = self.client(settings, redirect, false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let scopes = settings.scopes.iter().filter(|s| *s != "openid").map(|s| Scope::new(s.clone()));
        let (authorize_url, state, nonce) = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scopes(scopes)
            .set_pkce_challenge(challenge)
            .url();
        let binding = CsrfToken::new_random().secret().clone();
        let login = PendingLogin {
            state_hash: digest(state.secret()),
            binding_hash: digest(&binding),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            next: next.to_owned(),
            created_at: now,
        };
        oidc_logins::insert(&mut *self.db.acquire().await?, &login).await?;
        Ok(Started { authorize_url, binding })
    }

    /// Finishes a sign-in from the provider's redirect: the pending sign-in is taken (once),
    /// the code exchanged, the ID token checked, the groups read.
    pub async fn finish(
        &self,
        settings: &OidcSettings,
        redirect: &Url,
        callback: &Callback,
        binding: Option<&str>,
    ) -> Result<Identity, Refusal> {
        let state = callback.state.as_deref().ok_or(Refusal::UnknownState)?;
        let login =
            oidc_logins::take(&mut *self.db.acquire().await?, &digest(state)).await?.ok_or(Refusal::UnknownState)?;
        if binding.map(digest).as_deref() != Some(login.binding_hash.as_str()) {
            return Err(Refusal::OtherBrowser);
        }
        if (Utc::now() - login.created_at).to_std().is_ok_and(|age| age > LOGIN_TTL) {
            return Err(Refusal::Stale);
        }
        if let Some(error) = &callback.error {
            let description = callback.error_description.as_deref().unwrap_or("");
            return Err(Refusal::Provider(format!("{error} {description}").trim().to_owned()));
        }
        let code = callback.code.clone().ok_or_else(|| Refusal::BadResponse("the redirect carries no code".into()))?;

        let client = self.client(settings, redirect, false).await?;
        let http = self.http_client(settings.timeout);
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| Refusal::BadResponse(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(login.pkce_verifier.clone()))
            .request_async(&http)
            .await
            .map_err(token_refusal)?;
        let raw = response
            .id_token()
            .ok_or_else(|| Refusal::BadResponse("the token response carries no ID token".into()))?
            .to_string();
        let token: Token = raw.parse().map_err(|e: serde_json::Error| Refusal::BadResponse(e.to_string()))?;
        let nonce = Nonce::new(login.nonce.clone());
        let claims = match token.claims(&verifier(&client, settings), &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                // The provider may have rotated its keys: fetch them again, once.
                let client = self.client(settings, redirect, true).await?;
                token.claims(&verifier(&client, settings), &nonce).map_err(claims_refusal)?.clone()
            }
            other => other.map_err(claims_refusal)?.clone(),
        };
        let mut groups = claim_strings(claims.additional_claims().claims.get(&settings.groups_claim));
        if groups.is_none()
            && let Ok(request) = client
                .user_info(AccessToken::new(response.access_token().secret().clone()), Some(claims.subject().clone()))
        {
            // Some providers put groups only in the userinfo answer.
            let info: Result<UserInfoClaims<OtherClaims, CoreGenderClaim>, _> = request.request_async(&http).await;
            groups =
                info.ok().and_then(|info| claim_strings(info.additional_claims().claims.get(&settings.groups_claim)));
        }
        let username = username_claim(&claims, &settings.username_claim)
            .ok_or_else(|| Refusal::NoUsername(settings.username_claim.clone()))?;
        Ok(Identity {
            issuer: settings.issuer.clone(),
            subject: claims.subject().as_str().to_owned(),
            username,
            groups: groups.unwrap_or_default(),
            next: login.next,
        })
    }

    /// Where the provider signs the person out (RP-initiated logout), back to `back`.
    pub async fn end_session_url(&self, settings: &OidcSettings, back: &Url) -> Option<Url> {
        let discovered = self.discovered(settings, false).await.ok()?;
        let end = discovered.metadata.additional_metadata().end_session_endpoint.clone()?;
        let mut url = end.url().clone();
        url.query_pairs_mut()
            .append_pair("client_id", &settings.client_id)
            .append_pair("post_logout_redirect_uri", back.as_str());
        Some(url)
    }

    async fn client(&self, settings: &OidcSettings, redirect: &Url, refetch: bool) -> Result<Client, Refusal> {
        let discovered = self.discovered(settings, refetch).await?;
        let secret = settings.client_secret.clone().map(ClientSecret::new);
        Ok(CoreClient::from_provider_metadata(discovered.metadata, ClientId::new(settings.client_id.clone()), secret)
            .set_redirect_uri(RedirectUrl::from_url(redirect.clone())))
    }

    /// The provider's metadata and keys: cached, fetched when missing, older than an hour,
    /// for another issuer, or when `refetch` asks (a token signed with a key we do not
    /// know: at most every 30 s, so forged tokens cannot make us hammer the provider; a
    /// routine fetch does not count, so a rotation right after one is seen at once).
    async fn discovered(&self, settings: &OidcSettings, refetch: bool) -> Result<Discovered, Refusal> {
        let mut cached = self.cached.lock().await;
        if let Some(d) = cached.as_ref()
            && d.issuer == settings.issuer
            && d.fetched.elapsed() < METADATA_TTL
            && !(refetch && self.may_force_refetch())
        {
            return Ok(d.clone());
        }
        self.fetch(settings, &mut cached).await
    }

    /// Whether a forced refetch may go ahead now; if so, it counts as done.
    fn may_force_refetch(&self) -> bool {
        let mut forced_at = self.forced_at.lock().unwrap_or_else(PoisonError::into_inner);
        if forced_at.is_some_and(|at| at.elapsed() < REFETCH_MIN_INTERVAL) {
            return false;
        }
        *forced_at = Some(Instant::now());
        true
    }

    /// Fetches metadata and keys, records the outcome, and caches them when good (a failed
    /// fetch keeps the last good ones).
    async fn fetch(&self, settings: &OidcSettings, cached: &mut Option<Discovered>) -> Result<Discovered, Refusal> {
        let result = self.discover(settings).await;
        let status = ProviderStatus {
            issuer: settings.issuer.clone(),
            checked_at: Utc::now(),
            error: result.as_ref().err().map(ToString::to_string),
            end_session_url: result
                .as_ref()
                .ok()
                .and_then(|m| m.additional_metadata().end_session_endpoint.as_ref())
                .map(|u| u.url().to_string()),
        };
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = Some(status);
        match result {
            Ok(metadata) => {
                let d = Discovered { issuer: settings.issuer.clone(), metadata, fetched: Instant::now() };
                *cached = Some(d.clone());
                Ok(d)
            }
            Err(e) => {
                tracing::warn!(issuer = settings.issuer, error = %e, "the identity provider's discovery failed");
                Err(e)
            }
        }
    }

    async fn discover(&self, settings: &OidcSettings) -> Result<ProviderMetadataWithLogout, Refusal> {
        let issuer = IssuerUrl::new(settings.issuer.clone()).map_err(|e| Refusal::BadResponse(e.to_string()))?;
        let http = self.http_client(settings.timeout);
        ProviderMetadataWithLogout::discover_async(issuer, &http).await.map_err(|e| match e {
            openidconnect::DiscoveryError::Request(e) => Refusal::Unreachable(e.to_string()),
            other => Refusal::BadResponse(error_chain(&other)),
        })
    }

    /// The provider requests, on our HTTP client: bounded in time and size, no redirects.
    fn http_client(
        &self,
        timeout: Duration,
    ) -> impl Fn(
        openidconnect::HttpRequest,
    ) -> futures_util::future::BoxFuture<'static, Result<openidconnect::HttpResponse, HttpError>> {
        let client = self.http.clone();
        move |request: openidconnect::HttpRequest| {
            let client = client.clone();
            Box::pin(async move {
                let mut request = reqwest::Request::try_from(request).map_err(|e| HttpError(e.to_string()))?;
                *request.timeout_mut() = Some(timeout);
                let response = client.execute(request).await.map_err(|e| HttpError(error_chain(&e)))?;
                let mut answer = http::Response::builder().status(response.status());
                for (name, value) in response.headers() {
                    answer = answer.header(name, value);
                }
                let body = read_bounded(response).await?;
                answer.body(body).map_err(|e| HttpError(e.to_string()))
            })
        }
    }
}

/// The query of the provider's redirect back to us.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Whether the groups allow the person in, and whether they make an admin (`None` when
/// groups do not decide roles).
pub fn decide(settings: &OidcSettings, groups: &[String]) -> Result<Option<bool>, Refusal> {
    let member = |list: &[String]| list.iter().any(|g| groups.contains(g));
    if !settings.allowed_groups.is_empty() && !member(&settings.allowed_groups) {
        return Err(Refusal::NotAllowed);
    }
    Ok((!settings.admin_groups.is_empty()).then(|| member(&settings.admin_groups)))
}

fn verifier<'a>(client: &'a Client, settings: &OidcSettings) -> IdTokenVerifier<'a, CoreJsonWebKey> {
    let skew = chrono_duration(settings.clock_skew);
    // Expiry is checked against a clock set back by the allowed skew, issue time against
    // one set forward by it: the provider's clock may be off by that much either way.
    client.id_token_verifier().set_time_fn(move || Utc::now() - skew).set_issue_time_verifier_fn(
        move |issued: DateTime<Utc>| {
            if issued > Utc::now() + skew { Err("issued in the future".to_owned()) } else { Ok(()) }
        },
    )
}

fn claims_refusal(e: ClaimsVerificationError) -> Refusal {
    match e {
        ClaimsVerificationError::Expired(_) => Refusal::Expired,
        ClaimsVerificationError::InvalidAudience(_) => Refusal::WrongAudience,
        ClaimsVerificationError::InvalidIssuer(_) => Refusal::WrongIssuer,
        ClaimsVerificationError::InvalidNonce(_) => Refusal::WrongNonce,
        ClaimsVerificationError::SignatureVerification(_) => Refusal::BadSignature,
        other => Refusal::BadResponse(other.to_string()),
    }
}

fn token_refusal<RE: std::error::Error + 'static, T: openidconnect::ErrorResponse + 'static>(
    e: openidconnect::RequestTokenError<RE, T>,
) -> Refusal {
    match e {
        openidconnect::RequestTokenError::ServerResponse(r) => Refusal::Provider(r.to_string()),
        openidconnect::RequestTokenError::Request(r) => Refusal::Unreachable(error_chain(&r)),
        other => Refusal::BadResponse(error_chain(&other)),
    }
}

/// A claim that holds a list of strings, or one string.
fn claim_strings(value: Option<&Value>) -> Option<Vec<String>> {
    match value? {
        Value::Array(items) => Some(items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()),
        Value::String(one) => Some(vec![one.clone()]),
        _ => None,
    }
}

fn username_claim(claims: &Claims, name: &str) -> Option<String> {
    let named = match name {
        "preferred_username" => claims.preferred_username().map(|u| u.as_str().to_owned()),
        "email" => None,
        "sub" => Some(claims.subject().as_str().to_owned()),
        other => claims.additional_claims().claims.get(other).and_then(Value::as_str).map(str::to_owned),
    };
    named.or_else(|| claims.email().map(|e| e.as_str().to_owned())).filter(|n| !n.trim().is_empty())
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| HttpError(error_chain(&e)))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(HttpError("the answer is longer than 1 MiB".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn digest(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(allowed: &[&str], admins: &[&str]) -> OidcSettings {
        serde_json::from_value(serde_json::json!({
            "issuer": "https://id.example", "client_id": "promptops",
            "allowed_groups": allowed, "admin_groups": admins,
        }))
        .unwrap()
    }

    #[test]
    fn groups_decide_who_enters_and_who_administers() {
        let groups = |g: &[&str]| g.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(decide(&settings(&[], &[]), &[]).unwrap(), None, "no rules: everyone, roles kept");
        assert!(matches!(decide(&settings(&["staff"], &[]), &groups(&["guests"])), Err(Refusal::NotAllowed)));
        assert_eq!(decide(&settings(&["staff"], &["ops"]), &groups(&["staff"])).unwrap(), Some(false));
        assert_eq!(decide(&settings(&["staff"], &["ops"]), &groups(&["staff", "ops"])).unwrap(), Some(true));
        // An admin group does not let in someone outside the allowed ones.
        assert!(matches!(decide(&settings(&["staff"], &["ops"]), &groups(&["ops"])), Err(Refusal::NotAllowed)));
    }

    #[tokio::test]
    async fn forced_key_refetches_are_spaced_out() {
        let service = OidcService::new(SqlitePool::connect_lazy("sqlite::memory:").unwrap());
        assert!(service.may_force_refetch(), "the first unknown key fetches the keys again");
        assert!(!service.may_force_refetch(), "the next one within 30 s does not");
        *service.forced_at.lock().unwrap() = Some(Instant::now() - REFETCH_MIN_INTERVAL);
        assert!(service.may_force_refetch(), "after 30 s it does again");
    }

    #[test]
    fn group_claims_may_be_a_list_or_one_name() {
        assert_eq!(claim_strings(Some(&serde_json::json!(["a", "b", 3]))), Some(vec!["a".into(), "b".into()]));
        assert_eq!(claim_strings(Some(&serde_json::json!("a"))), Some(vec!["a".into()]));
        assert_eq!(claim_strings(Some(&serde_json::json!({"a": 1}))), None);
        assert_eq!(claim_strings(None), None);
    }

    #[test]
    fn the_client_secret_is_not_in_debug_output() {
        let mut s = settings(&[], &[]);
        s.client_secret = Some("very-secret-value".into());
        assert!(!format!("{s:?}").contains("very-secret-value"));
    }
}
