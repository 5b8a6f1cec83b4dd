//! The log files a queue writes while it runs: `queue.log` always, plus the build's log while
//! it builds. Lines are timestamped as they arrive and flushed in batches, so a reader (the
//! API's log endpoint) sees them live. A case has no file of its own: its log is the range of
//! `queue.log` between its start and its end ([`Logs::position`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use testarena_report::{format_line, LineKind};

/// Output the queue log may gain before the shipper is woken (rather than at its next round):
/// a chatty console reaches the database in steps of about this much, not of a round's time.
const WAKE_EVERY_BYTES: u64 = 256 * 1024;

/// One log file with a size cap; past the cap a marker is written once and lines are dropped.
pub struct LogFile {
    path: PathBuf,
    out: BufWriter<File>,
    written: u64,
    cap: u64,
    truncated: bool,
    /// The first error writing the file, if any.
    error: Option<std::io::Error>,
}

impl LogFile {
    /// Creates (truncating) the file at `path`.
    pub fn create(path: &Path, cap: u64) -> std::io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(64 * 1024, File::create(path)?),
            written: 0,
            cap,
            truncated: false,
            error: None,
        })
    }

    /// Writes one formatted line unless the file's cap is reached; returns the bytes written.
    fn write(&mut self, formatted: &[u8]) -> u64 {
        if self.truncated {
            return 0;
        }
        if self.written + formatted.len() as u64 > self.cap {
            self.truncate(&format!(
                "log truncated: the cap of {} bytes was reached; later lines are not in this file",
                self.cap
            ));
            return 0;
        }
        self.written += formatted.len() as u64;
        if let Err(e) = self.out.write_all(formatted) {
            self.fail(e);
        }
        formatted.len() as u64
    }

    /// Keeps the first write error (a full disk) for the queue to report, and stops writing:
    /// whatever space is freed goes to the verdict, not to more log lines.
    fn fail(&mut self, e: std::io::Error) {
        if self.error.is_none() {
            self.error = Some(e);
        }
        self.truncated = true;
    }

    /// Writes `note` as the file's last line; later lines are dropped.
    fn truncate(&mut self, note: &str) {
        if self.truncated {
            return;
        }
        self.truncated = true;
        let mut marker = Vec::new();
        format_line(
            &mut marker,
            SystemTime::now(),
            LineKind::Event,
            note.as_bytes(),
        );
        if self.out.write_all(&marker).is_ok() {
            self.written += marker.len() as u64;
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.fail(e);
        }
    }

    /// Takes the first write error, if there was one.
    fn take_error(&mut self) -> Option<std::io::Error> {
        self.error.take()
    }
}

/// The files lines currently go to.
pub struct Sinks {
    /// `queue.log`: everything.
    pub queue: Option<LogFile>,
    /// Where this `queue.log` starts in the queue's log in the database (after the lines of
    /// earlier attempts).
    base: u64,
    /// The build's log while it builds.
    pub current: Option<LogFile>,
    buf: Vec<u8>,
    /// Bytes written to all build and case logs of the queue so far, and their common cap: a
    /// flooding firmware cannot fill the disk one capped case at a time.
    case_bytes: u64,
    case_budget: u64,
    /// Called once with the first error writing any log file.
    on_error: Option<Box<dyn FnOnce(std::io::Error) + Send>>,
    /// A log could not be kept (a write failed, or [`Logs::fail`]): the disk is full.
    failed: bool,
    /// Cancelled when `failed` becomes true: the shipper stops in the middle of a round.
    failure: tokio_util::sync::CancellationToken,
    /// Files complete since the shipper last asked (earlier current logs, case pages).
    ready: Vec<PathBuf>,
    /// [`Logs::flooded`]'s wake-up, and the queue log's length when it was last rung.
    wake: Arc<tokio::sync::Notify>,
    woken_at: u64,
}

/// Sinks shared between the console reader, process runners and the pipeline.
#[derive(Clone)]
pub struct Logs {
    sinks: Arc<Mutex<Sinks>>,
    /// Woken when a file became complete (a case ended): the shipper sends at once rather
    /// than at its next round, so a case's last lines reach the database without waiting.
    completed: Arc<tokio::sync::Notify>,
    /// Woken when the queue log grew by [`WAKE_EVERY_BYTES`]: a flood of output is shipped as
    /// it comes, not a round at a time.
    flood: Arc<tokio::sync::Notify>,
}

