//! A queue's files (its logs, case logs and pages, junit.xml, what its builds left) in the
//! database, as chunks: the worker that holds the queue appends them while it runs, every
//! server replica reads them by offset. One model for both backends: nothing on a worker's
//! disk is needed by the server tier.

use crate::backend::Wakeup;
use crate::rows::Chunk;
use crate::{Holder, Result, Store};
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::Notify;

/// Most bytes of a file copied in one piece.
const COPY_PIECE: u64 = 1024 * 1024;

/// New chunks written by this process: wakes its own readers at once (SQLite, where the
/// database tells nobody, and `up`, where worker and server share the process).
static WRITTEN_HERE: LazyLock<Notify> = LazyLock::new(Notify::new);

impl Store {
    /// Stores `chunks` of queue `id`, fenced by `holder`'s claim (`ClaimLost` otherwise). A
    /// chunk stored already (a write tried again after its answer was lost) stays as it was.
    pub async fn put_chunks(&self, id: i64, holder: &Holder, chunks: &[Chunk]) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        self.retry(|| self.backend.put_chunks(id, holder, chunks))
            .await?;
        WRITTEN_HERE.notify_waiters();
        Ok(())
    }

    /// Stores `chunks` of queue `id` without a claim: for copying an installation and for
    /// importing the files an older version kept in its data directory.
    pub async fn import_chunks(&self, id: i64, chunks: &[Chunk]) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        self.retry(|| self.backend.import_chunks(id, chunks)).await
    }

    /// Copies every file of queue `id` into `target`, a piece at a time; returns the bytes.
    pub async fn copy_files_into(&self, id: i64, target: &Store) -> Result<u64> {
        let mut bytes = 0;
        for (name, len) in self.files(id).await? {
            let mut at = 0;
            while at < len {
                let data = self.read_file(id, &name, at, COPY_PIECE).await?;
                if data.is_empty() {
                    break;
                }
                let n = data.len() as u64;
                let chunk = Chunk {
                    name: name.clone(),
                    start: at as i64,
                    data,
                };
                target.import_chunks(id, &[chunk]).await?;
                at += n;
            }
            bytes += at;
        }
        Ok(bytes)
    }

    /// A new attempt of queue `id` starts its files over, but `keep` (the queue log, which
    /// goes on after the earlier attempts'): returns `keep`'s length so far.
    pub async fn restart_files(&self, id: i64, holder: &Holder, keep: &str) -> Result<u64> {
        let len = self
            .retry(|| self.backend.restart_files(id, holder, keep))
            .await?;
        Ok(len.max(0) as u64)
    }

    /// Deletes file `name` of queue `id` (it is written anew), fenced by `holder`'s claim.
    pub async fn remove_file(&self, id: i64, holder: &Holder, name: &str) -> Result<()> {
        self.retry(|| self.backend.remove_file(id, holder, name))
            .await
    }

    /// Up to `max` bytes of file `name` of queue `id` from byte `offset`: nothing past its end
    /// (or if there is no such file).
    pub async fn read_file(&self, id: i64, name: &str, offset: u64, max: u64) -> Result<Vec<u8>> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let end = offset.saturating_add(i64::try_from(max).unwrap_or(i64::MAX));
        let chunks = self
            .retry(|| self.backend.chunks(id, name, offset, end))
            .await?;
        Ok(slice_of(&chunks, offset, end))
    }

    /// Every file of queue `id` with its length, by name.
    pub async fn files(&self, id: i64) -> Result<Vec<(String, u64)>> {
        let files = self.retry(|| self.backend.files(id)).await?;
        Ok(files
            .into_iter()
            .map(|(name, len)| (name, len.max(0) as u64))
            .collect())
    }

    /// The length of file `name` of queue `id`; 0 if it has none (yet).
    pub async fn file_len(&self, id: i64, name: &str) -> Result<u64> {
        let len = self.retry(|| self.backend.file_len(id, name)).await?;
        Ok(len.unwrap_or(0).max(0) as u64)
    }

    /// Waits until some queue's files may have grown (chunks written by this process, or a
    /// NOTIFY from PostgreSQL of another's), at most `timeout`.
    pub async fn wait_for_files(&self, timeout: Duration) {
        tokio::select! {
            _ = WRITTEN_HERE.notified() => {}
            _ = self.backend.wait_for(Wakeup::Files, timeout) => {}
        }
    }
}

/// The bytes of `chunks` (in order, contiguous) from `offset` to before `end`.
fn slice_of(chunks: &[Chunk], offset: i64, end: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        let c_end = c.start + c.data.len() as i64;
        let from = offset.max(c.start);
        let to = end.min(c_end);
        if from < to {
            out.extend_from_slice(&c.data[(from - c.start) as usize..(to - c.start) as usize]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(start: i64, data: &str) -> Chunk {
        Chunk {
            name: "f".into(),
            start,
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn slices_span_chunks() {
        let chunks = [chunk(0, "abc"), chunk(3, "defg"), chunk(7, "h")];
        assert_eq!(slice_of(&chunks, 0, 100), b"abcdefgh");
        assert_eq!(slice_of(&chunks, 2, 5), b"cde");
        assert_eq!(slice_of(&chunks, 7, 8), b"h");
        assert_eq!(slice_of(&chunks, 8, 20), b"");
        assert_eq!(slice_of(&chunks[1..], 4, 6), b"ef");
    }
}
