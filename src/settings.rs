//! Process settings from flags and `PROMPTOPS_*` environment variables, each with a safe
//! local default. The flag `--some-thing` always reads `PROMPTOPS_SOME_THING`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Where the SQLite database lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// SQLite database URL; the file and its folder are created when missing.
    #[arg(
        long,
        env = "PROMPTOPS_DATABASE_URL",
        default_value = "sqlite://./data/promptops.db",
        hide_env_values = true
    )]
    pub database_url: String,
}

/// Settings of `promptops serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeSettings {
    /// Address the web server (UI, API, probes, metrics) listens on.
    #[arg(long, env = "PROMPTOPS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseSettings,

    /// Directory holding config.json, header.json, payload.json and prompts.json;
    /// watched and reloaded live.
    #[arg(long, env = "PROMPTOPS_CONFIG_DIR", default_value = "./config")]
    pub config_dir: PathBuf,

    /// Do not apply pending database migrations at start (run `promptops migrate` instead).
    #[arg(long, env = "PROMPTOPS_SKIP_MIGRATIONS")]
    pub skip_migrations: bool,

    /// Quiet time after a change in the config directory before it is read.
    #[arg(long, env = "PROMPTOPS_CONFIG_DEBOUNCE", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub config_debounce: Duration,

    /// Interval at which the config directory is re-read even without change events.
    #[arg(long, env = "PROMPTOPS_CONFIG_POLL_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub config_poll_interval: Duration,

    /// How long in-flight requests may take to finish after SIGTERM before they are cut.
    #[arg(long, env = "PROMPTOPS_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    #[command(flatten)]
    pub security: SecuritySettings,

    #[command(flatten)]
    pub web: WebSettings,

    #[command(flatten)]
    pub controller: ControllerSettings,
}

/// The Kubernetes controller and leader election.
#[derive(Debug, Clone, Args)]
pub struct ControllerSettings {
    /// Run the Prompt/PromptJob controller: `auto` when a cluster is reachable (in a pod,
    /// or through KUBECONFIG / ~/.kube/config), `on` (required), `off`.
    #[arg(long, env = "PROMPTOPS_CONTROLLER", value_enum, default_value_t = crate::controller::Mode::Auto)]
    pub controller: crate::controller::Mode,

    /// Watch Prompt and PromptJob resources in these namespaces only, comma-separated
    /// (default: all namespaces).
    #[arg(long, env = "PROMPTOPS_WATCH_NAMESPACE", value_delimiter = ',', value_parser = parse_namespace)]
    pub watch_namespace: Vec<String>,

    /// Namespace of the leader-election Lease (default: the pod's namespace, else the
    /// kubeconfig's default namespace).
    #[arg(long, env = "PROMPTOPS_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Name of the leader-election Lease; replicas sharing it elect one leader.
    #[arg(long, env = "PROMPTOPS_LEASE_NAME", default_value = "promptops-controller")]
    pub lease_name: String,

    /// How long a leader's Lease lasts without renewal; a new leader takes over after it.
    #[arg(long, env = "PROMPTOPS_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// This replica's identity in the Lease and in Events (default: the pod or host name
    /// with a random suffix).
    #[arg(long, env = "PROMPTOPS_IDENTITY")]
    pub identity: Option<String>,
}

/// Keys, password hashing and sessions.
#[derive(Debug, Clone, Args)]
pub struct SecuritySettings {
    /// Encryption keys as `id:base64key[,id:base64key…]` (32 random bytes each; the first
    /// seals, all open). Create one with `promptops keys generate`. Without it a key is
    /// generated into --key-file, fine for a laptop but not for a cluster.
    #[arg(long, env = "PROMPTOPS_ENCRYPTION_KEYS", hide_env_values = true)]
    pub encryption_keys: Option<String>,

    /// Where the generated key is kept when --encryption-keys is not set.
    #[arg(long, env = "PROMPTOPS_KEY_FILE", default_value = "./data/encryption.key")]
    pub key_file: PathBuf,

    /// bcrypt cost for new password hashes (4-31; each step doubles the work).
    #[arg(long, env = "PROMPTOPS_BCRYPT_COST", default_value_t = 12, value_parser = clap::value_parser!(u32).range(4..=31))]
    pub bcrypt_cost: u32,
}

/// Settings of the web front: sessions, public URL, client addresses.
#[derive(Debug, Clone, Args)]
pub struct WebSettings {
    /// The URL people open, e.g. `https://promptops.example.com`. Decides the `Secure`
    /// cookie flag, HSTS and the allowed `Origin`. Defaults to `http://<listen>`.
    #[arg(long, env = "PROMPTOPS_PUBLIC_URL")]
    pub public_url: Option<url::Url>,

    /// A session ends after this long without a request (sliding).
    #[arg(long, env = "PROMPTOPS_SESSION_TTL", default_value = "8h", value_parser = humantime::parse_duration)]
    pub session_ttl: Duration,

    /// A session ends this long after login, however active.
    #[arg(long, env = "PROMPTOPS_SESSION_MAX_LIFETIME", default_value = "7d", value_parser = humantime::parse_duration)]
    pub session_max_lifetime: Duration,

    /// Take the client address from this header (e.g. `x-forwarded-for`, last entry)
    /// instead of the TCP peer. Set it only behind a proxy that always sets it.
    #[arg(long, env = "PROMPTOPS_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,

    /// Serve /metrics (and the probes) on this second address instead of the main one.
    #[arg(long, env = "PROMPTOPS_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Password of the `admin` user created on first start (no users yet). Without it a
    /// password is generated and printed once in the log.
    #[arg(long, env = "PROMPTOPS_BOOTSTRAP_ADMIN_PASSWORD", hide_env_values = true)]
    pub bootstrap_admin_password: Option<String>,
}

/// A Kubernetes namespace name: a DNS label (RFC 1123), as the API server requires.
fn parse_namespace(value: &str) -> Result<String, String> {
    let name = value.trim();
    let label = name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if label {
        Ok(name.to_owned())
    } else {
        Err(format!("{name:?} is not a namespace name (lower-case letters, digits and '-', at most 63)"))
    }
}
