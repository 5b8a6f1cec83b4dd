//! The emulator and its console: start it, read every byte it prints into the logs and a
//! searchable buffer, send it text, expect patterns, stop it with its whole process group.
//!
//! Buffer rule: each `expect` consumes output up to and including its matching line; output not
//! yet consumed stays searchable by the next `expect`. The pending partial line (a prompt with
//! no newline) is searchable too; the part an `expect` matched is not matched again.

#[cfg(test)]
use crate::logs::LogFile;
use crate::logs::Logs;
use crate::process::{self, Group, Spec};
use crate::sandbox::{NetNs, Sandbox};
use regex::Regex;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use testarena_core::limits::MAX_LINE;
use testarena_core::repo_config::ConsoleKind;
use testarena_report::LineKind;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod io;
use io::*;

mod state;
use state::*;

/// Unconsumed complete lines kept for `expect`; older ones are dropped (memory stays flat).
const MAX_BUFFERED_LINES: usize = 50_000;
/// Lines kept for error messages ("last lines seen") and crash context.
const RECENT_LINES: usize = 40;
/// Lines quoted before a fail pattern's line, and at most after it.
const CRASH_BEFORE: usize = 5;
const CRASH_AFTER: u64 = 15;
/// Grace between SIGTERM and SIGKILL when stopping the emulator.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long a stopping emulator gets to exit by itself once its stdin is closed.
const EOF_GRACE: Duration = Duration::from_millis(100);

/// How to start the emulator.
#[derive(Debug, Clone)]
pub struct EmulatorSpec {
    /// Shell command line; `{console_port}` is replaced for TCP consoles.
    pub command: String,
    pub console: ConsoleKind,
    pub ready: Option<Regex>,
    pub boot_timeout: Duration,
    pub cwd: PathBuf,
    /// Where the emulator (and the task's `<run>` steps) run; its jail sets their environment.
    pub sandbox: Sandbox,
}

/// Why a console step did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum StepFailure {
    /// The pattern did not show up within `after`; `last_lines` is what the console showed then.
    Timeout {
        pattern: String,
        after: Duration,
        last_lines: String,
    },
    /// The console was silent for longer than the idle timeout.
    Idle(Duration),
    /// A fail pattern matched this line (sequence number).
    FailPattern(u64),
    /// The console closed (the emulator exited), and how.
    Closed(String),
    /// `expect-not` saw its pattern on `line`.
    Seen { pattern: String, line: String },
    /// A `<run>` command exited with `code` instead of `expected`.
    ExitCode { code: i32, expected: i32 },
    /// A `<run>` command ran out of time and was killed.
    RunTimedOut(Duration),
    /// A `<run>` command could not start.
    RunNotStarted(String),
    /// A `<reboot/>` could not start the emulator again.
    Reboot(String),
    /// The queue was aborted or timed out.
    Cancelled,
}

