//! `spawn_app()` and friends: a real promptops on a loopback port with its own temp
//! dir (SQLite file, config dir), plus a kubelet-style ConfigMap directory to swap.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use promptops::app::Application;
use promptops::settings::{DatabaseSettings, ServeSettings};
use promptops::web::AppState;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::configmap::{KubeletDir, config_version, example_config, write_files};

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = promptops::telemetry::init_logging(promptops::telemetry::LogFormat::Text, "debug,sqlx=warn");
    }
});

#[derive(Debug, Clone)]
pub enum Layout {
    /// The four files as plain files in the directory.
    Plain,
    /// A ConfigMap volume as kubelet writes it (`..data` symlink swap).
    Kubelet,
    /// No config directory at all at start.
    Missing,
}

#[derive(Debug, Clone)]
pub struct AppOptions {
    pub layout: Layout,
    pub files: Vec<(&'static str, String)>,
    pub env: HashMap<String, String>,
    pub skip_migrations: bool,
    pub poll_interval: Duration,
    /// Reuse the data folder of an earlier app (restart).
    pub data_dir: Option<PathBuf>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            layout: Layout::Plain,
            files: example_config(),
            env: HashMap::new(),
            skip_migrations: false,
            poll_interval: Duration::from_secs(30),
            data_dir: None,
        }
    }
}

#[derive(Debug)]
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub kubelet: Option<KubeletDir>,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
    _dir: TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    LazyLock::force(&TRACING);
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    let kubelet = match options.layout {
        Layout::Plain => {
            write_files(&config_dir, &options.files);
            None
        }
        Layout::Kubelet => Some(KubeletDir::create(&config_dir, &options.files)),
        Layout::Missing => None,
    };
    let data_dir = options.data_dir.clone().unwrap_or_else(|| dir.path().join("data"));
    let settings = ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: DatabaseSettings { database_url: format!("sqlite://{}", data_dir.join("promptops.db").display()) },
        config_dir: config_dir.clone(),
        skip_migrations: options.skip_migrations,
        config_debounce: Duration::from_millis(50),
        config_poll_interval: options.poll_interval,
        shutdown_timeout: Duration::from_secs(5),
    };
    let app = Application::build(&settings, Arc::new(options.env.clone())).await.unwrap();
    let addr = app.local_addr().unwrap();
    let state = app.state().clone();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run(shutdown.clone()));
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        state,
        config_dir,
        data_dir,
        kubelet,
        shutdown,
        handle,
        _dir: dir,
    }
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.base)).send().await.unwrap()
    }

    pub fn generation(&self) -> Option<u64> {
        self.state.config.current().map(|s| s.generation)
    }

    /// Waits until the live generation reaches `generation`; panics after `timeout`.
    pub async fn wait_for_generation(&self, generation: u64, timeout: Duration) -> Duration {
        let start = tokio::time::Instant::now();
        let mut changes = self.state.config.subscribe();
        loop {
            if self.generation() >= Some(generation) {
                return start.elapsed();
            }
            if tokio::time::timeout_at(start + timeout, changes.changed()).await.is_err() {
                panic!("generation {generation} not live after {timeout:?} (live: {:?})", self.generation());
            }
        }
    }

    /// Waits until the store reports a rejected set.
    pub async fn wait_for_rejection(&self, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(rejected) = self.state.config.last_rejected() {
                return rejected.error;
            }
            assert!(tokio::time::Instant::now() < deadline, "no rejection within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A metric's value from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("metric {name} not exposed in:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Stops the app as SIGTERM would and returns what `run` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await.unwrap()
    }
}
