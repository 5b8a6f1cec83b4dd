//! A few connections kept for the API's hot reads (the statements of `GET /api/v1/queues` and
//! `GET /api/v1/queues/{id}`), outside sqlx's pool.
//!
//! Why: sqlx's pool pings every connection handed back to it (one more round trip to the
//! database, and on SQLite one more hand-off to the connection's thread, per statement), and
//! its acquire and release (a semaphore, a timeout, a task spawned for each release) cost about
//! as much as the statement itself. A read that finds a kept connection free uses it without
//! either; when all are busy it goes through the pool as before (bench/NOTES.md, issue 14 goal 4).
//!
//! Only statements that change nothing run here, so one that failed because its connection was
//! lost (the database restarted, a proxy dropped it) is run again through the pool, and the
//! connection is forgotten (a new one is made on a later read).

use sqlx::{ConnectOptions, Connection, Database, Pool};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Connections kept per store: about what the API has in flight at once on a small server
/// (more wait for the pool, as before).
pub(crate) const KEPT_READS: usize = 4;

/// What a read does with a connection.
pub(crate) type ReadFut<'c, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// The kept connections of one store.
pub(crate) struct Reads<DB: Database> {
    slots: Vec<Arc<Mutex<Option<DB::Connection>>>>,
    closed: AtomicBool,
}

impl<DB: Database> std::fmt::Debug for Reads<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reads")
            .field("slots", &self.slots.len())
            .finish()
    }
}

impl<DB: Database> Reads<DB> {
    /// At most `n` kept connections, made on first use.
    pub(crate) fn new(n: usize) -> Self {
        Reads {
            slots: (0..n).map(|_| Arc::new(Mutex::new(None))).collect(),
            closed: AtomicBool::new(false),
        }
    }

    /// Runs the read-only `read` on a kept connection that is free, else on one of `pool`'s.
    pub(crate) async fn run<T>(
        &self,
        pool: &Pool<DB>,
        mut read: impl for<'c> FnMut(&'c mut DB::Connection) -> ReadFut<'c, T>,
    ) -> Result<T, sqlx::Error> {
        if !self.closed.load(Ordering::Acquire) {
            let free = self
                .slots
                .iter()
                .find_map(|s| s.clone().try_lock_owned().ok());
            if let Some(mut slot) = free {
                if slot.is_none() {
                    // Cannot connect (the server's connection limit, say): the pool's turn.
                    match pool.connect_options().connect().await {
                        Ok(conn) => *slot = Some(conn),
                        Err(e) => tracing::debug!(error = %e, "no kept read connection"),
                    }
                }
                if let Some(conn) = slot.as_mut() {
                    match read(conn).await {
                        Err(e) if connection_lost(&e) => {
                            tracing::debug!(error = %e, "a kept read connection was lost");
                            *slot = None;
                        }
                        other => return other,
                    }
                }
            }
        }
        let mut conn = pool.acquire().await?;
        read(&mut conn).await
    }

    /// Closes the kept connections; later reads go through the pool.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for slot in &self.slots {
            if let Some(conn) = slot.lock().await.take() {
                let _ = conn.close().await;
            }
        }
    }
}

/// Whether `e` says the connection itself failed (so the statement may not have run): an I/O
/// or protocol error, or PostgreSQL's "connection exception" (SQLSTATE class 08) and "operator
/// intervention" (class 57: the server shutting down or this backend terminated) errors.
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
                && db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57"))
        }
        _ => false,
    }
}
