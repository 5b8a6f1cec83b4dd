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

/// Largest offset a log may be read from: no file is larger (`off_t` is signed).
const MAX_OFFSET: u64 = i64::MAX as u64;

/// Up to `max` bytes of the file at `path` from `offset`; nothing when the file is shorter
/// (or missing). Never seeks past the end.
async fn read_from(path: &std::path::Path, offset: u64, max: u64) -> Result<Vec<u8>, ApiError> {
    let mut data = Vec::new();
    match tokio::fs::File::open(path).await {
        Ok(mut f) => {
            let len = f
                .metadata()
                .await
                .map_err(|e| ApiError::io("reading a log", e))?
                .len();
            if offset >= len {
                return Ok(data);
            }
            f.seek(SeekFrom::Start(offset))
                .await
                .map_err(|e| ApiError::io("reading a log", e))?;
            f.take(max)
                .read_to_end(&mut data)
                .await
                .map_err(|e| ApiError::io("reading a log", e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ApiError::io("reading a log", e)),
    }
    Ok(data)
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
    params(("id" = i64, Path, description = "Queue id"), ("offset" = Option<u64>, Query, description = "Byte offset to read from, at most 2^63-1")),
    responses((status = 200, description = "Up to 1 MiB of queue.log from the offset (nothing past the end); X-Next-Offset tells where to continue", content_type = "text/plain", body = String),
              (status = 400, description = "Offset not a number or above 2^63-1", body = ErrorBody),
              (status = 404, description = "No such queue", body = ErrorBody)))]
pub(crate) async fn queue_log(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    params: Result<Query<OffsetParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = id_from_path(&raw)?;
    let Query(p) = params?;
    let offset = check_offset("offset", p.offset.unwrap_or(0))?;
    let q = s.store.queue_row(id).await?;
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
        HeaderValue::from_static(q.status.as_str()),
    );
    Ok(resp)
}

/// `GET /api/v1/queues/{id}/log/stream?offset=N` (SSE): `log` events carrying complete lines,
/// each with the byte offset after it as its id, so `Last-Event-ID` resumes without loss or
/// duplicates; an `end` event once the queue finished and everything was sent.
#[utoipa::path(get, path = "/api/v1/queues/{id}/log/stream", tag = "logs",
    params(("id" = i64, Path, description = "Queue id"), ("offset" = Option<u64>, Query, description = "Byte offset to start from (Last-Event-ID wins)"),
           ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this offset")),
    responses((status = 200, description = "SSE: `log` events with complete lines (id = offset after them), `end` when finished", content_type = "text/event-stream", body = String),
              (status = 400, description = "Offset not a number or above 2^63-1", body = ErrorBody),
              (status = 404, description = "No such queue", body = ErrorBody)))]