/// Why the emulator could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot start the emulator: {0}")]
    Spawn(#[from] process::ProcessError),
    #[error("cannot set up the console: {0}")]
    Io(#[from] std::io::Error),
    #[error("emulator console on TCP port {port} did not accept a connection within {after:?}")]
    TcpConnect { port: u16, after: Duration },
    #[error("emulator did not become ready: {0}")]
    NotReady(String),
    #[error("cancelled while booting")]
    Cancelled,
}

/// A running emulator with its console.
pub struct Console {
    state: Arc<Mutex<State>>,
    changed: watch::Receiver<u64>,
    writer: mpsc::Sender<Vec<u8>>,
    group: tokio::sync::Mutex<Group>,
    tasks: Vec<JoinHandle<()>>,
    /// The task reading the console; `stop` waits for it to take the last output.
    reader: Mutex<Option<JoinHandle<()>>>,
    /// Owns the emulator's stdin (stdio consoles): aborting it closes stdin.
    writer_task: JoinHandle<()>,
    stdio: bool,
    bridge_port: u16,
    logs: Logs,
}

/// Grows the emulator's stdout pipe to 1 MiB (Linux), so a burst of output does not stall the
impl Console {
    /// Starts the emulator, connects its console, and waits for the ready pattern if any.
    pub async fn start(
        spec: &EmulatorSpec,
        logs: Logs,
        cancel: &CancellationToken,
    ) -> Result<Console, ConsoleError> {
        let (command, port) = match spec.console {
            ConsoleKind::Stdio => (spec.command.clone(), None),
            ConsoleKind::Tcp => {
                let port = free_port(spec.sandbox.netns()).await?;
                let command = spec.command.replace("{console_port}", &port.to_string());
                (command, Some(port))
            }
        };
        logs.event(&format!("starting emulator: {command}"));
        // Any shell command line works (`cd x && qemu …`): signals go to the whole process
        // group, so the emulator gets them whether or not a shell stays in between.
        let group = spec
            .sandbox
            .start(
                Spec::command_line(&command)
                    .with_cwd(&spec.cwd)
                    .with_stdin(port.is_none()),
            )
            .await?;
        let console = Console::attach(spec, group, port, logs, cancel).await?;
        console.wait_ready(spec, cancel).await?;
        Ok(console)
    }

    /// Connects the running emulator's console (its stdio, or its TCP port), its side output
    /// and the bridge.
    async fn attach(
        spec: &EmulatorSpec,
        mut group: Group,
        port: Option<u16>,
        logs: Logs,
        cancel: &CancellationToken,
    ) -> Result<Console, ConsoleError> {
        let state = Arc::new(Mutex::new(State::new()));
        let (changed_tx, changed) = watch::channel(0u64);
        let (bridge_tx, _) = broadcast::channel::<Arc<Vec<u8>>>(1024);
        let (writer, writer_rx) = mpsc::channel::<Vec<u8>>(256);
        let mut tasks = Vec::new();
        let stdout = group.stdout.take();
        let stderr = group.stderr.take();
        let stdin = group.stdin.take();
        // The console's output is read from a descriptor of its own (see `read_console`).
        let (reader, console_out): (OwnedFd, Box<dyn AsyncWrite + Send + Unpin>) = match port {
            None => {
                let (Some(out), Some(input)) = (stdout, stdin) else {
                    return Err(std::io::Error::other("emulator pipes missing").into());
                };
                widen_pipe(&out);
                (out.into_owned_fd()?, Box::new(input))
            }
            Some(port) => {
                if let Some(out) = stdout {
                    tasks.push(tokio::spawn(read_side_output(out, logs.clone(), "")));
                }
                let netns = spec.sandbox.netns();
                let connected =
                    connect_tcp(netns, port, spec.boot_timeout, cancel, &mut group).await;
                let stream = match connected {
                    Ok(s) => s,
                    Err(e) => {
                        group.terminate(STOP_GRACE).await;
                        return Err(e);
                    }
                };
                // The writing half stays registered with the runtime for both directions
                // (tokio's `TcpStream`), so a TCP console's output still wakes the runtime as it
                // comes: the flood saving of `read_console` is a stdio pipe's only.
                let stream = stream.into_std()?;
                let read_side = OwnedFd::from(stream.try_clone()?);
                (read_side, Box::new(TcpStream::from_std(stream)?))
            }
        };
        let intake = Intake {
            state: state.clone(),
            logs: logs.clone(),
            changed: changed_tx,
            bridge: bridge_tx.clone(),
            generation: 0,
        };
        let reader = Mutex::new(Some(tokio::spawn(read_console(reader, intake))));
        if let Some(err) = stderr {
            let prefix = "[emulator stderr] ";
            tasks.push(tokio::spawn(read_side_output(err, logs.clone(), prefix)));
        }
        let writer_task = tokio::spawn(write_console(console_out, writer_rx));
        let bridge = listen_local(spec.sandbox.netns()).await?;
        let bridge_port = bridge.local_addr()?.port();
        tasks.push(tokio::spawn(serve_bridge(
            bridge,
            bridge_tx,
            writer.clone(),
        )));
        Ok(Console {
            state,
            changed,
            writer,
            group: tokio::sync::Mutex::new(group),
            tasks,
            reader,
            writer_task,
            stdio: port.is_none(),
            bridge_port,
            logs,
        })
    }

    /// Waits for the ready pattern, if the repository set one; stops the emulator if it does
    /// not come.
    async fn wait_ready(
        &self,
        spec: &EmulatorSpec,
        cancel: &CancellationToken,
    ) -> Result<(), ConsoleError> {
        let Some(ready) = &spec.ready else {
            return Ok(());
        };
        let failure = match self.expect(ready, spec.boot_timeout, None, cancel).await {
            Ok(_) => {
                self.logs.event(&format!("emulator ready (/{ready}/ seen)"));
                return Ok(());
            }
            Err(f) => f,
        };
        self.stop().await;
        Err(match failure {
            StepFailure::Cancelled => ConsoleError::Cancelled,
            StepFailure::Timeout { last_lines, .. } => ConsoleError::NotReady(format!(
                "ready pattern /{ready}/ not seen within {}; last lines:\n{last_lines}",
                humantime::format_duration(spec.boot_timeout),
            )),
            other => ConsoleError::NotReady(self.describe(&other)),
        })
    }

    /// The process group id of the emulator.
    pub async fn pgid(&self) -> i32 {
        self.group.lock().await.pgid
    }

    /// `tcp://127.0.0.1:<port>`: the bridge host commands use to reach the console.
    pub fn bridge_url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.bridge_port)
    }

    /// The fail pattern in force now.
    pub fn fail_pattern(&self) -> Option<Regex> {
        lock(&self.state).fail_pattern.clone()
    }

    /// Sets the pattern that fails a case as soon as it appears, clearing any earlier hit.
    pub fn set_fail_pattern(&self, re: Option<Regex>) {
        let mut s = lock(&self.state);
        s.fail_pattern = re;
        s.fail_hit = None;
        s.crash.clear();
    }

    /// Sends `text` (and a newline) to the console.
    pub async fn send(&self, text: &str, newline: bool) -> Result<(), StepFailure> {
        let mut bytes = text.as_bytes().to_vec();
        if newline {
            bytes.push(b'\n');
        }
        if let Some(reason) = lock(&self.state).closed.clone() {
            return Err(StepFailure::Closed(reason));
        }
        self.writer
            .send(bytes)
            .await
            .map_err(|_| StepFailure::Closed("console writer stopped".into()))
    }

    /// Waits for a line (or the partial line) matching `re`, consuming output through it.
    pub async fn expect(
        &self,
        re: &Regex,
        timeout: Duration,
        idle: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<String, StepFailure> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.clone();
        let mut cursor = 0u64;
        loop {
            changed.borrow_and_update();
            let idle_deadline = {
                let mut s = lock(&self.state);
                if let Some(seq) = s.fail_hit {
                    return Err(StepFailure::FailPattern(seq));
                }
                let front = s.lines.front().map(|l| l.seq).unwrap_or(s.next_seq);
                cursor = cursor.max(front);
                let start = (cursor - front) as usize;
                let mut hit = None;
                for (i, line) in s.lines.iter().enumerate().skip(start) {
                    if re.is_match(&lossy(line.searchable())) {
                        hit = Some(i);
                        break;
                    }
                }
                if let Some(i) = hit {
                    let drained: Vec<_> = s.lines.drain(..=i).collect();
                    return Ok(drained
                        .last()
                        .map(|l| lossy(l.searchable()).into_owned())
                        .unwrap_or_default());
                }
                cursor = s.next_seq;
                let consumed = s.partial_consumed.min(s.partial.len());
                if !s.partial[consumed..].is_empty() && re.is_match(&lossy(&s.partial[consumed..]))
                {
                    let text = lossy(&s.partial[consumed..]).into_owned();
                    s.partial_consumed = s.partial.len();
                    s.lines.clear();
                    return Ok(text);
                }
                if let Some(reason) = &s.closed {
                    return Err(StepFailure::Closed(reason.clone()));
                }
                match idle {
                    Some(limit) if s.last_output.elapsed() >= limit => {
                        return Err(StepFailure::Idle(limit))
                    }
                    Some(limit) => Some(tokio::time::Instant::from_std(s.last_output + limit)),
                    None => None,
                }
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(StepFailure::Timeout {
                    pattern: re.to_string(),
                    after: timeout,
                    last_lines: self.last_lines(10),
                });
            }
            let wake = idle_deadline.map_or(deadline, |i| i.min(deadline));
            tokio::select! {
                r = changed.changed() => { if r.is_err() { tokio::time::sleep(Duration::from_millis(20)).await; } }
                _ = tokio::time::sleep_until(wake) => {}
                _ = cancel.cancelled() => return Err(StepFailure::Cancelled),
            }
        }
    }

    /// Watches for `re` for `window`; fails if it appears in unconsumed or new output.
    pub async fn expect_not(
        &self,
        re: &Regex,
        window: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), StepFailure> {
        let deadline = tokio::time::Instant::now() + window;
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            {
                let s = lock(&self.state);
                if let Some(seq) = s.fail_hit {
                    return Err(StepFailure::FailPattern(seq));
                }
                let seen = s
                    .lines
                    .iter()
                    .map(|l| l.searchable())
                    .chain(std::iter::once(&s.partial[..]));
                for line in seen {
                    if re.is_match(&lossy(line)) {
                        return Err(StepFailure::Seen {
                            pattern: re.to_string(),
                            line: lossy(line).into_owned(),
                        });
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::select! {
                r = changed.changed() => { if r.is_err() { tokio::time::sleep_until(deadline).await; } }
                _ = tokio::time::sleep_until(deadline) => {}
                _ = cancel.cancelled() => return Err(StepFailure::Cancelled),
            }
        }
    }

    /// Waits `d`, failing at once on a fail pattern or cancellation.
    pub async fn sleep(&self, d: Duration, cancel: &CancellationToken) -> Result<(), StepFailure> {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            seq = self.fail_hit_seen() => return Err(StepFailure::FailPattern(seq)),
            _ = cancel.cancelled() => return Err(StepFailure::Cancelled),
        }
        match lock(&self.state).fail_hit {
            Some(seq) => Err(StepFailure::FailPattern(seq)),
            None => Ok(()),
        }
    }

    /// Resolves (with the line's number) once the fail pattern has matched a line.
    pub async fn fail_hit_seen(&self) -> u64 {
        let mut changed = self.changed.clone();
        loop {
            changed.borrow_and_update();
            if let Some(seq) = lock(&self.state).fail_hit {
                return seq;
            }
            if changed.changed().await.is_err() {
                // The reader is gone: no line can match any more.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Whether the console closed (the emulator exited, or its console connection ended).
    pub fn is_closed(&self) -> bool {
        lock(&self.state).closed.is_some()
    }

    /// The fail pattern hit, if any, since it was set.
    pub fn fail_hit(&self) -> Option<u64> {
        lock(&self.state).fail_hit
    }

    /// The last `n` lines seen, indented, for messages.
    pub fn last_lines(&self, n: usize) -> String {
        lock(&self.state).last_lines(n)
    }

    /// The lines around line `seq` (a crash): a few before and what followed.
    pub fn context(&self, seq: u64) -> String {
        self.crash_block(seq)
            .iter()
            .map(|(n, l)| format!("{} {l}", if *n == seq { ">" } else { " " }))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The crash block of line `seq` (the fail pattern's hit): a few lines before it and what
    /// followed, with their sequence numbers.
    pub fn crash_block(&self, seq: u64) -> Vec<(u64, String)> {
        let s = lock(&self.state);
        let lines: Box<dyn Iterator<Item = &(u64, Arc<[u8]>)>> =
            if s.fail_hit == Some(seq) && !s.crash.is_empty() {
                Box::new(s.crash.iter())
            } else {
                Box::new(s.recent.iter())
            };
        lines
            .filter(|(n, _)| *n + CRASH_BEFORE as u64 >= seq && *n <= seq + CRASH_AFTER)
            .map(|(n, l)| (*n, lossy(l).into_owned()))
            .collect()
    }

    /// The text of the line the fail pattern matched, while it is remembered.
    fn crash_line(&self, seq: u64) -> Option<String> {
        let s = lock(&self.state);
        s.crash
            .iter()
            .chain(s.recent.iter())
            .find(|(n, _)| *n == seq)
            .map(|(_, l)| lossy(l).into_owned())
    }

    /// Turns a step failure into the message a user reads: the one place that does.
    pub fn describe(&self, f: &StepFailure) -> String {
        let human = |d: &Duration| humantime::format_duration(*d).to_string();
        match f {
            StepFailure::Timeout {
                pattern,
                after,
                last_lines,
            } => format!(
                "expected /{pattern}/ within {}; last lines seen:\n{last_lines}",
                human(after)
            ),
            StepFailure::Closed(m) | StepFailure::RunNotStarted(m) | StepFailure::Reboot(m) => {
                let what = match f {
                    StepFailure::RunNotStarted(_) => "command could not run: ",
                    StepFailure::Reboot(_) => "reboot failed: ",
                    _ => "",
                };
                format!("{what}{m}")
            }
            StepFailure::Seen { pattern, line } => format!("/{pattern}/ appeared: {line}"),
            StepFailure::ExitCode { code, expected } => {
                format!("command exited with code {code}, expected {expected}")
            }
            StepFailure::RunTimedOut(d) => {
                format!("command timed out after {} and was killed", human(d))
            }
            StepFailure::Idle(d) => format!(
                "console silent for {}; last lines:\n{}",
                humantime::format_duration(*d),
                self.last_lines(10)
            ),
            StepFailure::FailPattern(seq) => format!(
                "fail pattern matched: {}\n{}",
                self.crash_line(*seq).unwrap_or_default(),
                self.context(*seq)
            ),
            StepFailure::Cancelled => "cancelled".into(),
        }
    }

    /// Stops the emulator: TERM to its group, grace, KILL; returns its exit code if known.
    pub async fn stop(&self) -> Option<i32> {
        // Close stdin first: firmware that exits at end of input (as a console program on a
        // closed line should) then stops in a few ms, where QEMU blocked in a semihosting read
        // may take tens of ms to act on SIGTERM. TERM, grace and KILL follow regardless.
        self.writer_task.abort();
        let mut group = self.group.lock().await;
        if self.stdio {
            let _ = tokio::time::timeout(EOF_GRACE, group.wait()).await;
        }
        let status = group.terminate(STOP_GRACE).await;
        // The group is gone, so the console is at its end: the reader takes what is left.
        let reader = lock_reader(&self.reader).take();
        if let Some(mut reader) = reader {
            if tokio::time::timeout(DRAIN_LIMIT, &mut reader)
                .await
                .is_err()
            {
                reader.abort();
            }
        }
        for t in &self.tasks {
            t.abort();
        }
        self.logs.lock().flush();
        status.and_then(|s| s.code())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.writer_task.abort();
        if let Some(reader) = lock_reader(&self.reader).take() {
            reader.abort();
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock_reader(r: &Mutex<Option<JoinHandle<()>>>) -> MutexGuard<'_, Option<JoinHandle<()>>> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}
#[cfg(test)]
mod tests;
