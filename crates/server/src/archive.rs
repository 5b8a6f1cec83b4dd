//! `GET /api/v1/queues/{id}/archive`: a tar.gz of a queue's files (its logs, case pages,
//! junit.xml and what its builds left), read from the database a piece at a time.

use crate::error::ApiError;
use crate::path::QueueId;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use std::io::{Read, Seek, Write};
use testarena_core::api::ErrorBody;
use testarena_core::limits::LOG_CHUNK;
use testarena_store::Store;

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
    let files = s.store.files(id).await?;
    let (store, rt) = (s.store.clone(), tokio::runtime::Handle::current());
    let file = tokio::task::spawn_blocking(move || build_archive(&store, &rt, id, &files))
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

/// Writes `files` (name, length) of queue `id` as `queue-<id>/<name>` into a gzipped tar in a
/// temporary file, reading each from the database a piece at a time (on `rt`, from this
/// blocking thread).
fn build_archive(
    store: &Store,
    rt: &tokio::runtime::Handle,
    id: i64,
    files: &[(String, u64)],
) -> std::io::Result<std::fs::File> {
    let mut file = tempfile::tempfile()?;
    {
        let gz = flate2::write::GzEncoder::new(&mut file, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        for (name, len) in files {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_mtime(now);
            header.set_size(*len);
            let data = StoredFile {
                store,
                rt,
                id,
                name,
                at: 0,
                buf: Vec::new(),
                pos: 0,
            };
            // Exactly the size the header says: padded should the file be shorter.
            let data = data.chain(std::io::repeat(0)).take(*len);
            tar.append_data(&mut header, format!("queue-{id}/{name}"), data)?;
        }
        let mut gz = tar.into_inner()?;
        gz.flush()?;
        gz.finish()?;
    }
    file.rewind()?;
    Ok(file)
}

/// One of a queue's files as a reader, a piece from the database at a time.
struct StoredFile<'a> {
    store: &'a Store,
    rt: &'a tokio::runtime::Handle,
    id: i64,
    name: &'a str,
    /// Offset of the next piece to read.
    at: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for StoredFile<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf = self
                .rt
                .block_on(self.store.read_file(self.id, self.name, self.at, LOG_CHUNK))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            self.pos = 0;
            self.at += self.buf.len() as u64;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
