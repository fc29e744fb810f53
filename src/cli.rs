//! The command line: `serve`, `migrate`, `config check`, `user`, `keys`, `crds`. Parses, sets up logging,
//! dispatches; each command's work happens in the part that owns it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::app::load_keyring;
use crate::audit::{Actor, AuditLog};
use crate::auth::keys::Keyring;
use crate::auth::model::{Role, Username};
use crate::auth::users::UserService;
use crate::auth::vault::TokenVault;
use crate::config::{ProcessEnv, RawConfigSet};
use crate::db;
use crate::settings::{DatabaseSettings, SecuritySettings, ServeSettings};
use crate::telemetry::{self, LogFormat};

/// promptops: your company's AI assistant for Jira and Confluence.
#[derive(Debug, Parser)]
#[command(name = "promptops", version, about, propagate_version = true)]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, env = "PROMPTOPS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,

    /// Log level or filter directives, e.g. `info` or `info,promptops=debug`.
    #[arg(long, env = "PROMPTOPS_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the web server and the config watcher.
    Serve(Box<ServeSettings>),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseSettings),
    /// Inspect configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage encryption keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Write a consistent copy of the database to FILE while `serve` may keep running,
    /// checked with `PRAGMA integrity_check` before it takes its name.
    Backup {
        /// The backup file to create; never overwritten.
        file: PathBuf,
        #[command(flatten)]
        database: DatabaseSettings,
    },
    /// Replace the database by a backup. Refuses while any `serve` uses the database, and
    /// a file that is not a sound promptops database; keeps the replaced one next to it.
    Restore {
        /// The backup file to restore.
        file: PathBuf,
        #[command(flatten)]
        database: DatabaseSettings,
    },
    /// Print the CustomResourceDefinitions (Prompt, PromptJob) as YAML, for
    /// `promptops crds | kubectl apply -f -`.
    Crds,
    /// Request a URL and exit 0 when it answers 2xx, else 1 with the reason: the health
    /// check of the container image (which has no curl) and of `helm test`.
    Probe {
        /// The URL to request, e.g. http://127.0.0.1:8080/healthz.
        url: url::Url,
        /// How long to wait for the whole answer.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user. Without --password-stdin a password is generated and printed once.
    Add {
        /// The new user's name (letters, digits, '.', '_', '-', '@').
        name: String,
        /// Give the user the admin role.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        database: DatabaseSettings,
        /// bcrypt cost for the password hash.
        #[arg(long, env = "PROMPTOPS_BCRYPT_COST", default_value_t = 12, value_parser = clap::value_parser!(u32).range(4..=31))]
        bcrypt_cost: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new random key as `id:base64key`, ready for PROMPTOPS_ENCRYPTION_KEYS.
    Generate {
        /// The key's id (default: k followed by today's date).
        #[arg(long)]
        id: Option<String>,
    },
    /// Re-seal every stored token under the active (first) key, so older keys can be
    /// removed from PROMPTOPS_ENCRYPTION_KEYS afterwards.
    Rotate {
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(flatten)]
        security: SecuritySettings,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config directory as `serve` would, and list every problem found.
    Check {
        /// The directory holding config.json, header.json, payload.json and prompts.json.
        dir: PathBuf,
    },
}

pub async fn run(cli: Cli) -> ExitCode {
    if let Err(e) = telemetry::init_logging(cli.log_format, &cli.log_level) {
        let _ = writeln!(std::io::stderr(), "promptops: {e:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Serve(settings) => serve(*settings).await,
        Command::Migrate(settings) => migrate(&settings).await,
        Command::Config(ConfigCommand::Check { dir }) => return check_config(&dir).await,
        Command::User(UserCommand::Add { name, admin, password_stdin, database, bcrypt_cost }) => {
            add_user(&name, admin, password_stdin, &database, bcrypt_cost).await
        }
        Command::Keys(KeysCommand::Generate { id }) => generate_key(id),
        Command::Keys(KeysCommand::Rotate { database, security }) => rotate_keys(&database, &security).await,
        Command::Backup { file, database } => backup(&file, &database).await,
        Command::Restore { file, database } => restore(&file, &database).await,
        Command::Crds => print_crds(),
        Command::Probe { url, timeout } => return probe(url, timeout).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "promptops failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: ServeSettings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let app = Application::build(&settings, Arc::new(ProcessEnv)).await?;
    app.run(shutdown).await
}

async fn migrate(settings: &DatabaseSettings) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database_url).await?;
    db::migrate(&pool).await?;
    pool.close().await;
    let queue = db::connect_with(&settings.database_url, 1).await?;
    crate::jobs::queue::setup(&queue).await?;
    queue.close().await;
    tracing::info!("database migrated");
    Ok(())
}

async fn add_user(
    name: &str,
    admin: bool,
    password_stdin: bool,
    database: &DatabaseSettings,
    bcrypt_cost: u32,
) -> anyhow::Result<()> {
    let username = Username::parse(name).map_err(anyhow::Error::msg)?;
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let line = line.trim_end_matches(['\n', '\r']).to_owned();
        anyhow::ensure!(!line.is_empty(), "no password on standard input");
        Some(secrecy::SecretString::from(line))
    } else {
        None
    };
    let pool = db::connect(&database.database_url).await?;
    db::migrate(&pool).await?;
    let users = UserService::new(pool.clone(), AuditLog::new(pool.clone()), bcrypt_cost);
    let role = if admin { Role::Admin } else { Role::User };
    let actor = Actor { username: Some("cli".into()), client_addr: None };
    let issued = users.create(&username, password, role, &actor).await?;
    pool.close().await;
    let mut out = std::io::stdout().lock();
    writeln!(out, "created {} user {}", role, issued.user.username)?;
    if let Some(generated) = issued.generated_password {
        writeln!(out, "password: {}", secrecy::ExposeSecret::expose_secret(&generated))?;
        writeln!(out, "(shown only now; it can be changed under Settings)")?;
    }
    Ok(())
}