impl Logs {
    /// Logs writing to `queue` (if any) and nothing else yet.
    pub fn new(queue: Option<LogFile>) -> Logs {
        let completed = Arc::new(tokio::sync::Notify::new());
        let flood = Arc::new(tokio::sync::Notify::new());
        let sinks = Arc::new(Mutex::new(Sinks {
            queue,
            base: 0,
            current: None,
            buf: Vec::with_capacity(64 * 1024),
            case_bytes: 0,
            case_budget: u64::MAX,
            on_error: None,
            failed: false,
            failure: tokio_util::sync::CancellationToken::new(),
            ready: Vec::new(),
            wake: flood.clone(),
            woken_at: 0,
        }));
        Logs {
            sinks,
            completed,
            flood,
        }
    }

    /// Calls `handler` once with the first error writing a log file (e.g. a full disk).
    pub fn on_write_error(self, handler: impl FnOnce(std::io::Error) + Send + 'static) -> Logs {
        self.lock().on_error = Some(Box::new(handler));
        self
    }

    /// Reports `e` as a failure to keep the logs (the database is full, say), as a failed
    /// write of a log file would be: the error handler runs, once.
    pub fn fail(&self, e: std::io::Error) {
        let handler = {
            let mut s = self.lock();
            s.fail();
            s.on_error.take()
        };
        if let Some(handler) = handler {
            handler(e);
        }
    }

    /// Caps the build and case logs of the queue together at `bytes`.
    pub fn with_case_budget(self, bytes: u64) -> Logs {
        self.lock().case_budget = bytes;
        self
    }

