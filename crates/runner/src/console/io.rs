//! The console's plumbing: sockets made inside the task's network namespace, the TCP console connection, the tasks that read the emulator's output into the buffer and logs, write to it, and serve the bridge.

use super::*;
use crate::logs::Sinks;
use std::io::{ErrorKind, Read};
use std::os::fd::OwnedFd;
use std::time::SystemTime;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// emulator while the reader is busy writing logs. Best effort: the default 64 KiB still works.
pub(super) fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: fcntl(F_SETPIPE_SZ) on a pipe descriptor we own has no memory effects.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

/// A free TCP port on 127.0.0.1 of `netns` (or of the host).
pub(super) async fn free_port(netns: Option<&Arc<NetNs>>) -> std::io::Result<u16> {
    let l = std_in_netns(netns, || std::net::TcpListener::bind(("127.0.0.1", 0))).await?;
    Ok(l.local_addr()?.port())
}

/// Runs a blocking socket call, inside `netns` if there is one (on a thread that joins it),
/// so that the socket it makes lives in that namespace.
pub(super) async fn std_in_netns<T: Send + 'static>(
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
pub(super) async fn listen_local(netns: Option<&Arc<NetNs>>) -> std::io::Result<TcpListener> {
    let l = std_in_netns(netns, || {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
    .await?;
    TcpListener::from_std(l)
}

/// Connects to 127.0.0.1:`port` in `netns` (or the host).
pub(super) async fn connect_local(
    netns: Option<&Arc<NetNs>>,
    port: u16,
) -> std::io::Result<TcpStream> {
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

pub(super) async fn connect_tcp(
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
        if let Ok(Some(status)) = group.try_wait() {
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

/// What becomes of the console's output: lines split, logged, kept for `expect` and the bridge,
/// waiters woken. Fed by [`read_console`].
pub(super) struct Intake {
    pub state: Arc<Mutex<State>>,
    pub logs: Logs,
    pub changed: watch::Sender<u64>,
    pub bridge: broadcast::Sender<Arc<Vec<u8>>>,
    pub generation: u64,
}

impl Intake {
    /// Takes one read's worth of output.
    fn take(&mut self, chunk: &[u8]) {
        if self.bridge.receiver_count() > 0 {
            let _ = self.bridge.send(Arc::new(chunk.to_vec()));
        }
        {
            let mut s = lock(&self.state);
            let mut sinks = self.logs.lock();
            s.last_output = Instant::now();
            let at = SystemTime::now();
            let mut rest = chunk;
            while let Some(pos) = memchr::memchr(b'\n', rest) {
                if s.partial.is_empty() {
                    keep_line(&mut s, &mut sinks, at, &rest[..pos]);
                } else {
                    let mut line = std::mem::take(&mut s.partial);
                    line.extend_from_slice(&rest[..pos]);
                    keep_line(&mut s, &mut sinks, at, &line);
                }
                rest = &rest[pos + 1..];
            }
            s.partial.extend_from_slice(rest);
            if s.partial.len() >= MAX_LINE {
                let line = std::mem::take(&mut s.partial);
                keep_line(&mut s, &mut sinks, at, &line);
            }
            sinks.wrote();
        }
        self.generation += 1;
        let _ = self.changed.send(self.generation);
    }

    /// The console closed: logs the partial line, records why, flushes the logs.
    fn close(mut self) {
        let mut s = lock(&self.state);
        if !s.partial.is_empty() {
            let line = std::mem::take(&mut s.partial);
            keep_line(&mut s, &mut self.logs.lock(), SystemTime::now(), &line);
        }
        let last = s.last_lines(10);
        s.closed = Some(format!(
            "the emulator closed its console (exited); last lines:\n{last}"
        ));
        drop(s);
        self.logs.lock().flush();
        self.generation += 1;
        let _ = self.changed.send(self.generation);
    }
}

/// One console line (a trailing `\r` included; the log and the buffer each drop it) into the
/// logs and the `expect` buffer.
fn keep_line(s: &mut State, sinks: &mut Sinks, at: SystemTime, line: &[u8]) {
    sinks.line_at(at, LineKind::Output, line);
    s.push_line(line);
}

/// A read at least this large means the emulator is flooding the console.
const FLOOD_READ: usize = 2048;
/// How long the pipe reader stays away from the pipe after a flood read, so that the next read
/// takes what several of the emulator's writes left instead of being woken by each of them.
const FLOOD_PAUSE: Duration = Duration::from_millis(1);
/// How long [`Console::stop`] lets the reader take the emulator's last output once its group
/// is gone (the pipe then closes at once, unless something outside the group holds it).
pub(super) const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Reads the console (the emulator's stdout pipe, or its TCP socket) until it closes.
///
/// Why not an ordinary async read: a descriptor registered with epoll wakes the runtime's
/// thread on every write of the emulator, even while its reader would rather wait; a chatty
/// firmware writing a line at a time then costs a thread wake-up per line (on a VM, most of the
/// worker's CPU). Here the descriptor is registered only while it is empty: output is read
/// directly while there is some, and after a large read the reader sleeps [`FLOOD_PAUSE`]
/// unregistered, so the writes in between wake nobody and the next read takes them all. A small
/// read (a prompt, a ping's answer) is followed by no pause: `expect` latency is unchanged.
pub(super) async fn read_console(pipe: OwnedFd, mut intake: Intake) {
    if let Err(e) = crate::process::set_nonblocking(&pipe) {
        intake.logs.event(&format!("cannot read the console: {e}"));
        intake.close();
        return;
    }
    let mut pipe = Some(std::fs::File::from(pipe));
    let mut buf = vec![0u8; 256 * 1024];
    while let Some(mut file) = pipe.take() {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                intake.take(&buf[..n]);
                if n >= FLOOD_READ {
                    tokio::time::sleep(FLOOD_PAUSE).await;
                }
                pipe = Some(file);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => pipe = Some(file),
            Err(e) if e.kind() == ErrorKind::WouldBlock => pipe = wait_readable(file).await,
            Err(_) => break,
        }
    }
    intake.close();
}

/// Waits until `file` (non-blocking) has something to read, registered with the runtime only
/// meanwhile; `None` if it cannot be waited for.
async fn wait_readable(file: std::fs::File) -> Option<std::fs::File> {
    // SAFETY: `file` owns its descriptor, which stays open and the same until `into_inner`.
    let fd = unsafe { AsyncFd::register_with_interest(file, Interest::READABLE) }.ok()?;
    fd.readable().await.ok()?.retain_ready();
    Some(fd.into_inner())
}

/// Logs an emulator's secondary output (stderr, or stdout when the console is TCP).
pub(super) async fn read_side_output(
    input: impl AsyncRead + Unpin,
    logs: Logs,
    prefix: &'static str,
) {
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

pub(super) async fn write_console(
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
pub(super) async fn serve_bridge(
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
