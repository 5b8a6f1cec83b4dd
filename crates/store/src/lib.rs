//! The database of TestArena: queues, tasks, cases, workers. SQL lives here and nowhere else,
//! and nothing here knows of HTTP.
//!
//! Handlers and the worker talk to [`Store`]; the backend behind it (the [`backend::Backend`]
//! seam) is SQLite (`sqlite/`) or PostgreSQL (`postgres/`), chosen from the URL; the logic above
//! the seam (retries, guards from core's transitions, row mapping, verdict rules) is written once.

mod backend;
mod bisects;
mod copy;
mod dialect;
mod files;
mod guards;
mod history;
mod once;
mod page;
mod portable;
mod postgres;
mod reads;
mod reports;
mod rows;
mod sqlite;
mod tokens;
mod work;

pub use bisects::{BisectClaim, BisectDetail, BisectRange, BisectRow, Decision, Move, StepRow};
pub use copy::CopySummary;
pub use once::{Keyed, SubmitKey};
pub use page::QueueJson;
pub use reports::ReportClaim;
pub use rows::{
    CaseCaps, CaseRow, Chunk, FoundCase, Holder, NewCase, QueueDetail, QueueRow, StaleGroup,
    TaskRow, WorkerRow,
};
pub use rows::{TokenRow, VerifiedToken};
pub use tokens::{secret_hash, NewToken};

use backend::Backend;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use testarena_core::validate::ValidQueue;
use testarena_core::{CaseStatus, QueueStatus};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// SQLite said "database is locked" / "busy" even after waiting and retrying: transient.
    #[error("database is busy: {0}")]
    Busy(String),
    /// No database connection became free in time (every one is in use): transient.
    #[error("database is overloaded: {0}")]
    Overloaded(String),
    /// The disk (or the database's size limit) is full: writes fail until space is freed.
    #[error("no space left on device: {0}")]
    DiskFull(String),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL '{0}' (expected sqlite://PATH or postgres://USER@HOST/DB)")]
    UnsupportedUrl(String),
    #[error("queue {0} not found")]
    NotFound(i64),
    /// No token has this id or name.
    #[error("no token has the id or name '{0}'")]
    TokenNotFound(String),
    /// A value given to the store is not acceptable (the message says why).
    #[error("{0}")]
    Invalid(String),
    /// Something the store needs from the system failed (e.g. random numbers).
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Conflict(String),
    #[error("queue {0} is no longer held by this worker")]
    ClaimLost(i64),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    /// Sorts out the errors a caller can do something about: busy, overloaded, disk full.
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut => {
                return StoreError::Overloaded("timed out waiting for a free connection".into())
            }
            sqlx::Error::Database(db)
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some() =>
            {
                // PostgreSQL's SQLSTATE: a deadlock, a serialization failure or a lock not
                // available changed nothing (the transaction is rolled back), so it is
                // retried like SQLite's busy; disk full is disk full.
                match db.code().as_deref() {
                    Some("40P01" | "40001" | "55P03") => {
                        return StoreError::Busy(db.message().into())
                    }
                    Some("53100") => return StoreError::DiskFull(db.message().into()),
                    _ => {}
                }
            }
            sqlx::Error::Database(db) => {
                // SQLite's extended result code; the primary code is its low byte.
                let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(-1);
                match code & 0xff {
                    SQLITE_BUSY | SQLITE_LOCKED => return StoreError::Busy(db.message().into()),
                    SQLITE_FULL => return StoreError::DiskFull(db.message().into()),
                    _ => {}
                }
            }
            sqlx::Error::Io(io) if is_enospc(io) => return StoreError::DiskFull(io.to_string()),
            _ => {}
        }
        StoreError::Database(e)
    }
}

const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_FULL: i32 = 13;

/// Whether an I/O error says the disk (or the user's quota) is full.
pub fn is_enospc(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

impl StoreError {
    /// Whether the error is transient (busy, overloaded, disk full): worth retrying later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Busy(_) | StoreError::Overloaded(_) | StoreError::DiskFull(_)
        )
    }
}

/// How the database is opened; [`StoreOptions::default`] is what the program uses.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long SQLite waits for another writer's lock before answering "busy".
    pub busy_timeout: Duration,
    /// How long a caller waits for a free pooled connection.
    pub acquire_timeout: Duration,
    /// Pooled connections at most.
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(2),
            acquire_timeout: Duration::from_secs(10),
            max_connections: 8,
        }
    }
}