pub(crate) async fn queue_log_stream(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    params: Result<Query<OffsetParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = id_from_path(&raw)?;
    let Query(p) = params?;
    s.store.queue_row(id).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let offset = match resume {
        Some(o) => check_offset("Last-Event-ID", o)?,
        None => check_offset("offset", p.offset.unwrap_or(0))?,
    };
    let path = queue_dir(&s.config.data_dir, id).join("queue.log");
    let store = s.store.clone();
    let stream = futures::stream::unfold(Some(offset), move |state| {
        let path = path.clone();
        let store = store.clone();
        async move {
            let mut offset = state?;
            loop {
                let finished = match store.queue_row(id).await {
                    Ok(q) => q.status.is_finished(),
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
    s.store.queue_row(id).await?;
    let dir = queue_dir(&s.config.data_dir, id);
    match s.store.case_task(id, case, task).await? {
        Some((position, scenario)) => Ok(case_log(&task_dir(&dir, position, &scenario), case)),
        None => Err(ApiError::NotFound(format!(
            "queue {id} has no case '{case}'"
        ))),
    }
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
        Err(e) => return Err(ApiError::io("reading a case log", e)),
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
    s.store.queue_row(id).await?;
    match tokio::fs::read(queue_dir(&s.config.data_dir, id).join("junit.xml")).await {
        Ok(data) => Ok(text_response(data, "application/xml; charset=utf-8")),
        Err(_) => Err(ApiError::NotFound(format!(
            "queue {id} has no junit.xml yet (it is written when the queue ends)"
        ))),
    }
}

/// `GET /api/v1/queues/{id}/archive`: a tar.gz of the queue's logs and reports (not the checkout).
#[utoipa::path(get, path = "/api/v1/queues/{id}/archive", tag = "logs", params(("id" = i64, Path, description = "Queue id")),
    responses((status = 200, description = "tar.gz of the queue's logs and reports; symbolic links are stored as links, never followed", content_type = "application/gzip", body = Vec<u8>),
              (status = 404, description = "No such queue", body = ErrorBody),
              (status = 503, description = "No space left for the archive", body = ErrorBody)))]
pub(crate) async fn archive(
    State(s): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = id_from_path(&raw)?;
    s.store.queue_row(id).await?;
    let dir = queue_dir(&s.config.data_dir, id);
    let file = tokio::task::spawn_blocking(move || build_archive(&dir, id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::io("cannot build the archive", e))?;
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

/// Deepest directory nesting the archive follows.
const MAX_ARCHIVE_DEPTH: usize = 64;

/// Writes `<dir>` (less the checkout `work/`) as `queue-<id>/...` into a gzipped tar in a
/// temporary file. Symbolic links are stored as links and never followed; other special files
/// (FIFOs, sockets, devices) are left out; a file is read through a descriptor opened without
/// following links, for exactly the size it had when its header was written.
fn build_archive(dir: &std::path::Path, id: i64) -> std::io::Result<std::fs::File> {
    use std::io::{Seek, Write};
    let mut file = tempfile::tempfile()?;
    {
        let gz = flate2::write::GzEncoder::new(&mut file, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.follow_symlinks(false);
        let prefix = PathBuf::from(format!("queue-{id}"));
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => add_tree(&mut tar, dir, &prefix, 0)?,
            _ => {}
        }
        let mut gz = tar.into_inner()?;
        gz.flush()?;
        gz.finish()?;
    }
    file.rewind()?;
    Ok(file)
}

fn add_tree<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    dir: &std::path::Path,
    name: &std::path::Path,
    depth: usize,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let file_name = entry.file_name();
        // The checkout can be large and is in git already.
        if depth == 0 && file_name == "work" {
            continue;
        }
        let path = entry.path();
        let inner = name.join(&file_name);
        // DirEntry::metadata does not follow a symbolic link.
        let Ok(meta) = entry.metadata() else { continue };
        let kind = meta.file_type();
        if kind.is_symlink() {
            let Ok(target) = std::fs::read_link(&path) else {
                continue;
            };
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            tar.append_link(&mut header, &inner, &target)?;
        } else if kind.is_dir() {
            if depth >= MAX_ARCHIVE_DEPTH {
                continue;
            }
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            tar.append_data(&mut header, &inner, std::io::empty())?;
            add_tree(tar, &path, &inner, depth + 1)?;
        } else if kind.is_file() {
            add_file(tar, &path, &inner)?;
        }
    }
    Ok(())
}

/// Appends a regular file, opened without following a link (it may have been swapped for one
/// since it was listed) and without blocking (it may have been swapped for a FIFO).
fn add_file<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    path: &std::path::Path,
    name: &std::path::Path,
) -> std::io::Result<()> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        // Gone, or a link now: leave it out.
        Err(_) => return Ok(()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(());
    }
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    // A log still being written: exactly the size the header says, padded if it shrank.
    let size = meta.len();
    let data = file.take(size).chain(std::io::repeat(0)).take(size);
    tar.append_data(&mut header, name, data)
}

#[cfg(test)]
mod tests {
    use super::build_archive;
    use std::io::Read;

    #[test]
    fn the_archive_never_follows_symbolic_links() {
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("7");
        std::fs::create_dir_all(q.join("001-smoke")).unwrap();
        std::fs::create_dir_all(q.join("work")).unwrap();
        std::fs::write(q.join("queue.log"), "line one\n").unwrap();
        std::fs::write(q.join("001-smoke/TC_A.log"), "case log\n").unwrap();
        std::fs::write(q.join("work/secret.c"), "checkout").unwrap();
        let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, q.join(at)).unwrap();
        link("/etc/passwd", "passwd");
        link("/etc", "etc");
        link(".", "001-smoke/self");
        link("../001-smoke", "001-smoke/parent");
        link("loop-b", "loop-a");
        link("loop-a", "loop-b");
        let file = build_archive(&q, 7).unwrap();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut seen = Vec::new();
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let kind = entry.header().entry_type();
            let target = entry.link_name().unwrap().map(|t| t.display().to_string());
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            assert!(!text.contains("root:"), "{path} holds /etc/passwd");
            seen.push((path, kind, target, text));
        }
        let find = |p: &str| {
            seen.iter()
                .find(|e| e.0 == p)
                .unwrap_or_else(|| panic!("{p} missing: {seen:?}"))
        };
        assert_eq!(find("queue-7/queue.log").3, "line one\n");
        assert_eq!(find("queue-7/001-smoke/TC_A.log").3, "case log\n");
        for (p, target) in [
            ("queue-7/passwd", "/etc/passwd"),
            ("queue-7/etc", "/etc"),
            ("queue-7/001-smoke/self", "."),
            ("queue-7/loop-a", "loop-b"),
        ] {
            let e = find(p);
            assert_eq!(e.1, tar::EntryType::Symlink, "{p}");
            assert_eq!(e.2.as_deref(), Some(target), "{p}");
        }
        assert!(
            !seen.iter().any(|e| e.0.contains("work")),
            "checkout left out"
        );
        assert!(
            !seen.iter().any(|e| e.0.starts_with("queue-7/etc/")),
            "links not followed"
        );
        assert!(seen.len() < 20, "{seen:?}");
    }
}
