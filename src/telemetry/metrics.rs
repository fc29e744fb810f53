//! Prometheus metrics of the service, in one registry owned by the application.
//! Parts record through the typed fields; only `/metrics` encodes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of one HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The matched route pattern (`/api/v1/conversations/{id}`), never the raw path.
    pub route: String,
    pub status: u16,
}

/// Labels of a database pool's connections: the pool and `in_use` or `idle`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
    pub state: String,
}

/// Labels of LLM tokens: the endpoint (a config name) and `in` (prompt) or `out`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub endpoint: String,
    pub direction: String,
}

/// Counts one open stream in a gauge for as long as it lives.
#[derive(Debug)]
pub struct Open(Gauge);

impl Open {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Labels naming a housekeeping task.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub task: String,
}

/// Labels of a housekeeping run: its task and `succeeded` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskOutcomeLabels {
    pub task: String,
    pub outcome: String,
}

/// Labels of a finished generation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `complete`, `cancelled` or `failed`.
    pub outcome: String,
}

/// Labels naming an MCP server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub server: String,
}

type HistogramFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The generation of the live config; +1 per applied set.
    pub config_generation: Gauge,
    /// Config sets rejected by validation.
    pub config_reload_failures: Counter,
    /// Times the config directory was read (events, polls, start).
    pub config_reads: Counter,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_request_duration: HistogramFamily,
    /// Answers generated, by outcome.
    pub generations: Family<OutcomeLabels, Counter>,
    /// Time from asking the LLM to its first token.
    pub llm_first_token_seconds: Histogram,
    /// Tool lists fetched from MCP servers (cache misses).
    pub mcp_tool_list_fetches: Family<ServerLabels, Counter>,
    /// Tool calls made, by server.
    pub mcp_tool_calls: Family<ServerLabels, Counter>,
    /// Scheduled-job runs ended, by outcome (succeeded, failed, cancelled, skipped).
    pub job_runs: Family<OutcomeLabels, Counter>,
    /// Seconds from a firing's scheduled instant to its run being queued.
    pub job_schedule_delay_seconds: Histogram,
    /// Answers being generated now (set at each scrape).
    pub answers_running: Gauge,
    /// Clients following an answer's events (SSE and WebSocket).
    pub stream_followers: Gauge,
    /// The database pool's connections, in use and idle (set at each scrape).
    pub db_connections: Family<PoolLabels, Gauge>,
    /// Tokens the LLM reported, by endpoint and direction.
    pub llm_tokens: Family<TokenLabels, Counter>,
    /// Housekeeping runs, by task and outcome.
    pub maintenance_runs: Family<TaskOutcomeLabels, Counter>,
    /// How long each task's last run took.
    pub maintenance_duration_seconds: Family<TaskLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("promptops");
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "Generation of the live configuration, increased by one per applied config set",
            config_generation.clone(),
        );
        let config_reload_failures = Counter::default();
        registry.register(
            "config_reload_failures",
            "Config sets rejected by validation; the last good config stayed live",
            config_reload_failures.clone(),
        );
        let config_reads = Counter::default();
        registry.register(
            "config_reads",
            "Times the config directory was read: change events, polls and start",
            config_reads.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", http_requests.clone());
        let http_request_duration: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        registry.register(
            "http_request_duration_seconds",
            "Time from receiving a request to sending its response head",
            http_request_duration.clone(),
        );
        let generations = Family::<OutcomeLabels, Counter>::default();
        registry.register("generations", "Answers generated, by outcome", generations.clone());
        let llm_first_token_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "llm_first_token_seconds",
            "Time from sending a request to the LLM to its first token",
            llm_first_token_seconds.clone(),
        );
        let mcp_tool_list_fetches = Family::<ServerLabels, Counter>::default();
        registry.register(
            "mcp_tool_list_fetches",
            "Tool lists fetched from MCP servers (cache misses)",
            mcp_tool_list_fetches.clone(),
        );
        let mcp_tool_calls = Family::<ServerLabels, Counter>::default();
        registry.register("mcp_tool_calls", "Tool calls made, by MCP server", mcp_tool_calls.clone());
        let job_runs = Family::<OutcomeLabels, Counter>::default();
        registry.register("job_runs", "Scheduled-job runs ended, by outcome", job_runs.clone());
        let job_schedule_delay_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "job_schedule_delay_seconds",
            "Time from a firing's scheduled instant to its run being queued",
            job_schedule_delay_seconds.clone(),
        );
        let answers_running = Gauge::default();
        registry.register("answers_running", "Answers being generated now", answers_running.clone());
        let stream_followers = Gauge::default();
        registry.register(
            "stream_followers",
            "Clients following an answer's events, over SSE or WebSocket",
            stream_followers.clone(),
        );
        let db_connections = Family::<PoolLabels, Gauge>::default();
        registry.register("db_connections", "Database pool connections, in use and idle", db_connections.clone());
        let llm_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "llm_tokens",
            "Tokens the LLM reported, by endpoint and direction (in, out)",
            llm_tokens.clone(),
        );
        let maintenance_runs = Family::<TaskOutcomeLabels, Counter>::default();
        registry.register("maintenance_runs", "Housekeeping runs, by task and outcome", maintenance_runs.clone());
        let maintenance_duration_seconds = Family::<TaskLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "maintenance_duration_seconds",
            "How long each housekeeping task's last run took",
            maintenance_duration_seconds.clone(),
        );
        Self {
            registry,
            answers_running,
            stream_followers,
            db_connections,
            llm_tokens,
            maintenance_runs,
            maintenance_duration_seconds,
            job_runs,
            job_schedule_delay_seconds,
            mcp_tool_list_fetches,
            mcp_tool_calls,
            config_generation,
            config_reload_failures,
            config_reads,
            http_requests,
            http_request_duration,
            generations,
            llm_first_token_seconds,
        }
    }

    /// The registry in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
