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
use crate::report::LineKind;
use crate::sandbox::{NetNs, Sandbox};
use regex::Regex;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use testarena_core::repo_config::ConsoleKind;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Unconsumed complete lines kept for `expect`; older ones are dropped (memory stays flat).
const MAX_BUFFERED_LINES: usize = 50_000;
/// Longest partial line kept before it is treated as a line of its own.
const MAX_LINE: usize = 64 * 1024;
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
    /// The pattern did not show up in time.
    Timeout(String),
    /// The console was silent for longer than the idle timeout.
    Idle(Duration),
    /// A fail pattern matched this line (sequence number).
    FailPattern(u64),
    /// The console closed (emulator exited).
    Closed(String),
    /// `expect-not` saw its pattern.
    Unexpected(String),
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

struct State {
    lines: VecDeque<Line>,
    next_seq: u64,
    partial: Vec<u8>,
    partial_consumed: usize,
    closed: Option<String>,
    last_output: Instant,
    fail_pattern: Option<Regex>,
    fail_hit: Option<u64>,
    /// The lines around the fail pattern's hit, kept apart from `recent` so that a crash
    /// followed by a long reboot banner is still quoted with its own lines.
    crash: Vec<(u64, Arc<[u8]>)>,
    recent: VecDeque<(u64, Arc<[u8]>)>,
}

/// One unconsumed console line: shared with the recent-lines ring (one allocation per line).
struct Line {
    seq: u64,
    text: Arc<[u8]>,
    /// Bytes at the start already consumed by an `expect` that matched the partial line.
    skip: usize,
}

impl Line {
    /// The part an `expect` may still match.
    fn searchable(&self) -> &[u8] {
        &self.text[self.skip.min(self.text.len())..]
    }
}

impl State {
    /// The last `n` lines seen (and the pending partial line), indented, for messages.
    fn last_lines(&self, n: usize) -> String {
        let mut out: Vec<String> = self
            .recent
            .iter()
            .rev()
            .take(n)
            .rev()
            .map(|(_, l)| format!("  {}", lossy(l)))
            .collect();
        if !self.partial.is_empty() {
            out.push(format!(
                "  {} (no newline yet)",
                lossy(&self.partial).trim_end()
            ));
        }
        if out.is_empty() {
            "  (no output)".into()
        } else {
            out.join("\n")
        }
    }

    fn push_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.fail_hit.is_none() {
            if let Some(re) = &self.fail_pattern {
                if re.is_match(&String::from_utf8_lossy(line)) {
                    self.fail_hit = Some(seq);
                }
            }
        }
        let text: Arc<[u8]> = Arc::from(line);
        self.keep_crash_context(seq, &text);
        if self.recent.len() == RECENT_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, text.clone()));
        let skip = std::mem::take(&mut self.partial_consumed);
        if self.lines.len() == MAX_BUFFERED_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(Line { seq, text, skip });
    }
}

impl State {
    /// On the fail pattern's hit, keeps the lines before it; then the lines after it.
    fn keep_crash_context(&mut self, seq: u64, text: &Arc<[u8]>) {
        let Some(hit) = self.fail_hit else { return };
        if seq == hit {
            let before = self.recent.len().saturating_sub(CRASH_BEFORE);
            self.crash = self.recent.iter().skip(before).cloned().collect();
        }
        if seq <= hit + CRASH_AFTER {
            self.crash.push((seq, text.clone()));
        }
    }
}

