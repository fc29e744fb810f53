//! MCP servers (mcp-atlassian and any other streamable-HTTP server): one session per
//! (server, user credential), reused while warm; tool lists cached per server and token
//! scope; calls made under the calling user's own token. Knows nothing of chats: the
//! agent loop in `chat` decides what to call.

pub mod tools;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::{RoleClient, RunningService, ServiceExt as _};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::model::Service;
use crate::auth::vault::TokenVault;
use crate::config::ConfigSnapshot;
use crate::config::model::{McpAuth, McpServer};
use crate::telemetry::metrics::{Metrics, ServerLabels};
use tools::ToolInfo;

/// Why a server or a tool could not be used. Messages are for people and never hold a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum McpError {
    #[error("no {} token is stored", .0.title())]
    NoToken(Service),
    #[error("no MCP server named {0:?} in the configuration")]
    UnknownServer(String),
    #[error("cannot reach {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("{server} did not answer within {timeout:?}")]
    Timeout { server: String, timeout: Duration },
    #[error("the stored token cannot be opened: {0}")]
    Vault(String),
    #[error("no MCP server in the configuration checks {} tokens (set `whoami` on one that uses them)", .0.title())]
    NoCheck(Service),
}

/// Whose credentials a session uses.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A promptops user: the tokens they stored in the vault.
    User(i64),
    /// An unattended run: the token it was given (from a Kubernetes Secret), if any, used
    /// for every server that wants a user token. `scope` names the run's job.
    Token { scope: String, token: Option<SecretString> },
}

/// What a tool call returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub text: String,
    pub is_error: bool,
}

type Client = RunningService<RoleClient, ClientConfig>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SessionKey {
    server: String,
    /// `user:<id>:<token fingerprint>` for per-user tokens, `job:<id>:<fingerprint>` for a
    /// run's own token, `shared` otherwise.
    scope: String,
}

struct Session {
    client: Client,
    last_used: Mutex<Instant>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct McpManager {
    http: reqwest::Client,
    vault: Arc<TokenVault>,
    metrics: Arc<Metrics>,
    sessions: Mutex<HashMap<SessionKey, Arc<Session>>>,
    tool_lists: moka::future::Cache<SessionKey, (Instant, Arc<Vec<ToolInfo>>)>,
    /// The config generation sessions and lists belong to; a new one starts afresh.
    generation: AtomicU64,
}

impl McpManager {
    pub fn new(vault: Arc<TokenVault>, metrics: Arc<Metrics>) -> Self {
        Self {
            http: reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(90)).build().unwrap_or_default(),
            vault,
            metrics,
            sessions: Mutex::new(HashMap::new()),
            tool_lists: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            generation: AtomicU64::new(0),
        }
    }

    /// The tools of `server` as `principal` may see them (cached per token scope).
    pub async fn tools(
        &self,
        snapshot: &ConfigSnapshot,
        server: &str,
        principal: &Principal,
    ) -> Result<Arc<Vec<ToolInfo>>, McpError> {
        self.follow_config(snapshot);
        let settings = server_settings(snapshot, server)?;
        let (key, header) = self.credential(server, settings, principal).await?;
        if let Some((fetched, list)) = self.tool_lists.get(&key).await
            && fetched.elapsed() < settings.cache_ttl
        {
            return Ok(list);
        }
        let session = self.session(&key, settings, header).await?;
        let listed = tokio::time::timeout(settings.timeout, session.client.list_all_tools()).await;
        let listed = match listed {
            Err(_) => Err(McpError::Timeout { server: server.to_owned(), timeout: settings.timeout }),
            Ok(Err(e)) => Err(McpError::Unreachable { server: server.to_owned(), reason: e.to_string() }),
            Ok(Ok(tools)) => Ok(tools),
        };
        let tools = match listed {
            Ok(tools) => tools,
            Err(e) => {
                self.forget(&key);
                return Err(e);
            }
        };
        self.metrics.mcp_tool_list_fetches.get_or_create(&ServerLabels { server: server.to_owned() }).inc();
        let list: Arc<Vec<ToolInfo>> =
            Arc::new(tools.iter().map(|tool| ToolInfo::new(server, tool, &settings.tools)).collect());
        self.tool_lists.insert(key, (Instant::now(), list.clone())).await;
        Ok(list)
    }

