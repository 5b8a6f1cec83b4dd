//! The HTTP side of TestArena: the REST API, live logs and the dashboard. It never starts a
//! child process; the worker does that.

mod assets;
pub mod conn;
mod error;
mod events;
mod files;
mod gitea;
mod handlers;
pub mod metrics;
pub mod openapi;

pub use conn::Limits;
pub use error::ApiError;
pub use events::QueueEvent;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use testarena_store::Store;
use tokio::sync::Notify;
use tower_http::trace::TraceLayer;

/// Largest request body the API accepts, in bytes.
pub const BODY_LIMIT: usize = 256 * 1024;

/// What the server needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where queue files live (`<data>/queues/<id>/`).
    pub data_dir: PathBuf,
    /// Roots local repositories may live under.
    pub allowed_roots: Vec<PathBuf>,
    /// Hosts remote repositories may live on (patterns such as `*.corp.example`); empty: any.
    pub allowed_hosts: Vec<String>,
    /// Gitea webhook settings, if configured.
    pub gitea: Option<testarena_core::gitea::GiteaConfig>,
    /// Connection limits and timeouts.
    pub limits: Limits,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<ServerConfig>,
    /// Signalled when a queue is created, so an in-process worker wakes at once.
    pub new_work: Arc<Notify>,
    /// Queue changes for `/api/v1/events` subscribers.
    pub events: tokio::sync::broadcast::Sender<QueueEvent>,
    /// Makes the change poller look at once (after this server changed something).
    pub poke: Arc<Notify>,
    /// Prometheus metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Cancelled when the server shuts down, so endless streams (SSE) end and let it stop.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl AppState {
    /// State for a server on `store`; `new_work` is shared with an in-process worker, if any.
    pub fn new(store: Store, config: ServerConfig, new_work: Arc<Notify>) -> AppState {
        let (events, _) = tokio::sync::broadcast::channel(4096);
        AppState {
            store,
            config: Arc::new(config),
            new_work,
            events,
            poke: Arc::new(Notify::new()),
            metrics: Arc::new(metrics::Metrics::new()),
            shutdown: tokio_util::sync::CancellationToken::new(),
        }
    }
}

pub use testarena_core::paths::queue_dir;

/// The whole router: API, dashboard and JSON fallbacks.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(handlers::health))
        .route(
            "/queues",
            post(handlers::create_queue).get(handlers::list_queues),
        )
        .route(
            "/queues/{id}",
            get(handlers::get_queue).delete(handlers::delete_queue),
        )
        .route("/queues/{id}/abort", post(handlers::abort_queue))
        .route("/queues/{id}/rerun", post(handlers::rerun_queue))
        .route("/queues/{id}/tasks/{task}/cases", get(handlers::task_cases))
        .route("/queues/{id}/log", get(files::queue_log))
        .route("/queues/{id}/log/stream", get(files::queue_log_stream))
        .route("/queues/{id}/cases/{case}/log", get(files::case_log_text))
        .route(
            "/queues/{id}/cases/{case}/log.html",
            get(files::case_log_html),
        )
        .route("/queues/{id}/junit.xml", get(files::junit))
        .route("/queues/{id}/archive", get(files::archive))
        .route("/workers", get(handlers::workers))
        .route("/hooks/gitea", post(gitea::hook))
        .route("/events", get(events::events))
        .fallback(handlers::not_found);
    Router::new()
        .nest("/api/v1", api)
        .route("/", get(assets::index))
        .route("/assets/{name}", get(assets::file))
        .route("/metrics", get(metrics::metrics))
        .route("/api/openapi.json", get(openapi::spec))
        .route("/api/docs", get(openapi::docs))
        .route("/api/docs/swagger-ui-bundle.js", get(openapi::docs_js))
        .route("/api/docs/swagger-ui.css", get(openapi::docs_css))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Every error answer of the layers below, whoever made it, in the API's JSON shape.
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(axum::middleware::from_fn(error::limit_uri))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The answer to a request whose handler panicked.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    error::error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; see the server log".into(),
    )
}

/// Binds `listen` and serves until `shutdown` completes; in-flight requests finish first.
pub async fn serve(
    state: AppState,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    serve_on(state, listener, shutdown).await
}

/// Serves on an already-bound listener (port 0 in tests) until `shutdown` completes.
pub async fn serve_on(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let poller = tokio::spawn(events::poll_changes(
        state.store.clone(),
        state.events.clone(),
        state.poke.clone(),
        state.metrics.clone(),
    ));
    let streams = state.shutdown.clone();
    let limits = state.config.limits.clone();
    let metrics = state.metrics.clone();
    // Graceful shutdown waits for every open connection: end the live streams first.
    let result = conn::serve(
        listener,
        router(state),
        limits,
        metrics,
        shutdown,
        move || streams.cancel(),
    )
    .await;
    poller.abort();
    result
}

/// Status code for use in tests and handlers.
pub(crate) const CREATED: StatusCode = StatusCode::CREATED;

#[cfg(test)]
mod tests;
