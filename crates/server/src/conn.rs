//! The HTTP listener: accepts connections up to a cap (making room by closing idle ones),
//! closes clients that are slow to send a request head, idle too long, slow to send a body or
//! that stop reading an answer, and turns hyper's own error answers (a request it cannot
//! parse, a head too large) into the API's JSON error shape.
//!
//! Only HTTP/1.1 is spoken (nginx talks HTTP/1.1 to its upstreams).

use crate::error::error_json;
use crate::metrics::Metrics;
use axum::http::{Request, StatusCode};
use axum::Router;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Largest request head (request line and headers) accepted, in bytes; hyper answers 431
/// past it.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most headers one request may have; hyper answers 431 past it.
pub const MAX_HEADERS: usize = 100;
/// Connections served at once when `max_connections` is not set, at most.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// File descriptors kept free for everything else (database, logs, archives) when the
/// connection cap is derived from the process's limit.
const SPARE_FDS: u64 = 256;
/// How often idle and slow connections are looked for.
const REAP_EVERY: Duration = Duration::from_millis(250);

/// Limits of the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; 0 = min(10 000, open-file limit − 256).
    pub max_connections: usize,
    /// A request head must arrive within this time of its first byte.
    pub header_timeout: Duration,
    /// A connection with no request in progress (and none arriving) is closed after this
    /// long; so is one whose client reads nothing of an answer for this long.
    pub idle_timeout: Duration,
    /// A request body must arrive completely within this time of its head.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 0,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Raises the soft open-file limit (RLIMIT_NOFILE) to the hard one; returns the new soft limit.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(io::Error::last_os_error());
            }
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur as u64)
}

/// The soft open-file limit of this process.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
fn nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur as u64
}

/// Connections served at once: the configured number, never more than the open-file limit
/// allows (less `SPARE_FDS`); by default at most 10 000.
pub fn connection_cap(configured: usize) -> usize {
    let by_fds = nofile_limit().saturating_sub(SPARE_FDS).max(16);
    let by_fds = usize::try_from(by_fds).unwrap_or(usize::MAX);
    match configured {
        0 => DEFAULT_MAX_CONNECTIONS.min(by_fds),
        n if n > by_fds => {
            tracing::warn!(
                max_connections = n,
                allowed = by_fds,
                "max_connections is above what the open-file limit allows; using the lower number"
            );
            by_fds
        }
        n => n,
    }
}

/// One open connection, as the reaper and the eviction see it. Times are milliseconds since
/// the registry started, plus one (0 = unset).
struct Conn {
    /// Requests whose answer is not completely sent yet.
    in_flight: AtomicUsize,
    /// When the last answer ended (or the connection opened).
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived; 0 while none did.
    head_started: AtomicU64,
    /// Since when a write has waited for the client to read; 0 while writes go through.
    write_blocked_since: AtomicU64,
    /// Cancelled to close the connection at once.
    close: CancellationToken,
}

/// Every open connection.
struct Registry {
    start: Instant,
    next_id: AtomicU64,
    /// By id, so oldest first.
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    /// How many of `conns` are being closed (changed under the `conns` lock).
    closing: AtomicUsize,
    /// Signalled when a connection ended.
    freed: tokio::sync::Notify,
    metrics: Arc<Metrics>,
}

