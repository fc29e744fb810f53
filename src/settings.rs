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
}
