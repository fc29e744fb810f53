//! The command line: `serve`, `migrate`, `config check`. Parses, sets up logging,
//! dispatches; each command's work happens in the part that owns it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::config::{ProcessEnv, RawConfigSet};
use crate::db;
use crate::settings::{DatabaseSettings, ServeSettings};
use crate::telemetry::{self, LogFormat};

/// promptops: your company's AI assistant for Jira and Confluence.
#[derive(Debug, Parser)]
#[command(name = "promptops", version, about, propagate_version = true)]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, env = "PROMPTOPS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json, global = true)]
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
    Serve(ServeSettings),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseSettings),
    /// Inspect configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
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
        Command::Serve(settings) => serve(settings).await,
        Command::Migrate(settings) => migrate(&settings).await,
        Command::Config(ConfigCommand::Check { dir }) => return check_config(&dir).await,
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
    tracing::info!("database migrated");
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