async fn backup(file: &Path, database: &DatabaseSettings) -> anyhow::Result<()> {
    let source = db::backup::database_file(&database.database_url)?;
    anyhow::ensure!(source.is_file(), "there is no database at {}", source.display());
    let pool = db::connect(&database.database_url).await?;
    let written = db::backup::backup(&pool, file).await;
    pool.close().await;
    let written = written?;
    writeln!(
        std::io::stdout(),
        "backup written to {} ({:.1} MB in {:.1?}; integrity ok; schema version {})",
        file.display(),
        written.bytes as f64 / 1e6,
        written.took,
        written.checked.schema_version
    )?;
    Ok(())
}

async fn restore(file: &Path, database: &DatabaseSettings) -> anyhow::Result<()> {
    let restored = db::backup::restore(file, &database.database_url).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "restored {} (integrity ok; schema version {})", file.display(), restored.checked.schema_version)?;
    if restored.checked.behind > 0 {
        writeln!(out, "{} migration(s) newer than the backup are applied at the next start", restored.checked.behind)?;
    }
    if let Some(previous) = restored.previous {
        writeln!(out, "the database it replaced is kept as {}", previous.display())?;
    }
    Ok(())
}

fn print_crds() -> anyhow::Result<()> {
    write!(std::io::stdout(), "{}", crate::controller::resources::definitions_yaml()?)?;
    Ok(())
}

async fn probe(url: url::Url, timeout: std::time::Duration) -> ExitCode {
    let answer = async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let response = client.get(url.clone()).send().await?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        anyhow::Ok((status, body))
    };
    let (line, code) = match answer.await {
        Ok((status, _)) if status.is_success() => (format!("{url}: {status}"), ExitCode::SUCCESS),
        Ok((status, body)) => {
            let (body, _) = crate::text::prefix(body.trim(), 300);
            (format!("{url}: {status} {body}"), ExitCode::FAILURE)
        }
        Err(e) => (format!("{url}: {e:#}"), ExitCode::FAILURE),
    };
    let _ = writeln!(std::io::stderr(), "{line}");
    code
}

fn generate_key(id: Option<String>) -> anyhow::Result<()> {
    let id = id.unwrap_or_else(|| format!("k{}", chrono::Utc::now().format("%Y%m%d")));
    let spec = Keyring::generate_spec(&id);
    Keyring::parse(&spec)?;
    writeln!(std::io::stdout(), "{spec}")?;
    Ok(())
}

async fn rotate_keys(database: &DatabaseSettings, security: &SecuritySettings) -> anyhow::Result<()> {
    let keyring = Arc::new(load_keyring(security)?);
    let active = keyring.active_id().to_owned();
    let pool = db::connect(&database.database_url).await?;
    db::migrate(&pool).await?;
    let vault = TokenVault::new(pool.clone(), keyring, AuditLog::new(pool.clone()));
    let resealed = vault.rotate().await?;
    pool.close().await;
    writeln!(std::io::stdout(), "re-sealed {resealed} token(s) under key {active}")?;
    Ok(())
}

async fn check_config(dir: &Path) -> ExitCode {
    let raw = RawConfigSet::read(dir).await;
    let mut out = std::io::stdout().lock();
    let written = match raw.parse(&ProcessEnv) {
        Ok(config) => {
            let endpoints: Vec<String> =
                config
                    .service
                    .endpoints
                    .keys()
                    .map(|name| {
                        if *name == config.service.default_endpoint {
                            format!("{name} (default)")
                        } else {
                            name.clone()
                        }
                    })
                    .collect();
            let mcp: Vec<&str> = config.service.mcp_servers.keys().map(String::as_str).collect();
            let prompts: Vec<&str> = config.prompts.prompts.keys().map(String::as_str).collect();
            writeln!(out, "config OK: {} (sha256 {})", dir.display(), raw.sha256())
                .and_then(|()| writeln!(out, "  endpoints:   {}", endpoints.join(", ")))
                .and_then(|()| writeln!(out, "  mcp servers: {}", list_or_none(&mcp)))
                .and_then(|()| writeln!(out, "  prompts:     {}", list_or_none(&prompts)))
                .map(|()| ExitCode::SUCCESS)
        }
        Err(e) => {
            let count = e.issues.len();
            writeln!(out, "config INVALID: {count} problem(s) in {}", dir.display())
                .and_then(|()| e.issues.iter().try_for_each(|issue| writeln!(out, "  {issue}")))
                .map(|()| ExitCode::FAILURE)
        }
    };
    written.unwrap_or(ExitCode::FAILURE)
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() { "none".into() } else { items.join(", ") }
}

/// Trips `token` on SIGINT or SIGTERM, the start of a graceful shutdown.
async fn cancel_on_signal(token: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
    token.cancel();
}
