//! `GET /api/v1/queues/{id}/archive`: a tar.gz of a queue's logs and reports, built without
//! ever following a symbolic link.

use crate::error::ApiError;
use crate::path::QueueId;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use std::path::PathBuf;
use testarena_core::api::ErrorBody;
use testarena_core::paths::queue_dir;

/// `GET /api/v1/queues/{id}/archive`: a tar.gz of the queue's logs and reports (not the checkout).
#[utoipa::path(get, path = "/api/v1/queues/{id}/archive", tag = "logs", params(("id" = i64, Path, description = "Queue id")),
    responses((status = 200, description = "tar.gz of the queue's logs and reports; symbolic links are stored as links, never followed", content_type = "application/gzip", body = Vec<u8>),
              (status = 404, description = "No such queue", body = ErrorBody),
              (status = 503, description = "No space left for the archive", body = ErrorBody)))]
pub(crate) async fn archive(
    State(s): State<AppState>,
    QueueId(id): QueueId,
) -> Result<Response, ApiError> {
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