impl StoreOptions {
    /// Options for a worker running `concurrency` queues at once. Each running queue holds up
    /// to [`CONNECTIONS_PER_QUEUE`] connections at one moment (its lease renewal, its case
    /// writer, its log shipper, the pipeline's own writes); with fewer, a busy farm host would
    /// wait for connections and, past the acquire timeout, fail queues it could have run.
    pub fn for_worker(concurrency: usize) -> StoreOptions {
        let defaults = StoreOptions::default();
        let per_queues = u32::try_from(concurrency)
            .unwrap_or(u32::MAX)
            .saturating_mul(CONNECTIONS_PER_QUEUE)
            // The heartbeat and the claim loop.
            .saturating_add(2);
        StoreOptions {
            max_connections: per_queues.clamp(defaults.max_connections, MAX_WORKER_CONNECTIONS),
            ..defaults
        }
    }
}

/// Connections one running queue may hold at once (see [`StoreOptions::for_worker`]).
pub const CONNECTIONS_PER_QUEUE: u32 = 4;
/// Most pooled connections of one worker process, whatever its concurrency: PostgreSQL's own
/// default limit is 100 connections for the whole farm.
pub const MAX_WORKER_CONNECTIONS: u32 = 64;

/// Pauses (ms) between the tries of an operation SQLite refused as busy: after the busy
/// timeout ran out, or at once for a transaction whose snapshot went stale.
const BUSY_BACKOFF_MS: [u64; 4] = [25, 75, 200, 500];

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Formats a time in milliseconds since the epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

/// What a finished case reports.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub status: CaseStatus,
    pub duration_ms: Option<u64>,
    pub message: Option<String>,
}

/// A change of a case as the worker records it: a queue's changes are written together, a
/// batch at a time.
#[derive(Debug, Clone)]
pub enum CaseUpdate {
    /// The case started at `at` (ms since the epoch); its log starts at byte `log_from` of the
    /// queue log.
    Started {
        case_id: i64,
        at: i64,
        log_from: Option<u64>,
    },
    /// The case ended at `at` as `result`; its log ends before byte `log_to` of the queue log.
    Finished {
        case_id: i64,
        at: i64,
        result: CaseResult,
        log_to: Option<u64>,
    },
}

impl CaseUpdate {
    /// The case it changes.
    pub fn case_id(&self) -> i64 {
        match self {
            CaseUpdate::Started { case_id, .. } | CaseUpdate::Finished { case_id, .. } => *case_id,
        }
    }
}

/// What a batch of [`CaseUpdate`]s leaves of one case, as applying them one by one would: the
/// columns each update sets, the later ones winning, and the status of the last. A batch is
/// then written with one row per case (one statement on PostgreSQL), not one per update.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CaseWrite {
    pub case_id: i64,
    pub status: CaseStatus,
    /// `started_at`, `log_from` (from the last `Started`).
    pub started: Option<(i64, Option<i64>)>,
    /// From the last `Finished`.
    pub finished: Option<CaseEnd>,
}

/// The columns a case's end sets.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CaseEnd {
    pub duration_ms: Option<i64>,
    pub message: Option<String>,
    pub finished_at: i64,
    pub log_to: Option<i64>,
}

/// Folds `updates` into one [`CaseWrite`] per case, in the order the cases first appear.
pub(crate) fn case_writes(updates: &[CaseUpdate]) -> Vec<CaseWrite> {
    let offset = |o: &Option<u64>| o.map(|o| o.min(i64::MAX as u64) as i64);
    let mut writes: Vec<CaseWrite> = Vec::new();
    let mut at: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    for u in updates {
        let i = *at.entry(u.case_id()).or_insert_with(|| {
            writes.push(CaseWrite {
                case_id: u.case_id(),
                status: CaseStatus::Running,
                started: None,
                finished: None,
            });
            writes.len() - 1
        });
        let w = &mut writes[i];
        match u {
            CaseUpdate::Started { at, log_from, .. } => {
                w.status = CaseStatus::Running;
                w.started = Some((*at, offset(log_from)));
            }
            CaseUpdate::Finished {
                at, result, log_to, ..
            } => {
                w.status = result.status;
                w.finished = Some(CaseEnd {
                    duration_ms: result.duration_ms.map(|d| d.min(i64::MAX as u64) as i64),
                    message: result.message.clone(),
                    finished_at: *at,
                    log_to: offset(log_to),
                });
            }
        }
    }
    writes
}

