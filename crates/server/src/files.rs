//! A queue's files over HTTP: its log (plain, or streamed live as SSE), its cases' logs, its
//! JUnit report and an archive of everything.

use crate::error::ApiError;
use crate::handlers::id_from_path;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::Duration;
use testarena_core::api::ErrorBody;
use testarena_core::paths::{case_log, queue_dir, task_dir};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Most bytes one read of a log returns.
const LOG_CHUNK: u64 = 1024 * 1024;
/// How often a live log stream looks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);

async fn read_from(path: &std::path::Path, offset: u64, max: u64) -> Result<Vec<u8>, ApiError> {
    let mut data = Vec::new();
    match tokio::fs::File::open(path).await {
        Ok(mut f) => {
            f.seek(SeekFrom::Start(offset))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            f.take(max)
                .read_to_end(&mut data)
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    }
    Ok(data)
}

fn text_response(data: Vec<u8>, content_type: &'static str) -> Response {
    let mut resp = Response::new(Body::from(data));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[derive(Debug, Deserialize)]
pub(crate) struct OffsetParams {
    offset: Option<u64>,
}

/// `GET /api/v1/queues/{id}/log?offset=N`: the queue log from byte N (at most 1 MiB), with
/// `X-Next-Offset` saying where to continue; poll it to follow a running queue.
#[utoipa::path(get, path = "/api/v1/queues/{id}/log", tag = "logs",
    params(("id" = i64, Path, description = "Queue id"), ("offset" = Option<u64>, Query, description = "Byte offset to read from")),
    responses((status = 200, description = "Up to 1 MiB of queue.log from the offset; X-Next-Offset tells where to continue", content_type = "text/plain", body = String), (status = 404, description = "No such queue", body = ErrorBody)))]
pub(crate) async fn queue_log(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    params: Result<Query<OffsetParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = id_from_path(&raw)?;
    let Query(p) = params?;
    let q = s.store.queue(id).await?;
    let offset = p.offset.unwrap_or(0);
    let data = read_from(
        &queue_dir(&s.config.data_dir, id).join("queue.log"),
        offset,
        LOG_CHUNK,
    )
    .await?;
    let next = offset + data.len() as u64;
    let mut resp = text_response(data, "text/plain; charset=utf-8");
    let h = resp.headers_mut();
    h.insert("x-next-offset", HeaderValue::from(next));
    h.insert(
        "x-queue-status",
        HeaderValue::from_static(q.queue.status.as_str()),
    );
    Ok(resp)
}

/// `GET /api/v1/queues/{id}/log/stream?offset=N` (SSE): `log` events carrying complete lines,
/// each with the byte offset after it as its id, so `Last-Event-ID` resumes without loss or
/// duplicates; an `end` event once the queue finished and everything was sent.
#[utoipa::path(get, path = "/api/v1/queues/{id}/log/stream", tag = "logs",
    params(("id" = i64, Path, description = "Queue id"), ("offset" = Option<u64>, Query, description = "Byte offset to start from (Last-Event-ID wins)"),
           ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this offset")),
    responses((status = 200, description = "SSE: `log` events with complete lines (id = offset after them), `end` when finished", content_type = "text/event-stream", body = String), (status = 404, description = "No such queue", body = ErrorBody)))]
pub(crate) async fn queue_log_stream(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    params: Result<Query<OffsetParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = id_from_path(&raw)?;
    let Query(p) = params?;
    s.store.queue(id).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let offset = resume.or(p.offset).unwrap_or(0);
    let path = queue_dir(&s.config.data_dir, id).join("queue.log");
    let store = s.store.clone();
    let stream = futures::stream::unfold(Some(offset), move |state| {
        let path = path.clone();
        let store = store.clone();
        async move {
            let mut offset = state?;
            loop {
                let finished = match store.queue(id).await {
                    Ok(q) => q.queue.status.is_finished(),
                    Err(_) => true,
                };
                let data = read_from(&path, offset, LOG_CHUNK)
                    .await
                    .unwrap_or_default();
                // Only whole lines: a resumed stream then starts at a line boundary.
                let whole = data
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map(|i| i + 1)
                    .unwrap_or(0);
                if whole > 0 {
                    offset += whole as u64;
                    let text = String::from_utf8_lossy(&data[..whole]);
                    let event = Event::default()
                        .event("log")
                        .id(offset.to_string())
                        .data(text.trim_end_matches('\n'));
                    return Some((Ok::<_, std::convert::Infallible>(event), Some(offset)));
                }
                if finished {
                    let event = Event::default()
                        .event("end")
                        .id(offset.to_string())
                        .data("{}");
                    return Some((Ok(event), None));
                }
                tokio::time::sleep(FOLLOW_EVERY).await;
            }
        }
    });
    let stream = futures::StreamExt::take_until(stream, s.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct CaseParams {
    task: Option<i64>,
}

async fn find_case_log(
    s: &AppState,
    raw: &str,
    case: &str,
    task: Option<i64>,
) -> Result<PathBuf, ApiError> {
    let id = id_from_path(raw)?;
    let q = s.store.queue(id).await?;
    let dir = queue_dir(&s.config.data_dir, id);
    for (t, cases) in &q.tasks {
        if task.is_some_and(|want| want != t.id) {
            continue;
        }
        if cases.iter().any(|c| c.key == case) {
            return Ok(case_log(&task_dir(&dir, t.position, &t.scenario), case));
        }
    }
    Err(ApiError::NotFound(format!(
        "queue {id} has no case '{case}'"
    )))
}

/// `GET /api/v1/queues/{id}/cases/{case}/log[?task=T]`: a case's plain-text log.
#[utoipa::path(get, path = "/api/v1/queues/{id}/cases/{case}/log", tag = "logs",
    params(("id" = i64, Path, description = "Queue id"), ("case" = String, Path, description = "Test case id"), ("task" = Option<i64>, Query, description = "Task id, when two scenarios share a case id")),
    responses((status = 200, description = "The case's log", content_type = "text/plain", body = String), (status = 404, description = "No such queue", body = ErrorBody)))]
