//! The emulator and its console: start it, read every byte it prints into the logs and a
//! searchable buffer, send it text, expect patterns, stop it with its whole process group.
//!
//! Buffer rule: each `expect` consumes output up to and including its matching line; output not
//! yet consumed stays searchable by the next `expect`. The pending partial line (a prompt with
//! no newline) is searchable too; the part an `expect` matched is not matched again.

use crate::logs::Logs;
use crate::process::{self, Group, Spec};
use crate::report::LineKind;
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
/// Grace between SIGTERM and SIGKILL when stopping the emulator.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// How to start the emulator.
#[derive(Debug, Clone)]
pub struct EmulatorSpec {
    /// Shell command line; `{console_port}` is replaced for TCP consoles.
    pub command: String,
    pub console: ConsoleKind,
    pub ready: Option<Regex>,
    pub boot_timeout: Duration,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
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
    lines: VecDeque<(u64, Vec<u8>)>,
    next_seq: u64,
    partial: Vec<u8>,
    partial_consumed: usize,
    closed: Option<String>,
    last_output: Instant,
    fail_pattern: Option<Regex>,
    fail_hit: Option<u64>,
    recent: VecDeque<(u64, Vec<u8>)>,
}

impl State {
    fn push_line(&mut self, mut line: Vec<u8>) {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.fail_hit.is_none() {
            if let Some(re) = &self.fail_pattern {
                if re.is_match(&String::from_utf8_lossy(&line)) {
                    self.fail_hit = Some(seq);
                }
            }
        }
        if self.recent.len() == RECENT_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, line.clone()));
        let searchable = if self.partial_consumed > 0 {
            let skip = self.partial_consumed.min(line.len());
            self.partial_consumed = 0;
            line[skip..].to_vec()
        } else {
            line
        };
        if self.lines.len() == MAX_BUFFERED_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back((seq, searchable));
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
    bridge_port: u16,
    logs: Logs,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
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
                let port = free_port()?;
                (
                    spec.command.replace("{console_port}", &port.to_string()),
                    Some(port),
                )
            }
        };
        logs.event(&format!("starting emulator: {command}"));
        // `exec` lets the emulator replace the shell, so signals reach it directly.
        let mut proc_spec = Spec::shell(&format!("exec {command}"))
            .with_cwd(&spec.cwd)
            .with_stdin(port.is_none());
        proc_spec.env = spec.env.clone();
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
                let stream = match connect_tcp(port, spec.boot_timeout, cancel, &mut group).await {
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
        tasks.push(tokio::spawn(write_console(console_out, writer_rx)));
        let bridge = TcpListener::bind(("127.0.0.1", 0)).await?;
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
                let front = s.lines.front().map(|l| l.0).unwrap_or(s.next_seq);
                cursor = cursor.max(front);
                let start = (cursor - front) as usize;
                let mut hit = None;
                for (i, (_, line)) in s.lines.iter().enumerate().skip(start) {
                    if re.is_match(&lossy(line)) {
                        hit = Some(i);
                        break;
                    }
                }
                if let Some(i) = hit {
                    let drained: Vec<_> = s.lines.drain(..=i).collect();
                    return Ok(drained
                        .last()
                        .map(|l| lossy(&l.1).into_owned())
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
                    .map(|l| &l.1)
                    .chain(std::iter::once(&s.partial));
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

    /// Waits `d`, failing early on a fail pattern or cancellation.
    pub async fn sleep(&self, d: Duration, cancel: &CancellationToken) -> Result<(), StepFailure> {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = cancel.cancelled() => return Err(StepFailure::Cancelled),
        }
        match lock(&self.state).fail_hit {
            Some(seq) => Err(StepFailure::FailPattern(seq)),
            None => Ok(()),
        }
    }

    /// The fail pattern hit, if any, since it was set.
    pub fn fail_hit(&self) -> Option<u64> {
        lock(&self.state).fail_hit
    }

    /// The last `n` lines seen, indented, for messages.
    pub fn last_lines(&self, n: usize) -> String {
        let s = lock(&self.state);
        let mut out: Vec<String> = s
            .recent
            .iter()
            .rev()
            .take(n)
            .rev()
            .map(|(_, l)| format!("  {}", lossy(l)))
            .collect();
        let consumed = s.partial_consumed.min(s.partial.len());
        if !s.partial.is_empty() {
            out.push(format!(
                "  {} (no newline yet)",
                lossy(&s.partial[..]).trim_end()
            ));
        }
        let _ = consumed;
        if out.is_empty() {
            "  (no output)".into()
        } else {
            out.join("\n")
        }
    }

    /// The lines around line `seq` (a crash): a few before and what followed.
    pub fn context(&self, seq: u64) -> String {
        let s = lock(&self.state);
        s.recent
            .iter()
            .filter(|(n, _)| *n + 5 >= seq && *n <= seq + 15)
            .map(|(n, l)| format!("{} {}", if *n == seq { ">" } else { " " }, lossy(l)))
            .collect::<Vec<_>>()
            .join("\n")
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
            StepFailure::FailPattern(seq) => {
                format!("fail pattern matched:\n{}", self.context(*seq))
            }
            StepFailure::Cancelled => "cancelled".into(),
        }
    }

    /// Stops the emulator: TERM to its group, grace, KILL; returns its exit code if known.
    pub async fn stop(&self) -> Option<i32> {
        let status = self.group.lock().await.terminate(STOP_GRACE).await;
        for t in &self.tasks {
            t.abort();
        }
        self.logs.lock().flush();
        status.and_then(|s| s.code())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn connect_tcp(
    port: u16,
    within: Duration,
    cancel: &CancellationToken,
    group: &mut Group,
) -> Result<TcpStream, ConsoleError> {
    let start = Instant::now();
    loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
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
                let line = if s.partial.is_empty() {
                    rest[..pos].to_vec()
                } else {
                    let mut l = std::mem::take(&mut s.partial);
                    l.extend_from_slice(&rest[..pos]);
                    l
                };
                let shown = line.strip_suffix(b"\r").unwrap_or(&line);
                sinks.line(LineKind::Output, shown);
                s.push_line(line);
                rest = &rest[pos + 1..];
            }
            s.partial.extend_from_slice(rest);
            if s.partial.len() >= MAX_LINE {
                let line = std::mem::take(&mut s.partial);
                sinks.line(LineKind::Output, &line);
                s.push_line(line);
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
        s.push_line(line);
    }
    s.closed = Some(format!(
        "the emulator closed its console (exited); last lines:\n{}",
        {
            let lines: Vec<String> = s
                .recent
                .iter()
                .rev()
                .take(10)
                .rev()
                .map(|(_, l)| format!("  {}", lossy(l)))
                .collect();
            if lines.is_empty() {
                "  (no output)".to_string()
            } else {
                lines.join("\n")
            }
        }
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