    /// Locks the sinks; a poisoned lock is still usable (a panic elsewhere must not lose logs).
    pub fn lock(&self) -> MutexGuard<'_, Sinks> {
        self.sinks.lock().unwrap_or_else(|p| p.into_inner())
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
            s.ready.push(f.path.clone());
            self.completed.notify_one();
        }
        old
    }

    /// Says where this attempt's `queue.log` starts in the queue's log in the database.
    pub fn set_base(&self, base: u64) {
        self.lock().base = base;
    }

    /// Where this attempt's `queue.log` starts in the queue's log in the database.
    pub fn base(&self) -> u64 {
        self.lock().base
    }

    /// The offset in the queue's log (in the database, across attempts) the next line will
    /// have: a case's log is the range between its start and its end.
    pub fn position(&self) -> u64 {
        let s = self.lock();
        s.base + s.queue.as_ref().map_or(0, |q| q.written)
    }

    /// Wakes the shipper now (a case ended: its last lines go out without waiting).
    pub fn ship_now(&self) {
        self.completed.notify_one();
    }

    /// Cancelled once a log could not be kept (see [`Logs::failed`]).
    pub fn failure(&self) -> tokio_util::sync::CancellationToken {
        self.lock().failure.clone()
    }

    /// Whether a log could not be kept (the disk is full): nothing more should be written for
    /// the queue but its verdict, which needs what space is left.
    pub fn failed(&self) -> bool {
        self.lock().failed
    }

    /// Waits until a file became complete since the last wait (at once if so).
    pub async fn completed(&self) {
        self.completed.notified().await;
    }

    /// Waits until the queue log grew by [`WAKE_EVERY_BYTES`] since the last wait (at once if
    /// so).
    pub async fn flooded(&self) {
        self.flood.notified().await;
    }

    /// The files to send to the database now: the queue log first (the live console waits
    /// for nothing else), then the current log and the files that became complete since the
    /// last call.
    pub fn to_ship(&self) -> Vec<PathBuf> {
        let mut s = self.lock();
        s.flush();
        let ready = std::mem::take(&mut s.ready);
        let mut paths: Vec<PathBuf> = [s.queue.as_ref(), s.current.as_ref()]
            .into_iter()
            .flatten()
            .map(|f| f.path.clone())
            .collect();
        paths.extend(ready);
        paths
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
    /// Marks the logs as not kept any more.
    fn fail(&mut self) {
        self.failed = true;
        self.failure.cancel();
    }

    /// Writes one line to every sink (no flush: callers batch).
    pub fn line(&mut self, kind: LineKind, text: &[u8]) {
        self.line_at(SystemTime::now(), kind, text);
    }

    /// [`Sinks::line`] with its time given: the lines of one read of the console share one
    /// (they arrived together), which saves reading the clock for each of them.
    pub fn line_at(&mut self, at: SystemTime, kind: LineKind, text: &[u8]) {
        if self.failed {
            // The disk (or the database) is full: what space is left, and the reserve just
            // released, is for the verdict; a flooding console would take it first.
            return;
        }
        self.buf.clear();
        format_line(&mut self.buf, at, kind, text);
        let Sinks {
            queue,
            current,
            buf,
            case_bytes,
            case_budget,
            ..
        } = self;
        if let Some(q) = queue.as_mut() {
            q.write(buf);
        }
        if let Some(c) = current.as_mut() {
            if *case_bytes + buf.len() as u64 > *case_budget {
                c.truncate(&format!(
                    "log truncated: this queue's build and case logs reached their common cap of {case_budget} bytes; later lines are not in this file"
                ));
            } else {
                *case_bytes += c.write(buf);
            }
        }
    }

    /// Flushes every sink so readers see the lines; a write error (a full disk) goes to the
    /// error handler once.
    pub fn flush(&mut self) {
        if let Some(q) = self.queue.as_mut() {
            q.flush();
        }
        if let Some(c) = self.current.as_mut() {
            c.flush();
        }
        self.wrote();
    }

    /// After a batch of lines, without flushing (the console's flood would otherwise cost a
    /// `write` per read of its pipe; the shipper flushes before it reads, see
    /// [`Logs::to_ship`]): wakes the shipper when much came, and reports a write error.
    pub fn wrote(&mut self) {
        let written = self.queue.as_ref().map_or(0, |q| q.written);
        if written >= self.woken_at + WAKE_EVERY_BYTES {
            self.woken_at = written;
            self.wake.notify_one();
        }
        let error = [self.queue.as_mut(), self.current.as_mut()]
            .into_iter()
            .flatten()
            .find_map(LogFile::take_error);
        if let Some(e) = error {
            self.fail();
            if let Some(handler) = self.on_error.take() {
                handler(e);
            }
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

    #[test]
    fn the_case_logs_of_a_queue_share_one_cap() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(None).with_case_budget(1_000);
        for case in 0..20 {
            let path = dir.path().join(format!("{case}.log"));
            logs.set_current(Some(LogFile::create(&path, 1 << 20).unwrap()));
            for i in 0..10 {
                logs.output(format!("case {case} line {i}").as_bytes());
            }
        }
        logs.set_current(None);
        let total: u64 = (0..20)
            .map(|c| {
                std::fs::metadata(dir.path().join(format!("{c}.log")))
                    .unwrap()
                    .len()
            })
            .sum();
        assert!(total < 1_000 + 20 * 200, "{total}");
        let last = std::fs::read_to_string(dir.path().join("19.log")).unwrap();
        assert!(last.contains("common cap of 1000 bytes"), "{last}");
        assert!(!last.contains("case 19 line"), "{last}");
    }
}

#[cfg(test)]
mod wake_tests {
    use super::*;
    use std::time::Duration;

    /// Whether the shipper's wake-up has been rung (without waiting for it).
    async fn rung(logs: &Logs) -> bool {
        tokio::time::timeout(Duration::from_millis(1), logs.flooded())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn much_output_wakes_the_shipper_before_its_round() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::new(Some(
            LogFile::create(&dir.path().join("queue.log"), 1 << 30).unwrap(),
        ));
        let line = [b'x'; 1000];
        for _ in 0..10 {
            logs.output(&line);
        }
        assert!(!rung(&logs).await, "10 KB is not worth a round of its own");
        for _ in 0..300 {
            logs.output(&line);
        }
        assert!(rung(&logs).await, "300 KB more is");
        assert!(!rung(&logs).await, "rung once per step, not per line");
    }
}

#[cfg(test)]
mod full_disk_tests {
    use super::*;

    #[test]
    fn no_line_is_written_once_the_logs_failed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.log");
        let logs = Logs::new(Some(LogFile::create(&path, 1 << 30).unwrap()));
        logs.output(b"before");
        // The database said it is full (the shipper's way to stop the logs).
        logs.fail(std::io::Error::from_raw_os_error(libc::ENOSPC));
        for _ in 0..1000 {
            logs.output(b"a flooding console");
        }
        logs.lock().flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("| before\n"), "{text}");
    }

    #[test]
    fn a_full_disk_calls_the_error_handler_once_and_stops_the_log() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let logs = Logs::new(Some(
            LogFile::create(Path::new("/dev/full"), 1 << 30).unwrap(),
        ))
        .on_write_error(move |e| sink.lock().unwrap().push(e.kind()));
        // Flushes without an error first: they must not use up the handler.
        logs.set_current(None);
        logs.lock().flush();
        for i in 0..100_000 {
            logs.output(format!("line {i}").as_bytes());
        }
        assert_eq!(*seen.lock().unwrap(), vec![std::io::ErrorKind::StorageFull]);
    }
}
