//! Following a queue: progress on stderr (a spinner per phase on a terminal, plain lines
//! otherwise) and its console log on stdout as it grows.

use super::render::{describe, long_span};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::time::{Duration, Instant};
use testarena_client::{Client, ClientError, Phase, Queue, QueueStatus, MAX_LOG_CHUNK};

/// How often the server is asked for news.
pub const POLL: Duration = Duration::from_millis(300);
/// How long a follower keeps retrying while the server is unreachable (a restart, say).
const RETRY_FOR: Duration = Duration::from_secs(120);

/// Tracks how long calls have been failing, and says when to give up. A server that never
/// answered is not waited for: that is a wrong address, not a restart.
#[derive(Debug, Default)]
struct Trouble {
    since: Option<Instant>,
    contact: bool,
}

impl Trouble {
    /// Trouble tracking for a server that has already answered.
    fn after_contact() -> Trouble {
        Trouble {
            since: None,
            contact: true,
        }
    }

    /// Records a failure; gives the error back when it is not worth another try.
    fn failed(&mut self, e: ClientError) -> Result<String, ClientError> {
        let since = *self.since.get_or_insert_with(Instant::now);
        if self.contact && e.is_transient() && since.elapsed() < RETRY_FOR {
            Ok(format!("{e}; retrying"))
        } else {
            Err(e)
        }
    }

    fn ok(&mut self) {
        self.since = None;
        self.contact = true;
    }
}

/// Splits a byte stream into whole lines, keeping the unfinished tail for later.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// Adds bytes; returns the complete lines they finished (with their newlines).
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        self.partial.extend_from_slice(data);
        match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(end) => {
                let rest = self.partial.split_off(end + 1);
                std::mem::replace(&mut self.partial, rest)
            }
            None => Vec::new(),
        }
    }

    /// The unfinished tail, ended with a newline (empty if there is none).
    pub fn rest(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.partial);
        if !out.is_empty() {
            out.push(b'\n');
        }
        out
    }
}

/// Progress on stderr: a spinner per phase on a terminal, plain lines otherwise.
pub struct Progress {
    id: i64,
    tty: bool,
    bar: Option<ProgressBar>,
    key: String,
    msg: String,
    start: Instant,
}

impl Progress {
    /// Progress of queue `id`; `tty` picks spinners over plain lines.
    pub fn new(id: i64, tty: bool) -> Progress {
        Progress {
            id,
            tty,
            bar: None,
            key: String::new(),
            msg: String::new(),
            start: Instant::now(),
        }
    }

