//! `spawn_app()` and friends: a real promptops on a loopback port with its own temp
//! dir (SQLite file, config dir), plus a kubelet-style ConfigMap directory to swap.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use promptops::app::Application;
use promptops::auth::keys::Keyring;
use promptops::settings::{ControllerSettings, DatabaseSettings, SecuritySettings, ServeSettings, WebSettings};
use promptops::web::AppState;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::configmap::{KubeletDir, config_version, example_config, write_files};
pub use crate::mock_llm::{MockLlm, Script, words};

/// The password of the `admin` account every test app starts with.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

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
    /// `PROMPTOPS_ENCRYPTION_KEYS`; a fresh key when `None`.
    pub encryption_keys: Option<String>,
    pub public_url: Option<String>,
    pub session_ttl: Duration,
    pub client_ip_header: Option<String>,
    pub metrics_listen: bool,
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
            encryption_keys: None,
            public_url: None,
            session_ttl: Duration::from_secs(8 * 3600),
            client_ip_header: None,
            metrics_listen: false,
        }
    }
}

#[derive(Debug)]
pub struct TestApp {
    pub base: String,
    /// The separate metrics listener, when one was asked for.
    pub metrics_base: Option<String>,
    pub client: reqwest::Client,
    pub state: AppState,
    /// Fires due jobs by hand.
    pub scheduler: Arc<promptops::jobs::scheduler::Scheduler>,
    /// Delivers due deliveries by hand.
    pub deliverer: Arc<promptops::jobs::delivery::Deliverer>,
    /// Where Kubernetes jobs read Secrets (no cluster here: a test gives its own).
    pub credentials: Arc<promptops::jobs::Credentials>,
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub kubelet: Option<KubeletDir>,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
    _dir: TempDir,
}

/// The API key the test apps send to the mock LLM.
pub const LLM_KEY: &str = "test-llm-key-0123";

/// An app whose default endpoint is a fresh mock LLM.
pub async fn spawn_chat_app() -> (TestApp, MockLlm) {
    spawn_chat_app_with(AppOptions::default()).await
}

pub async fn spawn_chat_app_with(mut options: AppOptions) -> (TestApp, MockLlm) {
    let mock = MockLlm::start().await;
    options.env.insert("PROMPTOPS_LLM_BASE_URL".into(), mock.base.clone());
    options.env.insert("PROMPTOPS_LLM_API_KEY".into(), LLM_KEY.into());
    (spawn_app_with(options).await, mock)
}

/// The example config with `edit` applied to config.json.
pub fn edited_config(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<(&'static str, String)> {
    let mut files = example_config();
    let (_, content) = files.iter_mut().find(|(name, _)| *name == "config.json").unwrap();
    let mut config: serde_json::Value = serde_json::from_str(content).unwrap();
    edit(&mut config);
    *content = serde_json::to_string_pretty(&config).unwrap();
    files
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
        security: SecuritySettings {
            encryption_keys: Some(options.encryption_keys.clone().unwrap_or_else(|| Keyring::generate_spec("test"))),
            key_file: data_dir.join("encryption.key"),
            bcrypt_cost: 4,
        },
        web: WebSettings {
            public_url: options.public_url.as_deref().map(|u| u.parse().unwrap()),
            session_ttl: options.session_ttl,
            session_max_lifetime: Duration::from_secs(7 * 24 * 3600),
            client_ip_header: options.client_ip_header.clone(),
            metrics_listen: options.metrics_listen.then(|| "127.0.0.1:0".parse().unwrap()),
            bootstrap_admin_password: Some(ADMIN_PASSWORD.into()),
        },
        controller: ControllerSettings {
            controller: promptops::controller::Mode::Off,
            watch_namespace: Vec::new(),
            lease_namespace: None,
            lease_name: "promptops-controller".into(),
            lease_duration: Duration::from_secs(15),
            identity: None,
        },
    };
    let app = Application::build(&settings, Arc::new(options.env.clone())).await.unwrap();
    let addr = app.local_addr().unwrap();
    let metrics_base = app.metrics_addr().map(|a| format!("http://{a}"));
    let state = app.state().clone();
    let scheduler = app.scheduler();
    let deliverer = app.deliverer();
    let credentials = app.credentials();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run(shutdown.clone()));
    TestApp {
        base: format!("http://{addr}"),
        metrics_base,
        client: reqwest::Client::new(),
        state,
        scheduler,
        deliverer,
        credentials,
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

    /// A client with its own cookie jar, signed in through the API.
    pub async fn login(&self, username: &str, password: &str) -> Session {
        let client =
            reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let response = client
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&serde_json::json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "login of {username} failed: {}", response.text().await.unwrap());
        let cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.contains("promptops_session="))
            .unwrap();
        let body: serde_json::Value = response.json().await.unwrap();
        Session {
            base: self.base.clone(),
            client,
            csrf: body["csrf_token"].as_str().unwrap().to_owned(),
            set_cookie: cookie,
        }
    }

    pub async fn admin(&self) -> Session {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// Creates a user through the admin API and signs them in.
    pub async fn user(&self, name: &str) -> Session {
        let admin = self.admin().await;
        let password = format!("{name}-password-123");
        let response = admin
            .post("/api/v1/admin/users", &serde_json::json!({"username": name, "password": password, "role": "user"}))
            .await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        self.login(name, &password).await
    }

    /// Stops the app as SIGTERM would and returns what `run` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await.unwrap()
    }
}