    /// Calls a tool as `principal`. A tool's own failure comes back as an error output (for
    /// the LLM to read); a transport failure as `Err`.
    pub async fn call(
        &self,
        snapshot: &ConfigSnapshot,
        server: &str,
        principal: &Principal,
        tool: &str,
        arguments: serde_json::Map<String, Value>,
    ) -> Result<ToolOutput, McpError> {
        self.follow_config(snapshot);
        let settings = server_settings(snapshot, server)?;
        let (key, header) = self.credential(server, settings, principal).await?;
        let session = self.session(&key, settings, header).await?;
        let request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let called = tokio::time::timeout(settings.timeout, session.client.call_tool(request)).await;
        match called {
            Err(_) => Err(McpError::Timeout { server: server.to_owned(), timeout: settings.timeout }),
            Ok(Err(e)) => {
                self.forget(&key);
                Err(McpError::Unreachable { server: server.to_owned(), reason: e.to_string() })
            }
            Ok(Ok(result)) => {
                let content = serde_json::to_value(&result.content).unwrap_or(Value::Null);
                let mut text: Vec<String> = content
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|block| block.get("text").and_then(Value::as_str).map(str::to_owned))
                    .collect();
                if text.is_empty()
                    && let Some(structured) = &result.structured_content
                {
                    text.push(structured.to_string());
                }
                Ok(ToolOutput { text: text.join("\n"), is_error: result.is_error == Some(true) })
            }
        }
    }

    /// Calls the harmless "who am I" tool of the first server that uses the user's token for
    /// `service`, to show whom the service sees; `"{{username}}"` in its arguments becomes
    /// the promptops user name. `Ok` holds the tool's answer.
    pub async fn whoami(
        &self,
        snapshot: &ConfigSnapshot,
        user_id: i64,
        username: &str,
        service: Service,
    ) -> Result<ToolOutput, McpError> {
        let (server, settings) = snapshot
            .config
            .service
            .mcp_servers
            .iter()
            .find(|(_, s)| {
                matches!(s.auth, McpAuth::UserToken { service: used } if used == service) && s.whoami.is_some()
            })
            .ok_or(McpError::NoCheck(service))?;
        let whoami = settings.whoami.clone().ok_or(McpError::NoCheck(service))?;
        let arguments = whoami
            .arguments
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) if s == "{{username}}" => (k, Value::String(username.to_owned())),
                other => (k, other),
            })
            .collect();
        self.call(snapshot, server, &Principal::User(user_id), &whoami.tool, arguments).await
    }

    /// Closes sessions unused for longer than their server's idle timeout.
    pub fn close_idle(&self, snapshot: &ConfigSnapshot) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|key, session| {
            let idle = snapshot.config.service.mcp_servers.get(&key.server).map_or(Duration::ZERO, |s| s.idle_timeout);
            session.last_used.lock().unwrap_or_else(PoisonError::into_inner).elapsed() < idle
        });
    }

    /// Sessions open now (for tests and metrics).
    pub fn open_sessions(&self) -> usize {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// A new config generation may change URLs, credentials or selections: start afresh.
    fn follow_config(&self, snapshot: &ConfigSnapshot) {
        let previous = self.generation.swap(snapshot.generation, Ordering::AcqRel);
        if previous != snapshot.generation && previous != 0 {
            self.sessions.lock().unwrap_or_else(PoisonError::into_inner).clear();
            self.tool_lists.invalidate_all();
        }
    }

    fn forget(&self, key: &SessionKey) {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }

    /// Who the server sees: the key of the session and the header that authenticates it.
    async fn credential(
        &self,
        server: &str,
        settings: &McpServer,
        principal: &Principal,
    ) -> Result<(SessionKey, Option<(HeaderName, HeaderValue)>), McpError> {
        match &settings.auth {
            McpAuth::None => Ok((SessionKey { server: server.to_owned(), scope: "shared".into() }, None)),
            McpAuth::StaticHeader { name, value } => {
                let name = HeaderName::try_from(name.as_str()).map_err(|e| McpError::Vault(e.to_string()))?;
                let mut value = HeaderValue::try_from(value.as_str()).map_err(|e| McpError::Vault(e.to_string()))?;
                value.set_sensitive(true);
                Ok((SessionKey { server: server.to_owned(), scope: "shared".into() }, Some((name, value))))
            }
            McpAuth::UserToken { service } => {
                let (token, owner) = match principal {
                    Principal::User(user_id) => (
                        self.vault
                            .open(*user_id, *service)
                            .await
                            .map_err(|e| McpError::Vault(e.to_string()))?
                            .ok_or(McpError::NoToken(*service))?,
                        format!("user:{user_id}"),
                    ),
                    Principal::Token { scope, token } => {
                        (token.clone().ok_or(McpError::NoToken(*service))?, format!("job:{scope}"))
                    }
                };
                let fingerprint = hex::encode(&Sha256::digest(token.expose_secret().as_bytes())[..8]);
                let mut value = HeaderValue::try_from(format!("Token {}", token.expose_secret()))
                    .map_err(|_| McpError::Vault("the stored token is not a valid header value".into()))?;
                value.set_sensitive(true);
                let key = SessionKey { server: server.to_owned(), scope: format!("{owner}:{fingerprint}") };
                Ok((key, Some((http::header::AUTHORIZATION, value))))
            }
        }
    }

    /// The warm session for `key`, or a new one.
    async fn session(
        &self,
        key: &SessionKey,
        settings: &McpServer,
        header: Option<(HeaderName, HeaderValue)>,
    ) -> Result<Arc<Session>, McpError> {
        if let Some(session) = self.sessions.lock().unwrap_or_else(PoisonError::into_inner).get(key).cloned() {
            *session.last_used.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
            return Ok(session);
        }
        let mut config = StreamableHttpClientTransportConfig::with_uri(settings.url.as_str().to_owned());
        if let Some((name, value)) = header {
            config = config.custom_headers(HashMap::from([(name, value)]));
        }
        let transport = StreamableHttpClientTransport::with_client(self.http.clone(), config);
        let started = tokio::time::timeout(settings.timeout, ClientConfig::default().serve(transport)).await;
        let client = match started {
            Err(_) => return Err(McpError::Timeout { server: key.server.clone(), timeout: settings.timeout }),
            Ok(Err(e)) => return Err(McpError::Unreachable { server: key.server.clone(), reason: e.to_string() }),
            Ok(Ok(client)) => client,
        };
        let session = Arc::new(Session { client, last_used: Mutex::new(Instant::now()) });
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner).insert(key.clone(), session.clone());
        Ok(session)
    }
}

fn server_settings<'a>(snapshot: &'a ConfigSnapshot, server: &str) -> Result<&'a McpServer, McpError> {
    snapshot.config.service.mcp_servers.get(server).ok_or_else(|| McpError::UnknownServer(server.to_owned()))
}
