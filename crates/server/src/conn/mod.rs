//! The HTTP listener: accepts connections up to a cap (making room by closing idle ones),
//! closes clients that are slow to send a request head, idle too long, slow to send a body or
//! that stop reading an answer, and turns hyper's own error answers (a request it cannot
//! parse, a head too large) into the API's JSON error shape.
//!
//! Only HTTP/1.1 is spoken (nginx talks HTTP/1.1 to its upstreams).

mod registry;
mod wire;

use crate::metrics::Metrics;
use crate::ratelimit::{Rate, DEFAULT_ARCHIVE_RATE, DEFAULT_SUBMIT_RATE};
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use registry::{Conn, Registry};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wire::{DeadlineBody, GuardedBody, InFlight, WatchedIo};
pub use wire::{MAX_HEAD, MAX_HEADERS};

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
    /// Submits (`POST /api/v1/queues`, re-runs) per caller with a token.
    pub submit_rate: Rate,
    /// Archive downloads per client address, for callers without a token.
    pub archive_rate: Rate,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 0,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            submit_rate: DEFAULT_SUBMIT_RATE,
            archive_rate: DEFAULT_ARCHIVE_RATE,
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
        submit_rate = ?limits.submit_rate,
        archive_rate = ?limits.archive_rate,
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
                let n = registry.reap(limits.header_timeout, limits.idle_timeout);
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
                Ok(accepted) => accepted,
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
            let (tcp, peer) = tcp;
            serve_connection(tcp, peer, app, &limits, conn, registry.clone(), graceful).await;
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
    peer: SocketAddr,
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
        let mut req = req.map(|body| DeadlineBody {
            inner: body,
            deadline: Instant::now() + body_timeout,
            timeout: body_timeout,
            sleep: None,
        });
        // The client's address, for the per-address rate limits.
        req.extensions_mut().insert(ConnectInfo(peer));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_respects_the_fd_limit() {
        assert!(connection_cap(0) <= DEFAULT_MAX_CONNECTIONS);
        assert!(connection_cap(0) as u64 <= nofile_limit().saturating_sub(SPARE_FDS).max(16));
        assert_eq!(connection_cap(5), 5);
        assert!(connection_cap(usize::MAX) < usize::MAX);
    }
}
