//! The system endpoints: health, workers, metrics (and the middleware timing every request),
//! and the answers to unknown routes and methods.

use crate::error::{error_response, ApiError};
use crate::metrics::HttpLabels;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::time::Instant;
use testarena_core::api::{Health, Worker, WorkerList};
use testarena_core::limits::WORKER_ALIVE_MS;
use testarena_store::rfc3339;

#[utoipa::path(get, path = "/api/v1/health", tag = "system",
    responses((status = 200, description = "Server and database are up", body = Health),
              (status = 503, description = "Database unreachable", body = Health)))]
pub(crate) async fn health(State(s): State<AppState>) -> Response {
    let db_ok = s.store.ping().await.is_ok();
    let body = Health {
        status: if db_ok { "ok" } else { "degraded" }.into(),
        database: if db_ok { "ok" } else { "unreachable" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /api/v1/workers`: workers with a heartbeat in the last minute, their version, capacity
/// and labels, and what they run.
#[utoipa::path(get, path = "/api/v1/workers", tag = "system",
    responses((status = 200, description = "Workers with a heartbeat in the last minute", body = WorkerList)))]
pub(crate) async fn workers(State(s): State<AppState>) -> Result<Json<WorkerList>, ApiError> {
    let running = s.store.running_by_worker().await?;
    let workers = s
        .store
        .workers(WORKER_ALIVE_MS)
        .await?
        .into_iter()
        .map(|w| Worker {
            running: running.get(&w.id).cloned().unwrap_or_default(),
            started_at: rfc3339(w.started_at),
            heartbeat_at: rfc3339(w.heartbeat_at),
            id: w.id,
            hostname: w.hostname,
            pid: w.pid,
            concurrency: w.concurrency,
            version: w.version,
            labels: w.labels,
        })
        .collect();
    Ok(Json(WorkerList { workers }))
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(s): State<AppState>) -> Response {
    let Some(body) = s.metrics.export(&s.store, s.follows.counts()).await else {
        return ApiError::Internal("cannot encode metrics".into()).into_response();
    };
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// Middleware: times every request, labelled by its route pattern (not the raw path).
pub async fn track(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let labels = HttpLabels {
        method,
        route,
        status: resp.status().as_u16(),
    };
    s.metrics.http_request(labels, start.elapsed());
    resp
}

pub(crate) async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see README.md for the API".into(),
    )
}

pub(crate) async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint".into(),
    )
}