    fn spinner(msg: String) -> ProgressBar {
        let bar = ProgressBar::new_spinner();
        let style = ProgressStyle::with_template("{spinner:.cyan} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_message(msg);
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// Stops the spinner of the current phase, marked as gone well or not.
    fn finish_bar(&mut self, ok: bool) {
        if let Some(bar) = self.bar.take() {
            let (template, mark) = if ok {
                ("{prefix:.green} {msg} [{elapsed}]", "✔")
            } else {
                ("{prefix:.red} {msg} [{elapsed}]", "✘")
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
                bar.set_prefix(mark);
            }
            bar.finish();
        }
    }

    fn plain(&self, msg: &str) {
        let secs = self.start.elapsed().as_secs();
        eprintln!("[{:>7}] queue {}: {msg}", long_span(secs), self.id);
    }

    /// Shows where the queue is now.
    pub fn update(&mut self, q: &Queue) {
        let key = match (q.status.is_finished(), q.phase) {
            (false, Some(p)) => p.to_string(),
            _ => q.status.to_string(),
        };
        let msg = describe(q);
        if self.tty {
            if key != self.key || self.bar.is_none() {
                self.finish_bar(true);
                self.bar = Some(Self::spinner(msg.clone()));
            } else if msg != self.msg {
                if let Some(bar) = &self.bar {
                    bar.set_message(msg.clone());
                }
            }
        } else if msg != self.msg {
            self.plain(&msg);
        }
        self.key = key;
        self.msg = msg;
    }

    /// A passing remark (the server went away, say) that does not change the phase.
    pub fn note(&mut self, text: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(format!("{} ({text})", self.msg)),
            None => self.plain(text),
        }
        // Make the next update print again even if nothing changed.
        self.msg.clear();
    }

    /// Stops the spinner at the end, leaving its last line on screen (the verdict itself is
    /// printed by the caller).
    pub fn finish(&mut self, q: &Queue) {
        if let Some(bar) = &self.bar {
            if self.key == Phase::Testing.as_str() {
                // Show the final case counts on the testing line, not the last polled ones.
                let mut last = q.clone();
                last.status = QueueStatus::Running;
                last.phase = Some(Phase::Testing);
                last.abort_requested = false;
                bar.set_message(describe(&last));
            }
        }
        self.finish_bar(q.status == QueueStatus::Passed);
    }

    /// Writes console output to stdout without tearing the spinner.
    pub fn write_out(&self, data: &[u8]) -> std::io::Result<()> {
        let write = || {
            let mut out = std::io::stdout().lock();
            out.write_all(data)?;
            out.flush()
        };
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

/// Follows a queue until it finishes: streams its log to stdout (when `stream_log`) and shows
/// progress. Returns the finished queue.
pub async fn wait(
    api: &Client,
    id: i64,
    stream_log: bool,
    tty: bool,
) -> Result<Queue, ClientError> {
    let mut progress = Progress::new(id, tty);
    let mut lines = Lines::default();
    let mut offset = 0u64;
    let mut out_ok = stream_log;
    let mut trouble = Trouble::after_contact();
    loop {
        let mut more = false;
        let step = async {
            if stream_log {
                let chunk = api.queue_log(id, offset).await?;
                offset = chunk.next;
                more = chunk.data.len() >= MAX_LOG_CHUNK;
                let whole = lines.push(&chunk.data);
                if out_ok && !whole.is_empty() && progress.write_out(&whole).is_err() {
                    // stdout is gone (a closed pipe): keep waiting for the verdict anyway.
                    out_ok = false;
                }
            }
            api.queue(id).await
        }
        .await;
        match step {
            Ok(q) if q.status.is_finished() => {
                // The worker writes the log before it sets the verdict: drain what is left.
                if stream_log {
                    loop {
                        let Ok(chunk) = api.queue_log(id, offset).await else {
                            break;
                        };
                        if chunk.data.is_empty() {
                            break;
                        }
                        offset = chunk.next;
                        let whole = lines.push(&chunk.data);
                        if out_ok && progress.write_out(&whole).is_err() {
                            out_ok = false;
                        }
                    }
                    let rest = lines.rest();
                    if out_ok && !rest.is_empty() {
                        let _ = progress.write_out(&rest);
                    }
                }
                progress.finish(&q);
                return Ok(q);
            }
            Ok(q) => {
                trouble.ok();
                progress.update(&q);
            }
            Err(e) => {
                let note = trouble.failed(e)?;
                progress.note(&note);
            }
        }
        if !more {
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Copies a queue's log to stdout; with `follow`, keeps polling until the queue finishes.
pub async fn copy_log(api: &Client, id: i64, follow: bool) -> Result<(), ClientError> {
    let mut offset = 0u64;
    let mut trouble = Trouble::default();
    loop {
        let chunk = match api.queue_log(id, offset).await {
            Ok(c) => {
                trouble.ok();
                c
            }
            Err(e) if follow => {
                let note = trouble.failed(e)?;
                eprintln!("testarena: {note}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        offset = chunk.next;
        if !chunk.data.is_empty() {
            let mut out = std::io::stdout().lock();
            if out
                .write_all(&chunk.data)
                .and_then(|()| out.flush())
                .is_err()
            {
                // The reader went away (`| head`): nothing more to do.
                return Ok(());
            }
            if chunk.data.len() >= MAX_LOG_CHUNK {
                continue;
            }
        }
        if !follow || (chunk.data.is_empty() && chunk.finished()) {
            if chunk.data.is_empty() {
                return Ok(());
            }
            continue;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_the_tail() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"ab"), b"");
        assert_eq!(l.push(b"c\nde"), b"abc\n");
        assert_eq!(l.push(b"f\ng\nh"), b"def\ng\n");
        assert_eq!(l.rest(), b"h\n");
        assert_eq!(l.rest(), b"");
    }

    #[test]
    fn trouble_gives_up_on_client_errors_at_once() {
        let away = || ClientError::Api {
            status: 503,
            code: "database_busy".into(),
            message: "busy".into(),
        };
        let mut t = Trouble::default();
        assert!(t.failed(away()).is_err(), "no contact yet");
        t.ok();
        assert!(t.failed(away()).is_ok());
        let e = ClientError::Api {
            status: 404,
            code: "not_found".into(),
            message: "gone".into(),
        };
        assert!(t.failed(e).is_err());
    }
}
