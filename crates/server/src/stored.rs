//! A range of one of a queue's files in the database as a blocking reader (for the archive and
//! for a case's page, which are built on a blocking thread), a piece at a time.

use std::io::Read;
use testarena_core::limits::LOG_CHUNK;
use testarena_store::Store;

/// Bytes `at..end` of queue `id`'s file `name`, read from the database on `rt`.
pub(crate) struct StoredRange<'a> {
    store: &'a Store,
    rt: &'a tokio::runtime::Handle,
    id: i64,
    name: &'a str,
    /// Offset of the next piece to read.
    at: u64,
    end: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl<'a> StoredRange<'a> {
    pub(crate) fn new(
        store: &'a Store,
        rt: &'a tokio::runtime::Handle,
        id: i64,
        name: &'a str,
        range: std::ops::Range<u64>,
    ) -> StoredRange<'a> {
        StoredRange {
            store,
            rt,
            id,
            name,
            at: range.start,
            end: range.end,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for StoredRange<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            let want = LOG_CHUNK.min(self.end.saturating_sub(self.at));
            if want == 0 {
                return Ok(0);
            }
            self.buf = self
                .rt
                .block_on(self.store.read_file(self.id, self.name, self.at, want))
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
