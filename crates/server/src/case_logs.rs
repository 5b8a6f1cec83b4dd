//! A case's log and its HTML page, made on request from the queue log: the worker records the
//! range of `queue.log` each case spans and writes no file per case while the emulator runs.
//! Queues of older versions, whose cases had files of their own, are read from those.

use crate::stored::StoredRange;
use std::io::{Seek, Write};
use std::ops::Range;
use testarena_core::paths::case_log_name;
use testarena_report::{page_start, render_case_page, CaseMeta};
use testarena_store::{CaseRow, Store, StoreError};

/// The name of a queue's log among its files.
pub(crate) const QUEUE_LOG: &str = "queue.log";

/// Where a case's log is among its queue's files.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    /// The file that holds it.
    pub file: String,
    /// Its bytes in that file.
    pub range: Range<u64>,
}

/// Where the log of case `c` (of task `position`, `scenario`) of queue `id` is: its range of
/// the queue log (up to the log's end while it runs), or its own file.
pub(crate) async fn locate(
    store: &Store,
    id: i64,
    position: i64,
    scenario: &str,
    c: &CaseRow,
) -> Result<Located, StoreError> {
    let offset = |o: i64| u64::try_from(o).unwrap_or(0);
    match c.log_from {
        Some(from) => {
            let end = match c.log_to {
                Some(to) => offset(to),
                None => store.file_len(id, QUEUE_LOG).await?,
            };
            let from = offset(from);
            Ok(Located {
                file: QUEUE_LOG.into(),
                range: from..end.max(from),
            })
        }
        None => {
            let file = case_log_name(position, scenario, &c.key);
            let len = store.file_len(id, &file).await?;
            Ok(Located {
                file,
                range: 0..len,
            })
        }
    }
}

/// What the head of the page of case `c` (of `scenario` in queue `id`) shows.
pub(crate) fn meta(id: i64, scenario: &str, c: &CaseRow) -> CaseMeta {
    CaseMeta {
        queue_id: id,
        scenario: scenario.to_string(),
        case_id: c.key.clone(),
        case_name: c.name.clone(),
        status: c.status,
        duration_ms: c.duration_ms.unwrap_or(0).max(0) as u64,
        message: c.message.clone(),
    }
}

/// Renders the page of the case whose log is at `at` into a temporary file, reading the log
/// from the database a piece at a time (on `rt`, from this blocking thread): at most the last
/// few MiB of a long log, so memory and the page stay bounded.
pub(crate) fn render_page(
    store: &Store,
    rt: &tokio::runtime::Handle,
    id: i64,
    at: &Located,
    meta: &CaseMeta,
) -> std::io::Result<std::fs::File> {
    let len = at.range.end - at.range.start;
    let skipped = page_start(len);
    let log = (len > 0).then(|| {
        let from = at.range.start + skipped;
        StoredRange::new(store, rt, id, &at.file, from..at.range.end)
    });
    let mut file = tempfile::tempfile()?;
    {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, &mut file);
        render_case_page(log, skipped, meta, &mut out)?;
        out.flush()?;
    }
    file.rewind()?;
    Ok(file)
}