impl Registry {
    fn new(metrics: Arc<Metrics>) -> Registry {
        Registry {
            start: Instant::now(),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(BTreeMap::new()),
            closing: AtomicUsize::new(0),
            freed: tokio::sync::Notify::new(),
            metrics,
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections open and not being closed.
    fn open(&self) -> usize {
        let conns = self.lock();
        conns.len() - self.closing.load(Ordering::Acquire)
    }

    /// Closes `c` (once) for `reason`; call with the `conns` lock held.
    fn close(&self, c: &Conn, reason: &str) {
        if !c.close.is_cancelled() {
            c.close.cancel();
            self.closing.fetch_add(1, Ordering::AcqRel);
            self.metrics.connection_closed(reason);
        }
    }

    fn add(&self) -> (u64, Arc<Conn>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now()),
            head_started: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
            close: CancellationToken::new(),
        });
        self.lock().insert(id, conn.clone());
        self.metrics.connection(1);
        (id, conn)
    }

    fn remove(&self, id: u64) {
        let mut conns = self.lock();
        if let Some(c) = conns.remove(&id) {
            self.metrics.connection(-1);
            if c.close.is_cancelled() {
                self.closing.fetch_sub(1, Ordering::AcqRel);
            }
        }
        drop(conns);
        self.freed.notify_waiters();
    }

    /// Closes the oldest connection that has no request in progress; false if there is none.
    fn evict_idle(&self) -> bool {
        let conns = self.lock();
        let victim = conns
            .values()
            .find(|c| !c.close.is_cancelled() && c.in_flight.load(Ordering::Acquire) == 0);
        match victim {
            Some(c) => {
                self.close(c, "evicted");
                true
            }
            None => false,
        }
    }

    /// Closes every connection that has no request in progress (at shutdown).
    fn close_idle(&self) {
        let conns = self.lock();
        for c in conns.values() {
            if c.in_flight.load(Ordering::Acquire) == 0 {
                self.close(c, "shutdown");
            }
        }
    }

    /// Closes connections past their header, idle or write timeouts.
    fn reap(&self, limits: &Limits) -> usize {
        let now = self.now();
        let header = limits.header_timeout.as_millis() as u64;
        let idle = limits.idle_timeout.as_millis() as u64;
        let mut closed = 0;
        let conns = self.lock();
        for c in conns.values() {
            if c.close.is_cancelled() {
                continue;
            }
            let blocked = c.write_blocked_since.load(Ordering::Acquire);
            let reason = if blocked != 0 && now.saturating_sub(blocked) > idle {
                "write_stalled"
            } else if c.in_flight.load(Ordering::Acquire) != 0 {
                continue;
            } else {
                let head = c.head_started.load(Ordering::Acquire);
                if head != 0 && now.saturating_sub(head) > header {
                    "header_timeout"
                } else if head == 0
                    && now.saturating_sub(c.idle_since.load(Ordering::Acquire)) > idle
                {
                    "idle_timeout"
                } else {
                    continue;
                }
            };
            self.close(c, reason);
            closed += 1;
        }
        closed
    }

    /// Waits until every connection ended.
    async fn wait_empty(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.lock().is_empty() {
                return;
            }
            freed.await;
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the requests in progress
/// finish (calling `on_shutdown` first, so endless streams can end).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_shutdown: impl FnOnce(),
) -> io::Result<()> {
    let cap = connection_cap(limits.max_connections);
    tracing::info!(
        max_connections = cap,
        header_timeout = ?limits.header_timeout,
        idle_timeout = ?limits.idle_timeout,
        body_timeout = ?limits.body_timeout,
        "connection limits"
    );
    let registry = Arc::new(Registry::new(metrics));
    let reaper = {
        let (registry, limits) = (registry.clone(), limits.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(REAP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let n = registry.reap(&limits);
                if n > 0 {
                    tracing::debug!(closed = n, "closed idle or slow connections");
                }
            }
        })
    };
    let graceful = CancellationToken::new();
    tokio::pin!(shutdown);
    'accept: loop {
        let tcp = tokio::select! {
            _ = &mut shutdown => break 'accept,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        // Make room: close the oldest idle connection, or wait until one ends or goes idle.
        loop {
            let freed = registry.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if registry.open() < cap || registry.evict_idle() {
                break;
            }
            tokio::select! {
                _ = &mut shutdown => break 'accept,
                _ = freed => {}
                _ = tokio::time::sleep(REAP_EVERY) => {}
            }
        }
        let (id, conn) = registry.add();
        let (app, limits, registry, graceful) = (
            app.clone(),
            limits.clone(),
            registry.clone(),
            graceful.clone(),
        );
        tokio::spawn(async move {
            serve_connection(tcp, app, &limits, conn, registry.clone(), graceful).await;
            registry.remove(id);
        });
    }
    drop(listener);
    on_shutdown();
    // Requests in progress finish; connections between requests close now.
    graceful.cancel();
    registry.close_idle();
    registry.wait_empty().await;
    reaper.abort();
    Ok(())
}