/// A signed-in client: cookie jar plus the session's CSRF token.
#[derive(Debug)]
pub struct Session {
    pub base: String,
    pub client: reqwest::Client,
    pub csrf: String,
    /// The `Set-Cookie` header the login answered with.
    pub set_cookie: String,
}

impl Session {
    /// The cookie value (`name=value`) as a browser would send it back.
    pub fn cookie(&self) -> String {
        self.set_cookie.split(';').next().unwrap().to_owned()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.base)).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("x-csrf-token", &self.csrf)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn put(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .put(format!("{}{path}", self.base))
            .header("x-csrf-token", &self.csrf)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn patch(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .patch(format!("{}{path}", self.base))
            .header("x-csrf-token", &self.csrf)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client.delete(format!("{}{path}", self.base)).header("x-csrf-token", &self.csrf).send().await.unwrap()
    }

    /// A form post as a browser sends it, with the CSRF field.
    pub async fn form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut fields: Vec<(&str, &str)> = fields.to_vec();
        fields.push(("csrf_token", &self.csrf));
        self.client.post(format!("{}{path}", self.base)).form(&fields).send().await.unwrap()
    }

    pub async fn json(&self, path: &str) -> serde_json::Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }
}

/// One server-sent event as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub id: String,
    pub event: String,
    pub data: serde_json::Value,
}

impl Session {
    /// Creates a conversation and returns its id.
    pub async fn conversation(&self) -> i64 {
        let response = self.post("/api/v1/conversations", &serde_json::json!({})).await;
        assert_eq!(response.status(), 201);
        response.json::<serde_json::Value>().await.unwrap()["id"].as_i64().unwrap()
    }

    /// Sends a message; returns the id of the answer being generated.
    pub async fn send(&self, conversation: i64, content: &str) -> i64 {
        let response = self
            .post(&format!("/api/v1/conversations/{conversation}/messages"), &serde_json::json!({"content": content}))
            .await;
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
        response.json::<serde_json::Value>().await.unwrap()["message_id"].as_i64().unwrap()
    }

    /// Follows an answer's events (after `last_id`) until the stream ends.
    pub async fn events(&self, conversation: i64, message: i64, last_id: Option<u64>) -> Vec<Sse> {
        self.events_until(conversation, message, last_id, usize::MAX).await
    }

    /// Follows at most `limit` events, then hangs up.
    pub async fn events_until(&self, conversation: i64, message: i64, last_id: Option<u64>, limit: usize) -> Vec<Sse> {
        use eventsource_stream::Eventsource as _;
        use futures_util::StreamExt as _;
        let mut request =
            self.client.get(format!("{}/api/v1/conversations/{conversation}/messages/{message}/events", self.base));
        if let Some(last_id) = last_id {
            request = request.header("last-event-id", last_id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut stream = response.bytes_stream().eventsource();
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while events.len() < limit {
            let next = tokio::time::timeout_at(deadline, stream.next()).await.expect("events within 20 s");
            let Some(event) = next else { break };
            let event = event.unwrap();
            events.push(Sse { id: event.id, event: event.event, data: serde_json::from_str(&event.data).unwrap() });
        }
        events
    }

    /// The stored message.
    pub async fn message(&self, conversation: i64, message: i64) -> serde_json::Value {
        self.json(&format!("/api/v1/conversations/{conversation}/messages/{message}")).await
    }
}

/// The text of all `token` events.
pub fn text_of(events: &[Sse]) -> String {
    events.iter().filter(|e| e.event == "token").map(|e| e.data["text"].as_str().unwrap()).collect()
}
