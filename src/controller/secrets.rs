//! What the reconcilers know about Secrets, learnt with `get` alone: the controller may not
//! list or watch Secrets (that would let it read every one in a namespace), so it asks by
//! name. However many jobs name a Secret, its key names are fetched at most once per
//! [`FRESH`]; a Secret a job waits for is asked for again every second for its first
//! minute of absence and every 30 s after that, and the moment it appears (or changes) its
//! waiting jobs are told, instead of each job looking again on its own timer.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How long a fetched Secret's key names answer for it.
pub const FRESH: Duration = Duration::from_secs(1);
/// How often a missing Secret is asked for while it is newly missing …
const EAGER: Duration = Duration::from_secs(1);
/// … for this long, and then every `PATIENT`.
const EAGER_FOR: Duration = Duration::from_secs(60);
const PATIENT: Duration = Duration::from_secs(30);

/// A Secret by namespace and name.
pub type SecretName = (String, String);

/// Key names of a Secret (never its values), `None` when it does not exist.
type Keys = Option<BTreeSet<String>>;

struct Fetched {
    at: Instant,
    keys: Keys,
}

/// A Secret some job waits for: since when, what it held then, when it was last asked for.
struct Waiting {
    since: Instant,
    seen: Keys,
    asked: Instant,
}

pub struct SecretKeys {
    client: Client,
    /// One slot per Secret; its lock makes concurrent askers wait for one fetch.
    fetched: Mutex<HashMap<SecretName, Arc<tokio::sync::Mutex<Option<Fetched>>>>>,
    waiting: Mutex<HashMap<SecretName, Waiting>>,
    appeared: broadcast::Sender<SecretName>,
}

impl SecretKeys {
    pub fn new(client: Client) -> Self {
        Self { client, fetched: Mutex::default(), waiting: Mutex::default(), appeared: broadcast::channel(256).0 }
    }

    /// Whether Secret `name` in `namespace` has `key`. When it does not, the Secret is
    /// watched by name until it changes.
    pub async fn has_key(&self, namespace: &str, name: &str, key: &str) -> Result<bool, kube::Error> {
        let secret = (namespace.to_owned(), name.to_owned());
        let keys = self.keys(&secret, FRESH).await?;
        let has = keys.as_ref().is_some_and(|keys| keys.contains(key));
        if !has {
            let now = Instant::now();
            lock(&self.waiting).entry(secret).or_insert(Waiting { since: now, seen: keys, asked: now });
        }
        Ok(has)
    }

    /// Secrets that appeared or changed while some job waited for them.
    pub fn subscribe(&self) -> broadcast::Receiver<SecretName> {
        self.appeared.subscribe()
    }

    /// Asks for the waited-for Secrets that are due, once a second, until `stop`.
    pub async fn poll(&self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(EAGER);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            for secret in self.poll_once(Instant::now()).await {
                let _no_listener = self.appeared.send(secret);
            }
        }
    }

    /// One round: the due Secrets asked for afresh; those that changed since they were
    /// first waited for leave the waiting list and are returned.
    pub async fn poll_once(&self, now: Instant) -> Vec<SecretName> {
        let due: Vec<(SecretName, Keys)> = lock(&self.waiting)
            .iter_mut()
            .filter(|(_, w)| {
                let every = if now.saturating_duration_since(w.since) < EAGER_FOR { EAGER } else { PATIENT };
                now.saturating_duration_since(w.asked) + Duration::from_millis(50) >= every
            })
            .map(|(secret, w)| {
                w.asked = now;
                (secret.clone(), w.seen.clone())
            })
            .collect();
        let mut changed = Vec::new();
        for (secret, before) in due {
            let keys = match self.keys(&secret, Duration::ZERO).await {
                Ok(keys) => keys,
                Err(e) => {
                    tracing::debug!(namespace = secret.0, name = secret.1, error = %e, "cannot look for a Secret");
                    continue;
                }
            };
            if keys != before {
                lock(&self.waiting).remove(&secret);
                changed.push(secret);
            }
        }
        changed
    }

    fn slot(&self, secret: &SecretName) -> Arc<tokio::sync::Mutex<Option<Fetched>>> {
        lock(&self.fetched).entry(secret.clone()).or_default().clone()
    }

    /// The key names, from a fetch younger than `fresh` or from a new one.
    async fn keys(&self, secret: &SecretName, fresh: Duration) -> Result<Keys, kube::Error> {
        let slot = self.slot(secret);
        let mut slot = slot.lock().await;
        if let Some(fetched) = slot.as_ref().filter(|f| !fresh.is_zero() && f.at.elapsed() < fresh) {
            return Ok(fetched.keys.clone());
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &secret.0);
        let found = secrets.get_opt(&secret.1).await?;
        let keys = found.map(|s| s.data.unwrap_or_default().into_keys().collect());
        *slot = Some(Fetched { at: Instant::now(), keys: keys.clone() });
        Ok(keys)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
