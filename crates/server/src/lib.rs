//! The HTTP side of TestArena: the REST API, live logs and the dashboard. It never starts a
//! child process; the worker does that.

mod access;
mod archive;
mod assets;
mod auth;
mod bisects;
mod caller_key;
mod case_logs;
mod changes;
pub mod conn;
mod error;
mod events;
mod files;
mod follow;
pub mod gitea;
mod handlers;
mod history;
mod idempotency;
pub mod metrics;
pub mod openapi;
mod path;
pub mod ratelimit;
mod repro;
mod session;
mod state;
mod stored;
mod system;
mod view;

pub use archive::export_queue;
pub use auth::{AuthConfig, AuthMode, Caller, Scope, CSRF_HEADER, SESSION_COOKIE};
pub use changes::QueueEvent;
pub use conn::Limits;
pub use error::ApiError;
pub use path::QueueId;
pub use ratelimit::Rate;
pub use state::{AppState, ServerConfig};
pub use view::queue as api_queue;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tower_http::trace::TraceLayer;

/// Largest request body the API accepts, in bytes.
pub const BODY_LIMIT: usize = 256 * 1024;

/// The whole router: API, dashboard and JSON fallbacks.
pub fn router(state: AppState) -> Router {
    let limits = &state.config.limits;
    let rate_limits = Arc::new(ratelimit::RateLimits::new(
        limits.submit_rate,
        limits.archive_rate,
    ));
    let api = Router::new()
        .route("/health", get(system::health))
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
        .route("/queues/{id}/cases/{case}/repro", get(repro::repro))
        .route("/queues/{id}/junit.xml", get(files::junit))
        .route("/queues/{id}/archive", get(archive::archive))
        .route("/history", get(history::case_history))
        .route("/queues/{id}/history", get(history::queue_history))
        .route(
            "/queues/{id}/compare/previous",
            get(history::compare_previous),
        )
        .route("/queues/{id}/compare/{other}", get(history::compare))
        .route("/workers", get(system::workers))
        .route(
            "/bisects",
            post(bisects::create_bisect).get(bisects::list_bisects),
        )
        .route("/bisects/{id}", get(bisects::get_bisect))
        .route("/bisects/{id}/abort", post(bisects::abort_bisect))
        .route("/hooks/gitea", post(gitea::webhook::hook))
        .route("/events", get(events::events))
        .route(
            "/session",
            post(session::sign_in)
                .get(session::session)
                .delete(session::sign_out),
        )
        .fallback(system::not_found);
    Router::new()
        .nest("/api/v1", api)
        .route("/", get(assets::index))
        .route("/assets/{name}", get(assets::file))
        .route("/metrics", get(system::metrics))
        .route("/api/openapi.json", get(openapi::spec))
        .route("/api/docs", get(openapi::docs))
        .route("/api/docs/swagger-ui-bundle.js", get(openapi::docs_js))
        .route("/api/docs/swagger-ui.css", get(openapi::docs_css))
        .route_layer(axum::middleware::from_fn_with_state(
            rate_limits,
            ratelimit::limit,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            system::track,
        ))
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        // Who is calling, and may they: before routing, so no handler runs unchecked.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
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
    // Where the change poller starts, read before the first request is served: a queue
    // created by a request must come after it, or its change would never be sent.
    let start = state.store.current_rev().await.ok();
    let background = spawn_background_from(&state, start);
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
    for task in background {
        task.abort();
    }
    result
}

/// Starts what runs beside the handlers, once per server process: the change poller and its
/// fan-out, the live log watcher, and the Gitea reporter when `[gitea]` has a URL and token.
pub fn spawn_background(state: &AppState) -> Vec<JoinHandle<()>> {
    spawn_background_from(state, None)
}

/// [`spawn_background`], with the change poller starting after change `start` (if known).
fn spawn_background_from(state: &AppState, start: Option<i64>) -> Vec<JoinHandle<()>> {
    let fanout = changes::Fanout {
        store: state.store.clone(),
        events: state.events.clone(),
        rev: state.rev.clone(),
        poke: state.poke.clone(),
        metrics: state.metrics.clone(),
    };
    let mut tasks = vec![
        tokio::spawn(fanout.run(start)),
        tokio::spawn(
            state
                .follows
                .clone()
                .run(state.events.subscribe(), state.store.clone()),
        ),
    ];
    let reporter = state
        .config
        .gitea
        .as_ref()
        .and_then(|g| gitea::Reporter::from_config(g, state.store.clone()));
    if let Some(reporter) = reporter {
        tracing::info!("reporting commit statuses to Gitea");
        let rev = state.rev.subscribe();
        tasks.push(tokio::spawn(reporter.run(rev, state.shutdown.clone())));
    }
    tasks
}

#[cfg(test)]
mod tests;
