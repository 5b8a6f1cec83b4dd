//! A queue's files over HTTP: its log (plain, or streamed live as SSE), its cases' logs and
//! pages (made from the queue log on request) and its JUnit report.

use crate::case_logs::{self, QUEUE_LOG};
use crate::error::ApiError;
use crate::follow::Tail;
use crate::path::{CaseKey, QueueId};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::time::Duration;
use testarena_core::api::ErrorBody;
use testarena_core::limits::LOG_CHUNK;
use testarena_store::FoundCase;
use tokio::sync::watch;

/// Largest offset a log may be read from (offsets are signed 64-bit in the database).
const MAX_OFFSET: u64 = i64::MAX as u64;

/// Up to `max` bytes of queue `id`'s file `name` from `offset`; nothing past its end.
async fn read_from(
    s: &AppState,
    id: i64,
    name: &str,
    offset: u64,
    max: u64,
) -> Result<Vec<u8>, ApiError> {
    Ok(s.store.read_file(id, name, offset, max).await?)
}

/// Bytes `range` of file `name` of queue `id`, streamed from the database a piece at a time (a
/// case log can be hundreds of MB).
fn range_body(s: &AppState, id: i64, name: String, range: std::ops::Range<u64>) -> Body {
    let store = s.store.clone();
    let end = range.end;
    let pieces = futures::stream::unfold(Some(range.start), move |at| {
        let (store, name) = (store.clone(), name.clone());
        async move {
            let at = at?;
            let want = LOG_CHUNK.min(end.saturating_sub(at));
            if want == 0 {
                return None;
            }
            match store.read_file(id, &name, at, want).await {
                Ok(data) if data.is_empty() => None,
                Ok(data) => {
                    let next = at + data.len() as u64;
                    Some((
                        Ok::<_, std::io::Error>(axum::body::Bytes::from(data)),
                        Some(next),
                    ))
                }
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        }
    });
    Body::from_stream(pieces)
}

/// An offset asked for: at most [`MAX_OFFSET`], else `400 bad_query`.
fn check_offset(what: &str, offset: u64) -> Result<u64, ApiError> {
    if offset > MAX_OFFSET {
        return Err(ApiError::BadRequest {
            code: "bad_query",
            message: format!("{what}: must be at most {MAX_OFFSET}, got {offset}"),
        });
    }
    Ok(offset)
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
    params(crate::path::QueueIdParam, ("offset" = Option<u64>, Query, minimum = 0, maximum = 9_223_372_036_854_775_807_i64, description = "Byte offset to read from, 0..=2^63-1; default 0")),
    responses((status = 200, description = "Up to 1 MiB of queue.log from the offset (nothing past the end); X-Next-Offset tells where to continue", content_type = "text/plain", body = String,
               headers(("X-Next-Offset" = u64, description = "The offset to ask for next: the given one plus the bytes sent"),
                       ("X-Queue-Status" = testarena_core::QueueStatus, description = "The queue's status when the log was read: poll again while it is waiting or running"))),
              (status = 400, description = "Offset empty, not a number or above 2^63-1 (`bad_query`)", body = ErrorBody),
              (status = 404, description = "No such queue", body = ErrorBody)))]
pub(crate) async fn queue_log(
    State(s): State<AppState>,
    QueueId(id): QueueId,
    params: Result<Query<OffsetParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let offset = check_offset("offset", p.offset.unwrap_or(0))?;
    let q = s.store.queue_row(id).await?;
    let data = read_from(&s, id, QUEUE_LOG, offset, LOG_CHUNK).await?;
    let next = offset + data.len() as u64;
    let mut resp = text_response(data, "text/plain; charset=utf-8");
    let h = resp.headers_mut();
    h.insert("x-next-offset", HeaderValue::from(next));
    h.insert(
        "x-queue-status",
        HeaderValue::from_static(q.status.as_str()),
    );
    Ok(resp)
}

/// `GET /api/v1/queues/{id}/log/stream?offset=N` (SSE): `log` events carrying complete lines,
/// each with the byte offset after it as its id, so `Last-Event-ID` resumes without loss or
/// duplicates; an `end` event once the queue finished and everything was sent.
#[utoipa::path(get, path = "/api/v1/queues/{id}/log/stream", tag = "logs",
    params(crate::path::QueueIdParam, ("offset" = Option<u64>, Query, minimum = 0, maximum = 9_223_372_036_854_775_807_i64, description = "Byte offset to start from, 0..=2^63-1 (Last-Event-ID wins)"),
           ("Last-Event-ID" = Option<u64>, Header, minimum = 0, maximum = 9_223_372_036_854_775_807_i64, description = "Resume after this offset (a value that is not a number is ignored)")),
    responses((status = 200, description = "SSE: `log` events with complete lines (id = offset after them), `end` when finished", content_type = "text/event-stream", body = String),
              (status = 400, description = "Offset empty, not a number or above 2^63-1 (`bad_query`)", body = ErrorBody),
              (status = 404, description = "No such queue", body = ErrorBody)))]