pub(crate) async fn case_log_text(
    State(s): State<AppState>,
    Path((raw, case)): Path<(String, String)>,
    params: Result<Query<CaseParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let path = find_case_log(&s, &raw, &case, p.task).await?;
    // Streamed: a case log can be hundreds of MB.
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(text_response(Vec::new(), "text/plain; charset=utf-8"))
        }
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    };
    let mut resp = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(file)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

/// `GET /api/v1/queues/{id}/cases/{case}/log.html[?task=T]`: a case's HTML log.
#[utoipa::path(get, path = "/api/v1/queues/{id}/cases/{case}/log.html", tag = "logs",
    params(("id" = i64, Path, description = "Queue id"), ("case" = String, Path, description = "Test case id"), ("task" = Option<i64>, Query, description = "Task id, when two scenarios share a case id")),
    responses((status = 200, description = "The case's log as a self-contained HTML page", content_type = "text/html", body = String), (status = 404, description = "No such queue", body = ErrorBody)))]
pub(crate) async fn case_log_html(
    State(s): State<AppState>,
    Path((raw, case)): Path<(String, String)>,
    params: Result<Query<CaseParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let path = find_case_log(&s, &raw, &case, p.task)
        .await?
        .with_extension("html");
    match tokio::fs::read(&path).await {
        Ok(data) => Ok(text_response(data, "text/html; charset=utf-8")),
        Err(_) => Err(ApiError::NotFound(format!(
            "case '{case}' has no HTML log yet (it is written when the case ends)"
        ))),
    }
}

/// `GET /api/v1/queues/{id}/junit.xml`.
#[utoipa::path(get, path = "/api/v1/queues/{id}/junit.xml", tag = "logs", params(("id" = i64, Path, description = "Queue id")),
    responses((status = 200, description = "JUnit XML: one testsuite per scenario", content_type = "application/xml", body = String), (status = 404, description = "No such queue", body = ErrorBody)))]
pub(crate) async fn junit(
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = id_from_path(&raw)?;
    s.store.queue(id).await?;
    match tokio::fs::read(queue_dir(&s.config.data_dir, id).join("junit.xml")).await {
        Ok(data) => Ok(text_response(data, "application/xml; charset=utf-8")),
        Err(_) => Err(ApiError::NotFound(format!(
            "queue {id} has no junit.xml yet (it is written when the queue ends)"
        ))),
    }
}

/// `GET /api/v1/queues/{id}/archive`: a tar.gz of the queue's logs and reports (not the checkout).
#[utoipa::path(get, path = "/api/v1/queues/{id}/archive", tag = "logs", params(("id" = i64, Path, description = "Queue id")),
    responses((status = 200, description = "tar.gz of the queue's logs and reports", content_type = "application/gzip", body = Vec<u8>), (status = 404, description = "No such queue", body = ErrorBody)))]
pub(crate) async fn archive(
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = id_from_path(&raw)?;
    s.store.queue(id).await?;
    let dir = queue_dir(&s.config.data_dir, id);
    let file = tokio::task::spawn_blocking(move || build_archive(&dir, id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("cannot build the archive: {e}")))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(file),
    ));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"testarena-queue-{id}.tar.gz\""
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

fn build_archive(dir: &std::path::Path, id: i64) -> std::io::Result<std::fs::File> {
    use std::io::{Seek, Write};
    let mut file = tempfile::tempfile()?;
    {
        let gz = flate2::write::GzEncoder::new(&mut file, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let prefix = PathBuf::from(format!("queue-{id}"));
        if dir.is_dir() {
            for entry in std::fs::read_dir(dir)?.flatten() {
                let name = entry.file_name();
                // The checkout can be large and is in git already.
                if name == "work" {
                    continue;
                }
                let path = entry.path();
                if path.is_dir() {
                    tar.append_dir_all(prefix.join(&name), &path)?;
                } else if path.is_file() {
                    tar.append_path_with_name(&path, prefix.join(&name))?;
                }
            }
        }
        let mut gz = tar.into_inner()?;
        gz.flush()?;
        gz.finish()?;
    }
    file.rewind()?;
    Ok(file)
}