/// The database, whichever backend the URL names.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Arc<dyn Backend>,
    /// The API's answers kept with the `rev` they were built at (`page.rs`).
    answers: Arc<page::Answers>,
    /// The pages of the list kept whole, by version (`page.rs`).
    lists: Arc<page::Lists>,
    /// Operations run (each try counts), for `/metrics` and benchmarks.
    operations: Arc<AtomicU64>,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Store> {
        Store::open_with(url, &StoreOptions::default()).await
    }

    /// As [`Store::open`], with explicit options.
    pub async fn open_with(url: &str, options: &StoreOptions) -> Result<Store> {
        if url.starts_with("sqlite:") {
            let backend = sqlite::Sqlite::open(url, options, &[]).await?;
            return Ok(Store::on(Arc::new(backend)));
        }
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let backend = postgres::Postgres::open(url, options).await?;
            return Ok(Store::on(Arc::new(backend)));
        }
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }

    fn on(backend: Arc<dyn Backend>) -> Store {
        Store {
            backend,
            answers: Arc::default(),
            lists: Arc::default(),
            operations: Arc::default(),
        }
    }

    /// How many database operations this store (and its clones) ran so far; each is one
    /// statement or one short transaction of a few.
    pub fn operations(&self) -> u64 {
        self.operations.load(Ordering::Relaxed)
    }

    /// Runs `op`, and again after a short pause while it fails with [`StoreError::Busy`].
    /// Every operation given here is one statement or one transaction, so a busy failure
    /// changed nothing.
    async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut pauses = BUSY_BACKOFF_MS.iter();
        loop {
            self.operations.fetch_add(1, Ordering::Relaxed);
            match op().await {
                Err(StoreError::Busy(message)) => match pauses.next() {
                    Some(ms) => {
                        // A little jitter, so writers that collided do not collide again.
                        let jitter = now_ms().rem_euclid(1 + *ms as i64 / 2) as u64;
                        tracing::debug!(%message, pause_ms = ms + jitter, "database busy; trying again");
                        tokio::time::sleep(Duration::from_millis(ms + jitter)).await;
                    }
                    None => return Err(StoreError::Busy(message)),
                },
                other => return other,
            }
        }
    }

    /// Waits until a queue may have become waiting in another process (PostgreSQL: a NOTIFY
    /// from the database), at most `timeout`. Without such a signal (SQLite) it waits out the
    /// timeout, so a loop over it is the slow poll; in-process wake-ups stay the caller's.
    pub async fn wait_for_work(&self, timeout: Duration) {
        self.backend.wait_for(backend::Wakeup::Work, timeout).await
    }

    /// Waits until a bisect may need a decision because of another process (PostgreSQL: a
    /// NOTIFY when one is created or its step queue ends), at most `timeout`; as
    /// [`Store::wait_for_work`] otherwise.
    pub async fn wait_for_bisects(&self, timeout: Duration) {
        self.backend
            .wait_for(backend::Wakeup::Bisects, timeout)
            .await
    }

    /// Waits until a queue, task or case may have changed in another process (PostgreSQL: a
    /// NOTIFY on every change), at most `timeout`; as [`Store::wait_for_work`] otherwise.
    pub async fn wait_for_change(&self, timeout: Duration) {
        self.backend
            .wait_for(backend::Wakeup::Change, timeout)
            .await
    }

    /// Whether the database tells other processes of changes (PostgreSQL), so a waiter wakes
    /// at once; false for SQLite, where only the slow poll sees another process's writes.
    pub fn notifies(&self) -> bool {
        self.backend.notifies()
    }

    /// Runs a trivial query; used by the health check.
    pub async fn ping(&self) -> Result<()> {
        self.backend.ping().await
    }

    /// Closes the connection pool, waiting for connections in use.
    pub async fn close(&self) {
        self.backend.close().await
    }

    /// Stores a new waiting queue (and its tasks when scenarios are named); returns it.
    pub async fn create_queue(&self, q: &ValidQueue) -> Result<QueueDetail> {
        self.create_queue_by(q, None).await
    }

    /// As [`Store::create_queue`], recording the name of the API token that submitted it.
    pub async fn create_queue_by(
        &self,
        q: &ValidQueue,
        submitted_by: Option<&str>,
    ) -> Result<QueueDetail> {
        let now = now_ms();
        let id = self
            .retry(|| self.backend.insert_queue(q, None, submitted_by, now))
            .await?
            .ok_or_else(|| StoreError::Conflict("delivery already seen".into()))?;
        self.queue(id).await
    }

    /// One queue with its tasks and all their cases.
    pub async fn queue(&self, id: i64) -> Result<QueueDetail> {
        self.retry(|| self.backend.queue(id, None))
            .await?
            .ok_or(StoreError::NotFound(id))
    }

    /// One queue with its tasks and at most `caps` of their cases (and every task's counts).
    pub async fn queue_capped(&self, id: i64, caps: CaseCaps) -> Result<QueueDetail> {
        self.retry(|| self.backend.queue(id, Some(caps)))
            .await?
            .ok_or(StoreError::NotFound(id))
    }

    /// One queue's row alone (no tasks or cases): cheap.
    pub async fn queue_row(&self, id: i64) -> Result<QueueRow> {
        self.retry(|| self.backend.queue_row(id))
            .await?
            .ok_or(StoreError::NotFound(id))
    }

    /// A page of one task's cases: those after position `after`, at most `limit`. Returns the
    /// cases and the task's total; `NotFound` if the queue has no such task.
    pub async fn task_cases(
        &self,
        queue_id: i64,
        task_id: i64,
        after: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<CaseRow>, u64)> {
        self.retry(|| self.backend.task_cases(queue_id, task_id, after, limit))
            .await?
            .ok_or(StoreError::NotFound(queue_id))
    }

    /// The case `key` of a queue with its task: the first one unless `task` names one.
    pub async fn case_task(
        &self,
        queue_id: i64,
        key: &str,
        task: Option<i64>,
    ) -> Result<Option<FoundCase>> {
        self.retry(|| self.backend.case_task(queue_id, key, task))
            .await
    }

    /// Newest-first page of queues, optionally of one status, with ids below `before`, each
    /// with at most `caps` cases. Returns the page and the cursor of the next one.
    pub async fn list_queues(
        &self,
        status: Option<QueueStatus>,
        limit: u32,
        before: Option<i64>,
        caps: CaseCaps,
    ) -> Result<(Vec<QueueDetail>, Option<i64>)> {
        let mut rows = self
            .retry(|| self.backend.list_queues(status, limit + 1, before, caps))
            .await?;
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|q| q.queue.id)
        } else {
            None
        };
        Ok((rows, next))
    }

    /// Aborts a queue: a waiting one at once, a running one by asking its worker. Returns it
    /// with at most `caps` cases.
    pub async fn abort_queue(&self, id: i64, caps: CaseCaps) -> Result<QueueDetail> {
        self.abort_queue_by(id, None, caps).await
    }

    /// As [`Store::abort_queue`]; a waiting queue's error names `by` (an API token's name).
    pub async fn abort_queue_by(
        &self,
        id: i64,
        by: Option<&str>,
        caps: CaseCaps,
    ) -> Result<QueueDetail> {
        let current = self.queue_row(id).await?;
        match current.status {
            QueueStatus::Waiting => {
                let now = now_ms();
                let reason = match by {
                    Some(name) => format!("aborted before it started (by {name})"),
                    None => "aborted before it started".to_string(),
                };
                if !self
                    .retry(|| self.backend.abort_waiting(id, &reason, now))
                    .await?
                {
                    // Claimed in the meantime: ask the worker instead.
                    self.retry(|| self.backend.request_abort(id)).await?;
                }
            }
            QueueStatus::Running => self.retry(|| self.backend.request_abort(id)).await?,
            done => {
                return Err(StoreError::Conflict(format!(
                    "queue {id} already finished ({done})"
                )))
            }
        }
        self.queue_capped(id, caps).await
    }

    /// Deletes a queue's rows; a running queue is asked to abort first.
    pub async fn delete_queue(&self, id: i64) -> Result<()> {
        let current = self.queue_row(id).await?;
        if current.status == QueueStatus::Running {
            self.retry(|| self.backend.request_abort(id)).await?;
        }
        if self.retry(|| self.backend.delete_queue(id)).await? {
            Ok(())
        } else {
            Err(StoreError::NotFound(id))
        }
    }

    /// The change counter now; pass it to [`Store::changes_since`] later.
    pub async fn current_rev(&self) -> Result<i64> {
        self.retry(|| self.backend.current_rev()).await
    }

    /// Queues changed (with at most `caps` cases each) and ids deleted after change `rev` (at
    /// most 500 queues at a time).
    pub async fn changes_since(
        &self,
        rev: i64,
        caps: CaseCaps,
    ) -> Result<(Vec<QueueDetail>, Vec<i64>)> {
        self.retry(|| self.backend.changes_since(rev, caps)).await
    }

    /// How many queues there are of each status.
    pub async fn count_by_status(&self) -> Result<std::collections::HashMap<QueueStatus, i64>> {
        rows::parse_counts(self.retry(|| self.backend.count_by_status()).await?)
    }

    /// Which queue ids each worker runs now.
    pub async fn running_by_worker(&self) -> Result<std::collections::HashMap<String, Vec<i64>>> {
        let mut map: std::collections::HashMap<String, Vec<i64>> = std::collections::HashMap::new();
        for (w, id) in self.retry(|| self.backend.running_by_worker()).await? {
            map.entry(w).or_default().push(id);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod testdb;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod options_tests {
    use super::*;

    #[test]
    fn a_worker_pool_grows_with_its_concurrency_within_bounds() {
        let default = StoreOptions::default().max_connections;
        assert_eq!(StoreOptions::for_worker(1).max_connections, default);
        assert_eq!(
            StoreOptions::for_worker(8).max_connections,
            8 * CONNECTIONS_PER_QUEUE + 2
        );
        assert_eq!(
            StoreOptions::for_worker(1000).max_connections,
            MAX_WORKER_CONNECTIONS
        );
        assert_eq!(
            StoreOptions::for_worker(usize::MAX).max_connections,
            MAX_WORKER_CONNECTIONS
        );
    }
}
