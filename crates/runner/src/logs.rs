//! The log files a queue writes while it runs: `queue.log` always, plus the current case's or
//! the build's log. Lines are timestamped as they arrive and flushed in batches, so a reader
//! (the API's log endpoint) sees them live.

use crate::report::{format_line, LineKind};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// One log file with a size cap; past the cap a marker is written once and lines are dropped.
pub struct LogFile {
    out: BufWriter<File>,
    written: u64,
    cap: u64,
    truncated: bool,
}

impl LogFile {
    /// Creates (truncating) the file at `path`.
    pub fn create(path: &Path, cap: u64) -> std::io::Result<LogFile> {
        Ok(LogFile {
            out: BufWriter::with_capacity(64 * 1024, File::create(path)?),
            written: 0,
            cap,
            truncated: false,
        })
    }

    /// Opens the file at `path` for appending (a retried queue keeps its earlier log).
    pub fn append(path: &Path, cap: u64) -> std::io::Result<LogFile> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogFile {
            out: BufWriter::with_capacity(64 * 1024, file),
            written,
            cap,
            truncated: false,
        })
    }

    fn write(&mut self, formatted: &[u8]) {
        if self.truncated {
            return;
        }
        if self.written + formatted.len() as u64 > self.cap {
            self.truncated = true;
            let mut marker = Vec::new();
            let note = format!(
                "log truncated: the cap of {} bytes was reached; later lines are not in this file",
                self.cap
            );
            format_line(
                &mut marker,
                SystemTime::now(),
                LineKind::Event,
                note.as_bytes(),
            );
            let _ = self.out.write_all(&marker);
            return;
        }
        self.written += formatted.len() as u64;
        // A full disk must not stop the test run; the run reports what it can.
        let _ = self.out.write_all(formatted);
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

/// The files lines currently go to.
pub struct Sinks {
    /// `queue.log`: everything.
    pub queue: Option<LogFile>,
    /// The current case's or the build's log.
    pub current: Option<LogFile>,
    buf: Vec<u8>,
}

/// Sinks shared between the console reader, process runners and the pipeline.
#[derive(Clone)]
pub struct Logs(Arc<Mutex<Sinks>>);

impl Logs {
    /// Logs writing to `queue` (if any) and nothing else yet.
    pub fn new(queue: Option<LogFile>) -> Logs {
        Logs(Arc::new(Mutex::new(Sinks {
            queue,
            current: None,
            buf: Vec::with_capacity(64 * 1024),
        })))
    }

    /// Locks the sinks; a poisoned lock is still usable (a panic elsewhere must not lose logs).
    pub fn lock(&self) -> MutexGuard<'_, Sinks> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts sending lines to `file` as well (the case or build log), returning the previous one.
    pub fn set_current(&self, file: Option<LogFile>) -> Option<LogFile> {
        let mut s = self.lock();
        if let Some(f) = s.current.as_mut() {
            f.flush();
        }
        let mut old = std::mem::replace(&mut s.current, file);
        if let Some(f) = old.as_mut() {
            f.flush();
        }
        old
    }

    /// Writes one TestArena event line and flushes.
    pub fn event(&self, text: &str) {
        let mut s = self.lock();
        s.line(LineKind::Event, text.as_bytes());
        s.flush();
    }

    /// Writes one output line and flushes.
    pub fn output(&self, text: &[u8]) {
        let mut s = self.lock();
        s.line(LineKind::Output, text);
        s.flush();
    }
}

impl Sinks {
    /// Writes one line to every sink (no flush: callers batch).
    pub fn line(&mut self, kind: LineKind, text: &[u8]) {
        self.buf.clear();
        format_line(&mut self.buf, SystemTime::now(), kind, text);
        let Sinks {
            queue,
            current,
            buf,
        } = self;
        if let Some(q) = queue.as_mut() {
            q.write(buf);
        }
        if let Some(c) = current.as_mut() {
            c.write(buf);
        }
    }

    /// Flushes every sink so readers see the lines.
    pub fn flush(&mut self) {
        if let Some(q) = self.queue.as_mut() {
            q.flush();
        }
        if let Some(c) = self.current.as_mut() {
            c.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_writes_a_marker_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let logs = Logs::new(None);
        logs.set_current(Some(LogFile::create(&path, 200).unwrap()));
        for i in 0..100 {
            logs.output(format!("line {i}").as_bytes());
        }
        logs.set_current(None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() < 400, "{}", text.len());
        assert_eq!(text.matches("log truncated").count(), 1);
        assert!(text.contains("| line 0\n"));
    }
}
