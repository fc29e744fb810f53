//! Logs and metrics: the tracing subscriber (JSON lines or human text) and the
//! Prometheus registry. Owns output formats only; parts decide what to record.

pub mod metrics;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Text when stderr is a terminal, JSON otherwise.
    Auto,
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines with colours when a terminal is attached, for development.
    Text,
}

impl LogFormat {
    /// The format lines are written in: `Auto` decided by whether stderr is a terminal.
    pub fn resolve(self, terminal: bool) -> Self {
        match self {
            Self::Auto if terminal => Self::Text,
            Self::Auto => Self::Json,
            other => other,
        }
    }
}

/// Installs the global subscriber. `filter` takes `RUST_LOG`-style directives, e.g.
/// `info` or `info,promptops=debug,sqlx=warn`.
pub fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("invalid log level {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format.resolve(std::io::IsTerminal::is_terminal(&std::io::stderr())) {
        LogFormat::Json | LogFormat::Auto => {
            builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
        }
        LogFormat::Text => builder.try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}

#[cfg(test)]
mod tests {
    use super::LogFormat;

    #[test]
    fn auto_is_text_on_a_terminal_and_json_for_collectors_and_the_others_stay() {
        assert_eq!(LogFormat::Auto.resolve(true), LogFormat::Text);
        assert_eq!(LogFormat::Auto.resolve(false), LogFormat::Json);
        assert_eq!(LogFormat::Json.resolve(true), LogFormat::Json);
        assert_eq!(LogFormat::Text.resolve(false), LogFormat::Text);
    }
}
