//! `GET /api/v1/queues/{id}/archive`: a tar.gz of a queue's files (its logs, junit.xml and
//! what its builds left) and of its cases' logs and pages, made from the queue log; read from
//! the database a piece at a time.

use crate::case_logs::{self, Located};
use crate::error::ApiError;
use crate::path::QueueId;
use crate::state::AppState;
use crate::stored::StoredRange;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use std::io::{Read, Seek, Write};
use testarena_core::api::ErrorBody;
use testarena_core::paths::case_log_name;
use testarena_report::CaseMeta;
use testarena_store::Store;

/// One entry of the archive.
pub(crate) enum Entry {
    /// Bytes `at.range` of the stored file `at.file`, as `name`.
    Stored { name: String, at: Located },
    /// A case's page, made from its log at `at`.
    Page {
        name: String,
        at: Located,
        meta: CaseMeta,
    },
    /// Bytes made on request (a repro bundle's `case.json`).
    Bytes { name: String, data: Vec<u8> },
}

/// `GET /api/v1/queues/{id}/archive`: a tar.gz of the queue's files (not the checkout).
#[utoipa::path(get, path = "/api/v1/queues/{id}/archive", tag = "logs", params(crate::path::QueueIdParam),
    responses((status = 200, description = "tar.gz of the queue's logs and reports (regular files only: the worker never ships a link)", content_type = "application/gzip", body = Vec<u8>),
              (status = 404, description = "No such queue", body = ErrorBody),
              (status = 503, description = "No space left for the archive", body = ErrorBody)))]
pub(crate) async fn archive(
    State(s): State<AppState>,
    QueueId(id): QueueId,
) -> Result<Response, ApiError> {
    s.store.queue_row(id).await?;
    let entries = entries(&s.store, id).await?;
    let (store, rt) = (s.store.clone(), tokio::runtime::Handle::current());
    let prefix = format!("queue-{id}");
    let file =
        tokio::task::spawn_blocking(move || build_archive(&store, &rt, id, &entries, &prefix))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::io("cannot build the archive", e))?;
    Ok(gzip_response(file, &format!("testarena-queue-{id}.tar.gz")))
}

/// A tar.gz in `file` as a download named `filename`.
pub(crate) fn gzip_response(file: std::fs::File, filename: &str) -> Response {
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(file),
    ));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

/// What the archive of queue `id` holds: its stored files, then each case's log and page where
/// they are not stored files of their own (queues of this version store none).
async fn entries(store: &Store, id: i64) -> Result<Vec<Entry>, ApiError> {
    let files = store.files(id).await?;
    let stored = |name: &str| files.iter().any(|(f, _)| f == name);
    let mut entries = Vec::new();
    for (task, cases) in &store.queue(id).await?.tasks {
        for c in cases.iter().filter(|c| c.log_from.is_some()) {
            let log = case_log_name(task.position, &task.scenario, &c.key);
            let page = format!("{}.html", log.strip_suffix(".log").unwrap_or(&log));
            let at = case_logs::locate(store, id, task.position, &task.scenario, c).await?;
            if !stored(&page) {
                let meta = case_logs::meta(id, &task.scenario, c);
                let at = at.clone();
                entries.push(Entry::Page {
                    name: page,
                    at,
                    meta,
                });
            }
            if !stored(&log) {
                entries.push(Entry::Stored { name: log, at });
            }
        }
    }
    let whole = files.into_iter().map(|(name, len)| Entry::Stored {
        at: Located {
            file: name.clone(),
            range: 0..len,
        },
        name,
    });
    Ok(whole.chain(entries).collect())
}

/// Writes `entries` of queue `id` as `<prefix>/<name>` into a gzipped tar in a temporary
/// file, reading each from the database a piece at a time (on `rt`, from this blocking
/// thread).
pub(crate) fn build_archive(
    store: &Store,
    rt: &tokio::runtime::Handle,
    id: i64,
    entries: &[Entry],
    prefix: &str,
) -> std::io::Result<std::fs::File> {
    let mut file = tempfile::tempfile()?;
    {
        let gz = flate2::write::GzEncoder::new(&mut file, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_mtime(now);
            let (name, len, data) = open_entry(store, rt, id, entry)?;
            header.set_size(len);
            tar.append_data(&mut header, format!("{prefix}/{name}"), data)?;
        }
        let mut gz = tar.into_inner()?;
        gz.flush()?;
        gz.finish()?;
    }
    file.rewind()?;
    Ok(file)
}

/// An entry's name, its size and a reader of exactly that many bytes (a stored range padded
/// should the file be shorter, or a case page rendered into a temporary file).
fn open_entry<'a>(
    store: &'a Store,
    rt: &'a tokio::runtime::Handle,
    id: i64,
    entry: &'a Entry,
) -> std::io::Result<(&'a str, u64, Box<dyn Read + 'a>)> {
    match entry {
        Entry::Stored { name, at } => {
            let len = at.range.end - at.range.start;
            let data = StoredRange::new(store, rt, id, &at.file, at.range.clone());
            let data = data.chain(std::io::repeat(0)).take(len);
            Ok((name, len, Box::new(data)))
        }
        Entry::Page { name, at, meta } => {
            let page = case_logs::render_page(store, rt, id, at, meta)?;
            let len = page.metadata()?.len();
            Ok((name, len, Box::new(page)))
        }
        Entry::Bytes { name, data } => Ok((name, data.len() as u64, Box::new(&data[..]))),
    }
}

/// Writes what the archive of queue `id` holds into `dir` as plain files (without the
/// archive's `queue-<id>/` folder): its logs, junit.xml, what its builds left, and each case's
/// log and page. For `testarena run`, whose database is thrown away after the run. Returns the
/// names written.
pub async fn export_queue(
    store: &Store,
    id: i64,
    dir: &std::path::Path,
) -> Result<Vec<String>, ApiError> {
    let entries = entries(store, id).await?;
    let (store, rt, dir) = (
        store.clone(),
        tokio::runtime::Handle::current(),
        dir.to_path_buf(),
    );
    tokio::task::spawn_blocking(move || {
        let mut written = Vec::new();
        for entry in &entries {
            let (name, _, mut data) = open_entry(&store, &rt, id, entry)?;
            let Some(path) = inside(&dir, name) else {
                tracing::warn!(
                    name,
                    "a queue file with a name that leaves its folder: skipped"
                );
                continue;
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
            std::io::copy(&mut data, &mut out)?;
            out.flush()?;
            written.push(name.to_string());
        }
        Ok(written)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::io("cannot write the queue's files", e))
}

/// `name` under `dir`, unless it is absolute or climbs out (the names are the worker's, but a
/// file written on the developer's disk is checked all the same).
fn inside(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    use std::path::Component;
    let rel = std::path::Path::new(name);
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    (plain && !name.is_empty()).then(|| dir.join(rel))
}
