//! Every open connection, as the reaper, the eviction and the shutdown see them.

use crate::metrics::Metrics;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One open connection, as the reaper and the eviction see it. Times are milliseconds since
/// the registry started, plus one (0 = unset).
pub(super) struct Conn {
    /// Requests whose answer is not completely sent yet.
    pub(super) in_flight: AtomicUsize,
    /// When the last answer ended (or the connection opened).
    pub(super) idle_since: AtomicU64,
    /// When the first byte of the next request head arrived; 0 while none did.
    pub(super) head_started: AtomicU64,
    /// Since when a write has waited for the client to read; 0 while writes go through.
    pub(super) write_blocked_since: AtomicU64,
    /// Cancelled to close the connection at once.
    pub(super) close: CancellationToken,
}

/// Every open connection.
pub(super) struct Registry {
    pub(super) start: Instant,
    pub(super) next_id: AtomicU64,
    /// By id, so oldest first.
    pub(super) conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    /// How many of `conns` are being closed (changed under the `conns` lock).
    pub(super) closing: AtomicUsize,
    /// Signalled when a connection ended.
    pub(super) freed: tokio::sync::Notify,
    pub(super) metrics: Arc<Metrics>,
}

impl Registry {
    pub(super) fn new(metrics: Arc<Metrics>) -> Registry {
        Registry {
            start: Instant::now(),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(BTreeMap::new()),
            closing: AtomicUsize::new(0),
            freed: tokio::sync::Notify::new(),
            metrics,
        }
    }

    pub(super) fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections open and not being closed.
    pub(super) fn open(&self) -> usize {
        let conns = self.lock();
        conns.len() - self.closing.load(Ordering::Acquire)
    }

    /// Closes `c` (once) for `reason`; call with the `conns` lock held.
    pub(super) fn close(&self, c: &Conn, reason: &str) {
        if !c.close.is_cancelled() {
            c.close.cancel();
            self.closing.fetch_add(1, Ordering::AcqRel);
            self.metrics.connection_closed(reason);
        }
    }

    pub(super) fn add(&self) -> (u64, Arc<Conn>) {
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

    pub(super) fn remove(&self, id: u64) {
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
    pub(super) fn evict_idle(&self) -> bool {
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
    pub(super) fn close_idle(&self) {
        let conns = self.lock();
        for c in conns.values() {
            if c.in_flight.load(Ordering::Acquire) == 0 {
                self.close(c, "shutdown");
            }
        }
    }

    /// Closes connections past their header, idle or write timeouts.
    pub(super) fn reap(&self, header_timeout: Duration, idle_timeout: Duration) -> usize {
        let now = self.now();
        let header = header_timeout.as_millis() as u64;
        let idle = idle_timeout.as_millis() as u64;
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
    pub(super) async fn wait_empty(&self) {
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