fn lossy(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// A running emulator with its console.
pub struct Console {
    state: Arc<Mutex<State>>,
    changed: watch::Receiver<u64>,
    writer: mpsc::Sender<Vec<u8>>,
    group: tokio::sync::Mutex<Group>,
    tasks: Vec<JoinHandle<()>>,
    /// Owns the emulator's stdin (stdio consoles): aborting it closes stdin.
    writer_task: JoinHandle<()>,
    stdio: bool,
    bridge_port: u16,
    logs: Logs,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Grows the emulator's stdout pipe to 1 MiB (Linux), so a burst of output does not stall the
/// emulator while the reader is busy writing logs. Best effort: the default 64 KiB still works.
fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: fcntl(F_SETPIPE_SZ) on a pipe descriptor we own has no memory effects.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

/// A free TCP port on 127.0.0.1 of `netns` (or of the host).
async fn free_port(netns: Option<&Arc<NetNs>>) -> std::io::Result<u16> {
    let l = std_in_netns(netns, || std::net::TcpListener::bind(("127.0.0.1", 0))).await?;
    Ok(l.local_addr()?.port())
}

/// Runs a blocking socket call, inside `netns` if there is one (on a thread that joins it),
/// so that the socket it makes lives in that namespace.
async fn std_in_netns<T: Send + 'static>(
    netns: Option<&Arc<NetNs>>,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let ns = netns.cloned();
    tokio::task::spawn_blocking(move || match ns {
        Some(ns) => ns.run(f),
        None => f(),
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Listens on a free port of 127.0.0.1 in `netns` (or the host).
async fn listen_local(netns: Option<&Arc<NetNs>>) -> std::io::Result<TcpListener> {
    let l = std_in_netns(netns, || {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
    .await?;
    TcpListener::from_std(l)
}

/// Connects to 127.0.0.1:`port` in `netns` (or the host).
async fn connect_local(netns: Option<&Arc<NetNs>>, port: u16) -> std::io::Result<TcpStream> {
    let s = std_in_netns(netns, move || {
        let s = std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(2),
        )?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .await?;
    TcpStream::from_std(s)
}

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
                (
                    spec.command.replace("{console_port}", &port.to_string()),
                    Some(port),
                )
            }
        };
        logs.event(&format!("starting emulator: {command}"));
        // Any shell command line works (`cd x && qemu …`): signals go to the whole process
        // group, so the emulator gets them whether or not the shell stays in between.
        let proc_spec = spec.sandbox.wrap(
            Spec::shell(&command)
                .with_cwd(&spec.cwd)
                .with_stdin(port.is_none()),
        );
        let mut group = process::spawn(&proc_spec)?;
        let state = Arc::new(Mutex::new(State {
            lines: VecDeque::new(),
            next_seq: 0,
            partial: Vec::new(),
            partial_consumed: 0,
            closed: None,
            last_output: Instant::now(),
            fail_pattern: None,
            fail_hit: None,
            crash: Vec::new(),
            recent: VecDeque::new(),
        }));
        let (changed_tx, changed) = watch::channel(0u64);
        let (bridge_tx, _) = broadcast::channel::<Arc<Vec<u8>>>(1024);
        let (writer, writer_rx) = mpsc::channel::<Vec<u8>>(256);
        let mut tasks = Vec::new();
        let stdout = group.child.stdout.take();
        let stderr = group.child.stderr.take();
        let stdin = group.child.stdin.take();
        let console_out: Box<dyn AsyncWrite + Send + Unpin>;
        match port {
            None => {
                let (Some(out), Some(input)) = (stdout, stdin) else {
                    return Err(ConsoleError::Io(std::io::Error::other(
                        "emulator pipes missing",
                    )));
                };
                widen_pipe(&out);
                tasks.push(tokio::spawn(read_console(
                    out,
                    state.clone(),
                    logs.clone(),
                    changed_tx,
                    bridge_tx.clone(),
                )));
                console_out = Box::new(input);
            }
            Some(port) => {
                if let Some(out) = stdout {
                    tasks.push(tokio::spawn(read_side_output(out, logs.clone(), "")));
                }
                let netns = spec.sandbox.netns();
                let stream =
                    match connect_tcp(netns, port, spec.boot_timeout, cancel, &mut group).await {
                        Ok(s) => s,
                        Err(e) => {
                            group.terminate(STOP_GRACE).await;
                            return Err(e);
                        }
                    };
                let (r, w) = stream.into_split();
                tasks.push(tokio::spawn(read_console(
                    r,
                    state.clone(),
                    logs.clone(),
                    changed_tx,
                    bridge_tx.clone(),
                )));
                console_out = Box::new(w);
            }
        }
        if let Some(err) = stderr {
            tasks.push(tokio::spawn(read_side_output(
                err,
                logs.clone(),
                "[emulator stderr] ",
            )));
        }
        let writer_task = tokio::spawn(write_console(console_out, writer_rx));
        let bridge = listen_local(spec.sandbox.netns()).await?;
        let bridge_port = bridge.local_addr()?.port();
        tasks.push(tokio::spawn(serve_bridge(
            bridge,
            bridge_tx,
            writer.clone(),
        )));
        let console = Console {
            state,
            changed,
            writer,
            group: tokio::sync::Mutex::new(group),
            tasks,
            writer_task,
            stdio: port.is_none(),
            bridge_port,
            logs,
        };
        if let Some(ready) = &spec.ready {
            match console.expect(ready, spec.boot_timeout, None, cancel).await {
                Ok(_) => console
                    .logs
                    .event(&format!("emulator ready (/{ready}/ seen)")),
                Err(f) => {
                    let why = match f {
                        StepFailure::Cancelled => {
                            console.stop().await;
                            return Err(ConsoleError::Cancelled);
                        }
                        StepFailure::Timeout(_) => format!(
                            "ready pattern /{ready}/ not seen within {}; last lines:\n{}",
                            humantime::format_duration(spec.boot_timeout),
                            console.last_lines(10)
                        ),
                        other => console.describe(&other),
                    };
                    console.stop().await;
                    return Err(ConsoleError::NotReady(why));
                }
            }
        }
        Ok(console)
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
                return Err(StepFailure::Timeout(format!(
                    "expected /{re}/ within {}; last lines seen:\n{}",
                    humantime::format_duration(timeout),
                    self.last_lines(10)
                )));
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
                        return Err(StepFailure::Unexpected(format!(
                            "/{re}/ appeared: {}",
                            lossy(line)
                        )));
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
        let s = lock(&self.state);
        let lines: Box<dyn Iterator<Item = &(u64, Arc<[u8]>)>> =
            if s.fail_hit == Some(seq) && !s.crash.is_empty() {
                Box::new(s.crash.iter())
            } else {
                Box::new(s.recent.iter())
            };
        lines
            .filter(|(n, _)| *n + CRASH_BEFORE as u64 >= seq && *n <= seq + CRASH_AFTER)
            .map(|(n, l)| format!("{} {}", if *n == seq { ">" } else { " " }, lossy(l)))
            .collect::<Vec<_>>()
            .join("\n")
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

    /// Turns a failure into the message a user reads.
    pub fn describe(&self, f: &StepFailure) -> String {
        match f {
            StepFailure::Timeout(m) | StepFailure::Closed(m) | StepFailure::Unexpected(m) => {
                m.clone()
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
            let _ = tokio::time::timeout(EOF_GRACE, group.child.wait()).await;
        }
        let status = group.terminate(STOP_GRACE).await;
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
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn connect_tcp(
    netns: Option<&Arc<NetNs>>,
    port: u16,
    within: Duration,
    cancel: &CancellationToken,
    group: &mut Group,
) -> Result<TcpStream, ConsoleError> {
    let start = Instant::now();
    loop {
        if let Ok(s) = connect_local(netns, port).await {
            let _ = s.set_nodelay(true);
            return Ok(s);
        }
        if let Ok(Some(status)) = group.child.try_wait() {
            return Err(ConsoleError::NotReady(format!(
                "emulator exited ({status}) before its console accepted a connection"
            )));
        }
        if start.elapsed() >= within {
            return Err(ConsoleError::TcpConnect {
                port,
                after: within,
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = cancel.cancelled() => return Err(ConsoleError::Cancelled),
        }
    }
}

/// Reads the console: splits lines, logs them, feeds the buffer and the bridge, wakes waiters.
async fn read_console(
    mut input: impl AsyncRead + Unpin,
    state: Arc<Mutex<State>>,
    logs: Logs,
    changed: watch::Sender<u64>,
    bridge: broadcast::Sender<Arc<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut generation = 0u64;
    loop {
        let n = match input.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if bridge.receiver_count() > 0 {
            let _ = bridge.send(Arc::new(chunk.to_vec()));
        }
        {
            let mut s = lock(&state);
            let mut sinks = logs.lock();
            s.last_output = Instant::now();
            let mut rest = chunk;
            while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
                if s.partial.is_empty() {
                    let line = &rest[..pos];
                    sinks.line(LineKind::Output, line.strip_suffix(b"\r").unwrap_or(line));
                    s.push_line(line);
                } else {
                    let mut line = std::mem::take(&mut s.partial);
                    line.extend_from_slice(&rest[..pos]);
                    sinks.line(LineKind::Output, line.strip_suffix(b"\r").unwrap_or(&line));
                    s.push_line(&line);
                }
                rest = &rest[pos + 1..];
            }
            s.partial.extend_from_slice(rest);
            if s.partial.len() >= MAX_LINE {
                let line = std::mem::take(&mut s.partial);
                sinks.line(LineKind::Output, &line);
                s.push_line(&line);
            }
            sinks.flush();
        }
        generation += 1;
        let _ = changed.send(generation);
    }
    let mut s = lock(&state);
    if !s.partial.is_empty() {
        let line = std::mem::take(&mut s.partial);
        logs.lock().line(LineKind::Output, &line);
        s.push_line(&line);
    }
    let last = s.last_lines(10);
    s.closed = Some(format!(
        "the emulator closed its console (exited); last lines:\n{last}"
    ));
    drop(s);
    logs.lock().flush();
    generation += 1;
    let _ = changed.send(generation);
}

/// Logs an emulator's secondary output (stderr, or stdout when the console is TCP).
async fn read_side_output(input: impl AsyncRead + Unpin, logs: Logs, prefix: &'static str) {
    use tokio::io::AsyncBufReadExt;
    let mut reader = tokio::io::BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                let mut shown = prefix.as_bytes().to_vec();
                shown.extend_from_slice(text);
                logs.output(&shown);
            }
        }
    }
}

async fn write_console(
    mut out: Box<dyn AsyncWrite + Send + Unpin>,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    while let Some(bytes) = rx.recv().await {
        if out.write_all(&bytes).await.is_err() || out.flush().await.is_err() {
            break;
        }
    }
}

/// Accepts host commands' connections: console output is copied to them, their input is sent on.
async fn serve_bridge(
    listener: TcpListener,
    output: broadcast::Sender<Arc<Vec<u8>>>,
    input: mpsc::Sender<Vec<u8>>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        let mut rx = output.subscribe();
        let input = input.clone();
        tokio::spawn(async move {
            let (mut r, mut w) = stream.into_split();
            let to_client = async move {
                loop {
                    match rx.recv().await {
                        Ok(chunk) => {
                            if w.write_all(&chunk).await.is_err() {
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    }
                }
            };
            let from_client = async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if input.send(buf[..n].to_vec()).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            tokio::select! { _ = to_client => {}, _ = from_client => {} }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &str) -> EmulatorSpec {
        // As the worker does: orphaned group members become ours to reap, so stops are quick.
        let _ = process::become_subreaper();
        EmulatorSpec {
            command: command.to_string(),
            console: ConsoleKind::Stdio,
            ready: None,
            boot_timeout: Duration::from_secs(10),
            cwd: std::env::temp_dir(),
            sandbox: Sandbox::unconfined(),
        }
    }

    fn re(p: &str) -> Regex {
        Regex::new(p).unwrap()
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn expect_consumes_through_its_match_and_keeps_the_rest() {
        let cancel = CancellationToken::new();
        // An "emulator" that prints three lines (CRLF), a prompt without newline, then echoes input.
        let c = Console::start(
            &spec("printf 'one\\r\\ntwo\\nthree\\nprompt> '; cat"),
            Logs::new(None),
            &cancel,
        )
        .await
        .unwrap();
        assert_eq!(
            c.expect(&re("^two$"), T, None, &cancel).await.unwrap(),
            "two",
            "\\r is not part of the line"
        );
        // "one" was consumed by the match on "two" (output up to and including it).
        let again = c
            .expect(&re("^one$"), Duration::from_millis(200), None, &cancel)
            .await;
        assert!(matches!(again, Err(StepFailure::Timeout(_))), "{again:?}");
        // "three" arrived earlier and is still there; then the prompt, a partial line.
        assert_eq!(
            c.expect(&re("^three$"), T, None, &cancel).await.unwrap(),
            "three"
        );
        assert_eq!(
            c.expect(&re("^prompt> $"), T, None, &cancel).await.unwrap(),
            "prompt> "
        );
        // The matched prompt is not matched again; what follows it on the line is.
        c.send("hello", true).await.unwrap();
        assert_eq!(
            c.expect(&re("^hello$"), T, None, &cancel).await.unwrap(),
            "hello"
        );
        c.stop().await;
    }

    #[tokio::test]
    async fn expect_not_idle_and_fail_pattern() {
        let cancel = CancellationToken::new();
        let c = Console::start(&spec("cat"), Logs::new(None), &cancel)
            .await
            .unwrap();
        c.send("calm", true).await.unwrap();
        assert!(matches!(
            c.expect_not(&re("PANIC"), Duration::from_millis(300), &cancel)
                .await,
            Ok(())
        ));
        c.send("PANIC now", true).await.unwrap();
        assert!(matches!(
            c.expect_not(&re("PANIC"), T, &cancel).await,
            Err(StepFailure::Unexpected(_))
        ));
        let idle = c
            .expect(&re("^never$"), T, Some(Duration::from_millis(300)), &cancel)
            .await;
        assert_eq!(idle, Err(StepFailure::Idle(Duration::from_millis(300))));
        c.set_fail_pattern(Some(re("Guru Meditation")));
        c.send("Guru Meditation Error: boom", true).await.unwrap();
        let hit = c.expect(&re("^never$"), T, None, &cancel).await;
        let Err(StepFailure::FailPattern(seq)) = hit else {
            panic!("{hit:?}")
        };
        assert!(c.context(seq).contains("> Guru Meditation Error: boom"));
        c.set_fail_pattern(None);
        cancel.cancel();
        assert_eq!(
            c.expect(&re("^never$"), T, None, &cancel).await,
            Err(StepFailure::Cancelled)
        );
        c.stop().await;
    }

    /// A crash during a `<sleep>`, followed by a reboot banner longer than the recent-lines
    /// ring: the sleep fails at once, and the message quotes the crash, not the banner.
    #[tokio::test]
    async fn a_crash_during_sleep_fails_at_once_with_its_own_lines() {
        let cancel = CancellationToken::new();
        let script = "sleep 0.3; echo 'Guru Meditation Error: Core 0 panic'; \
                      echo 'Backtrace: 0x400d1234:0x3ffb1f00'; \
                      for i in $(seq 1 100); do echo \"boot banner $i\"; done; cat";
        let c = Console::start(&spec(script), Logs::new(None), &cancel)
            .await
            .unwrap();
        c.set_fail_pattern(Some(re("Guru Meditation")));
        let started = Instant::now();
        let r = c.sleep(Duration::from_secs(10), &cancel).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let Err(f @ StepFailure::FailPattern(_)) = r else {
            panic!("{r:?}")
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = c.describe(&f);
        assert!(
            text.contains("> Guru Meditation Error: Core 0 panic"),
            "{text}"
        );
        assert!(text.contains("Backtrace: 0x400d1234"), "{text}");
        assert!(!text.contains("boot banner 90"), "{text}");
        c.stop().await;
    }

    #[tokio::test]
    async fn non_utf8_is_kept_and_an_exit_is_reported() {
        let cancel = CancellationToken::new();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("q.log");
        let logs = Logs::new(Some(LogFile::create(&log, 1 << 20).unwrap()));
        let c = Console::start(
            &spec("printf 'bad \\377\\376 bytes\\nbye\\n'"),
            logs,
            &cancel,
        )
        .await
        .unwrap();
        assert!(c
            .expect(&re("^bad .* bytes$"), T, None, &cancel)
            .await
            .is_ok());
        let closed = c.expect(&re("^never$"), T, None, &cancel).await;
        assert!(
            matches!(closed, Err(StepFailure::Closed(ref m)) if m.contains("bye")),
            "{closed:?}"
        );
        c.stop().await;
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("| bad \\xff\\xfe bytes"), "{text}");
    }

    #[tokio::test]
    async fn ready_pattern_and_boot_failures() {
        let cancel = CancellationToken::new();
        let mut s = spec("printf 'booting\\nready> '; cat");
        s.ready = Some(re("^ready> $"));
        let c = Console::start(&s, Logs::new(None), &cancel).await.unwrap();
        c.stop().await;
        let mut s = spec("sleep 30");
        s.ready = Some(re("^ready$"));
        s.boot_timeout = Duration::from_millis(300);
        let err = Console::start(&s, Logs::new(None), &cancel)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not seen within"), "{err}");
        // TCP console: the command gets a port; nobody listens there, so connecting times out.
        let mut s = spec("sleep 30 # {console_port}");
        s.console = ConsoleKind::Tcp;
        s.boot_timeout = Duration::from_millis(300);
        let err = Console::start(&s, Logs::new(None), &cancel)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("did not accept a connection"), "{err}");
    }
}