/// Errors of `accept`: a failed handshake is the client's business; running out of file
/// descriptors or memory calls for a pause (the connections in progress free some).
async fn accept_error(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    ) {
        return;
    }
    tracing::warn!(error = %e, "accept failed; pausing");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn serve_connection(
    tcp: TcpStream,
    app: Router,
    limits: &Limits,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    graceful: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let io = TokioIo::new(WatchedIo {
        inner: tcp,
        conn: conn.clone(),
        registry: registry.clone(),
        pending: Vec::new(),
    });
    let body_timeout = limits.body_timeout;
    let svc_conn = conn.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let guard = InFlight::start(svc_conn.clone(), registry.clone());
        let req = req.map(|body| DeadlineBody {
            inner: body,
            deadline: Instant::now() + body_timeout,
            timeout: body_timeout,
            sleep: None,
        });
        let answer = app.clone().oneshot(req);
        async move {
            let resp = match answer.await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(resp.map(|inner| GuardedBody {
                inner,
                _guard: guard,
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .writev(false)
        // The reaper enforces the header and idle timeouts.
        .header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = conn.close.cancelled() => return,
        _ = graceful.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = conn.close.cancelled() => {}
    }
}

/// Counts a request from its head until its answer is completely sent.
struct InFlight {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl InFlight {
    fn start(conn: Arc<Conn>, registry: Arc<Registry>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.head_started.store(0, Ordering::Release);
        InFlight { conn, registry }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn
                .idle_since
                .store(self.registry.now(), Ordering::Release);
        }
    }
}

/// An answer's body that keeps its request counted until it is sent (or dropped).
struct GuardedBody<B> {
    inner: B,
    _guard: InFlight,
}

impl<B: HttpBody + Unpin> HttpBody for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error of a request body that did not arrive in time.
#[derive(Debug)]
pub struct BodyTimedOut(pub Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {}s",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for BodyTimedOut {}

/// A request body that fails with [`BodyTimedOut`] once its deadline passed.
struct DeadlineBody<B> {
    inner: B,
    deadline: Instant,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket as hyper sees it: notes when a request head starts arriving and when the client
/// stops reading, and replaces hyper's bodiless error answers with JSON ones.
struct WatchedIo {
    inner: TcpStream,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    /// Bytes of a replacement answer still to send.
    pending: Vec<u8>,
}

impl WatchedIo {
    /// Sends what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let r = Pin::new(&mut self.inner).poll_write(cx, &self.pending);
            self.note_write(&r);
            let n = ready!(r)?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// Notes whether the client reads what is written to it.
    fn note_write<T>(&self, r: &Poll<io::Result<T>>) {
        let blocked = &self.conn.write_blocked_since;
        if r.is_pending() {
            if blocked.load(Ordering::Acquire) == 0 {
                blocked.store(self.registry.now(), Ordering::Release);
            }
        } else {
            blocked.store(0, Ordering::Release);
        }
    }
}

/// The JSON answer standing in for hyper's own answer that starts `head`, if it is one: hyper
/// answers 400, 414 or 431 without a body, before any request reached the router, when it
/// cannot parse a request head.
fn replacement_for(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let status = std::str::from_utf8(rest.get(..3)?)
        .ok()?
        .parse::<u16>()
        .ok()?;
    let (status, message) = match status {
        400 => (
            StatusCode::BAD_REQUEST,
            "the request is not valid HTTP/1.1".to_string(),
        ),
        414 => (
            StatusCode::URI_TOO_LONG,
            "the request target is longer than the server accepts".to_string(),
        ),
        431 => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request head is larger than {} KiB or has more than {MAX_HEADERS} headers",
                MAX_HEAD / 1024
            ),
        ),
        _ => return None,
    };
    let body = error_json(status, &message);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            let c = &self.conn;
            if c.in_flight.load(Ordering::Acquire) == 0
                && c.head_started.load(Ordering::Acquire) == 0
            {
                c.head_started.store(self.registry.now(), Ordering::Release);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        // hyper's own answer: no request reached the router since the head began arriving.
        let c = &self.conn;
        if c.in_flight.load(Ordering::Acquire) == 0 && c.head_started.load(Ordering::Acquire) != 0 {
            if let Some(replacement) = replacement_for(buf) {
                self.pending = replacement;
                // The connection closes after this answer: hyper writes nothing more.
                let _ = self.poll_pending(cx)?;
                return Poll::Ready(Ok(buf.len()));
            }
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&r);
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_error_heads_become_json() {
        let out = replacement_for(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        assert!(text.contains("content-type: application/json\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "headers_too_large");
        assert!(replacement_for(b"HTTP/1.1 404 Not Found\r\n").is_none());
        assert!(replacement_for(b"0\r\n\r\n").is_none());
        assert!(replacement_for(b"HTTP/1.1 414 URI Too Long\r\n").is_some());
        assert!(replacement_for(b"HTTP/1.1 400 Bad Request\r\n").is_some());
    }

    #[test]
    fn the_connection_cap_respects_the_fd_limit() {
        assert!(connection_cap(0) <= DEFAULT_MAX_CONNECTIONS);
        assert!(connection_cap(0) as u64 <= nofile_limit().saturating_sub(SPARE_FDS).max(16));
        assert_eq!(connection_cap(5), 5);
        assert!(connection_cap(usize::MAX) < usize::MAX);
    }
}
