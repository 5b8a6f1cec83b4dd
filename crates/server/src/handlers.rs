//! Request handlers. Each checks its input, calls the store, and shapes the answer.

use crate::error::{error_response, ApiError};
use crate::{queue_dir, AppState, CREATED};
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::io::SeekFrom;
use testarena_core::api::{Health, Queue, QueueList};
use testarena_core::{parse_id, NewQueue, QueueStatus};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Most bytes one `GET .../log` answer carries.
const LOG_CHUNK: u64 = 1024 * 1024;

fn id_from_path(raw: &str) -> Result<i64, ApiError> {
    parse_id(raw).ok_or_else(|| {
        ApiError::NotFound(format!(
            "queue '{raw}' not found (ids are positive numbers)"
        ))
    })
}

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

pub(crate) async fn create_queue(
    State(s): State<AppState>,
    body: Result<Json<NewQueue>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(new) = body?;
    let valid = new.validate(&s.config.allowed_roots)?;
    let created = s.store.create_queue(&valid).await?.to_api();
    s.new_work.notify_waiters();
    let location = format!("/api/v1/queues/{}", created.id);
    let mut resp = (CREATED, Json(created)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    status: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

pub(crate) async fn list_queues(
    State(s): State<AppState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<QueueList>, ApiError> {
    let Query(p) = params?;
    let bad = |message: String| ApiError::BadRequest {
        code: "bad_query",
        message,
    };
    let status = match p.status.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => Some(
            raw.parse::<QueueStatus>()
                .map_err(|e| bad(format!("status: {e}")))?,
        ),
        None => None,
    };
    let limit = match p.limit.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=500).contains(&n) => n,
            _ => {
                return Err(bad(format!(
                    "limit: must be a number from 1 to 500, got '{raw}'"
                )))
            }
        },
        None => 50,
    };
    let before = match p.before.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => Some(
            parse_id(raw).ok_or_else(|| bad(format!("before: must be a queue id, got '{raw}'")))?,
        ),
        None => None,
    };
    let (page, next) = s.store.list_queues(status, limit, before).await?;
    Ok(Json(QueueList {
        queues: page.iter().map(|q| q.to_api()).collect(),
        next,
    }))
}

pub(crate) async fn get_queue(
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Queue>, ApiError> {
    let id = id_from_path(&raw)?;
    Ok(Json(s.store.queue(id).await?.to_api()))
}

pub(crate) async fn abort_queue(
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Queue>, ApiError> {
    let id = id_from_path(&raw)?;
    Ok(Json(s.store.abort_queue(id).await?.to_api()))
}

pub(crate) async fn delete_queue(
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = id_from_path(&raw)?;
    s.store.delete_queue(id).await?;
    let dir = queue_dir(&s.config.data_dir, id);
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(queue = id, error = %e, dir = %dir.display(), "could not remove queue files")
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub(crate) struct LogParams {
    offset: Option<u64>,
}

/// `GET /api/v1/queues/{id}/log?offset=N`: the queue log from byte N (at most 1 MiB), with
/// `X-Next-Offset` telling where to continue; poll it to follow a running queue.
pub(crate) async fn queue_log(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    params: Result<Query<LogParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = id_from_path(&raw)?;
    let Query(p) = params?;
    let q = s.store.queue(id).await?;
    let offset = p.offset.unwrap_or(0);
    let path = queue_dir(&s.config.data_dir, id).join("queue.log");
    let mut data = Vec::new();
    match tokio::fs::File::open(&path).await {
        Ok(mut f) => {
            f.seek(SeekFrom::Start(offset))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            f.take(LOG_CHUNK)
                .read_to_end(&mut data)
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    }
    let next = offset + data.len() as u64;
    let mut resp = Response::new(Body::from(data));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("x-next-offset", HeaderValue::from(next));
    h.insert(
        "x-queue-status",
        HeaderValue::from_static(q.queue.status.as_str()),
    );
    Ok(resp)
}

pub(crate) async fn dashboard() -> Html<&'static str> {
    Html(include_str!("../assets/placeholder.html"))
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