pub(crate) async fn queue_log_stream(
    State(s): State<AppState>,
    QueueId(id): QueueId,
    headers: HeaderMap,
    params: Result<Query<OffsetParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    // Follow first, then look at the queue: a queue that ends in between is not missed.
    let tail = s.follows.follow(id);
    if s.store.queue_row(id).await?.status.is_finished() {
        s.follows.finished(id);
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let offset = match resume {
        Some(o) => check_offset("Last-Event-ID", o)?,
        None => check_offset("offset", p.offset.unwrap_or(0))?,
    };
    let reader = s.clone();
    let stream = futures::stream::unfold(Some((offset, tail, false)), move |state| {
        let s = reader.clone();
        async move {
            let (offset, tail, looked) = state?;
            let (event, next) = next_log_event(&s, id, offset, tail, looked).await;
            Some((Ok::<_, std::convert::Infallible>(event), next))
        }
    });
    let stream = futures::StreamExt::take_until(stream, s.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The next event of a live log read from `offset` (`looked`: by this viewer before): the
/// complete lines written since (and where to continue), waiting until the log grows; `end` (and nothing after) once the queue
/// finished and every line was sent.
async fn next_log_event(
    s: &AppState,
    id: i64,
    mut offset: u64,
    mut tail: watch::Receiver<Tail>,
    mut looked: bool,
) -> (Event, Option<(u64, watch::Receiver<Tail>, bool)>) {
    loop {
        // What the log was before reading it: a change after the read wakes us.
        let now = tail.borrow_and_update().clone();
        let finished = now.finished;
        // The bytes the watcher read for every viewer if they hold the offset; else the
        // database, once on connecting, when the log is past the offset, and at the end.
        let data = match now.cached(offset) {
            Some(d) => d.to_vec(),
            None if !looked || finished || now.len > offset => {
                read_from(s, id, QUEUE_LOG, offset, LOG_CHUNK)
                    .await
                    .unwrap_or_default()
            }
            None => Vec::new(),
        };
        looked = true;
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
            return (event, Some((offset, tail, true)));
        }
        if finished || tail.changed().await.is_err() {
            let event = Event::default()
                .event("end")
                .id(offset.to_string())
                .data("{}");
            return (event, None);
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CaseParams {
    pub(crate) task: Option<i64>,
}

/// Case `case` of queue `id` (of task `task` if given) and where its log is; `404` if there is
/// no such case.
pub(crate) async fn find_case(
    s: &AppState,
    id: i64,
    case: &str,
    task: Option<i64>,
) -> Result<(FoundCase, case_logs::Located), ApiError> {
    s.store.queue_row(id).await?;
    let found = s
        .store
        .case_task(id, case, task)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("queue {id} has no case '{case}'")))?;
    let at = case_logs::locate(
        &s.store,
        id,
        found.task_position,
        &found.scenario,
        &found.case,
    )
    .await?;
    Ok((found, at))
}

/// `content` as a response of `content_type`.
fn typed(body: Body, content_type: &'static str) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// `GET /api/v1/queues/{id}/cases/{case}/log[?task=T]`: a case's plain-text log.
#[utoipa::path(get, path = "/api/v1/queues/{id}/cases/{case}/log", tag = "logs",
    params(crate::path::QueueIdParam, ("case" = String, Path, min_length = 1, description = "Test case id"), ("task" = Option<i64>, Query, description = "Task id, when two scenarios share a case id (not a number: 400 `bad_query`)")),
    responses((status = 200, description = "The case's log (so far, while it runs; empty if it has not started)", content_type = "text/plain", body = String), (status = 404, description = "No such queue, case or task", body = ErrorBody)))]
pub(crate) async fn case_log_text(
    State(s): State<AppState>,
    QueueId(id): QueueId,
    CaseKey(case): CaseKey,
    params: Result<Query<CaseParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let (_, at) = find_case(&s, id, &case, p.task).await?;
    let body = range_body(&s, id, at.file, at.range);
    Ok(typed(body, "text/plain; charset=utf-8"))
}

/// `GET /api/v1/queues/{id}/cases/{case}/log.html[?task=T]`: a case's HTML log, made from its
/// log on request.
#[utoipa::path(get, path = "/api/v1/queues/{id}/cases/{case}/log.html", tag = "logs",
    params(crate::path::QueueIdParam, ("case" = String, Path, min_length = 1, description = "Test case id"), ("task" = Option<i64>, Query, description = "Task id, when two scenarios share a case id (not a number: 400 `bad_query`)")),
    responses((status = 200, description = "The case's log as a self-contained HTML page (its last 8 MiB; so far, while it runs)", content_type = "text/html", body = String), (status = 404, description = "No such queue, case or task", body = ErrorBody)))]
pub(crate) async fn case_log_html(
    State(s): State<AppState>,
    QueueId(id): QueueId,
    CaseKey(case): CaseKey,
    params: Result<Query<CaseParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let (found, at) = find_case(&s, id, &case, p.task).await?;
    let meta = case_logs::meta(id, &found.scenario, &found.case);
    let (store, rt) = (s.store.clone(), tokio::runtime::Handle::current());
    let page =
        tokio::task::spawn_blocking(move || case_logs::render_page(&store, &rt, id, &at, &meta))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::io("cannot make the case's page", e))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(page),
    ));
    Ok(typed(body, "text/html; charset=utf-8"))
}

/// `GET /api/v1/queues/{id}/junit.xml`.
#[utoipa::path(get, path = "/api/v1/queues/{id}/junit.xml", tag = "logs", params(crate::path::QueueIdParam),
    responses((status = 200, description = "JUnit XML: one testsuite per scenario", content_type = "application/xml", body = String), (status = 404, description = "No such queue, or it has not ended yet", body = ErrorBody)))]
pub(crate) async fn junit(
    State(s): State<AppState>,
    QueueId(id): QueueId,
) -> Result<Response, ApiError> {
    s.store.queue_row(id).await?;
    let missing = format!("queue {id} has no junit.xml yet (it is written when the queue ends)");
    let len = s.store.file_len(id, "junit.xml").await?;
    if len == 0 {
        return Err(ApiError::NotFound(missing));
    }
    let body = range_body(&s, id, "junit.xml".into(), 0..len);
    Ok(typed(body, "application/xml; charset=utf-8"))
}
