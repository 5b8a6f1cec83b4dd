//! What every handler shares: the server's configuration and its state.

use crate::changes::QueueEvent;
use crate::conn::Limits;
use crate::follow::LogFollows;
use crate::metrics::Metrics;
use std::path::PathBuf;
use std::sync::Arc;
use testarena_store::Store;
use tokio::sync::{broadcast, watch, Notify};

/// What the server needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where queue files live (`<data>/queues/<id>/`).
    pub data_dir: PathBuf,
    /// Roots local repositories may live under.
    pub allowed_roots: Vec<PathBuf>,
    /// Hosts remote repositories may live on (patterns such as `*.corp.example`); empty: any.
    pub allowed_hosts: Vec<String>,
    /// Gitea webhook and commit status settings, if configured.
    pub gitea: Option<crate::gitea::GiteaConfig>,
    /// Connection limits and timeouts.
    pub limits: Limits,
    /// Whether (and how) callers are checked.
    pub auth: crate::access::AuthConfig,
}

/// Shared state of every handler: one `Arc`, because axum clones the state for every
/// extractor and layer of every request, and cloning each field (a dozen reference counts, the
/// cancellation token's lock) was ~6% of the server's CPU for `GET /api/v1/queues/{id}`
/// (bench/NOTES.md, issue 14 goal 4).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub store: Store,
    pub config: Arc<ServerConfig>,
    /// Signalled when a queue is created, so an in-process worker wakes at once.
    pub new_work: Arc<Notify>,
    /// Queue changes for `/api/v1/events` subscribers, live logs and the metrics.
    pub events: broadcast::Sender<QueueEvent>,
    /// The change counter as last seen by the change poller: changes whenever the database did.
    pub rev: watch::Sender<i64>,
    /// Makes the change poller look at once (after this server changed something).
    pub poke: Arc<Notify>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The queue logs being followed live, one watch per log whatever the viewers.
    pub follows: Arc<LogFollows>,
    /// Cancelled when the server shuts down, so endless streams (SSE) end and let it stop.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// When this process last recorded each token's use.
    pub(crate) last_used: Arc<crate::access::LastUsed>,
}

impl AppState {
    /// State for a server on `store`; `new_work` is shared with an in-process worker, if any.
    pub fn new(store: Store, config: ServerConfig, new_work: Arc<Notify>) -> AppState {
        let (events, _) = broadcast::channel(4096);
        AppState(Arc::new(Shared {
            store,
            config: Arc::new(config),
            new_work,
            events,
            rev: watch::Sender::new(0),
            poke: Arc::new(Notify::new()),
            metrics: Arc::new(Metrics::new()),
            follows: Arc::new(LogFollows::default()),
            shutdown: tokio_util::sync::CancellationToken::new(),
            last_used: Arc::default(),
        }))
    }

    /// Tells the worker (if in this process) and the change poller that something changed.
    pub(crate) fn changed(&self, new_work: bool) {
        if new_work {
            self.new_work.notify_waiters();
        }
        self.poke.notify_one();
    }
}
