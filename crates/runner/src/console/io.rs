//! The console's plumbing: sockets made inside the task's network namespace, the TCP console connection, the tasks that read the emulator's output into the buffer and logs, write to it, and serve the bridge.

use super::*;

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
pub(super) async fn read_console(
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
            sinks.wrote();
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
