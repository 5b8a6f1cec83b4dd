//! The database of TestArena: queues, tasks, cases, workers. SQL lives here and nowhere else.
//!
//! Handlers and the worker talk to [`Store`]; the backend behind it is SQLite today and is chosen
//! from the URL, so a PostgreSQL backend can be added here without touching its callers.

mod rows;
mod sqlite;

pub use rows::{CaseRow, NewCase, QueueDetail, QueueRow, StaleGroup, TaskRow, WorkerRow};

use std::time::{SystemTime, UNIX_EPOCH};
use testarena_core::validate::ValidQueue;
use testarena_core::{CaseStatus, Phase, QueueStatus};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL '{0}' (expected sqlite://PATH)")]
    UnsupportedUrl(String),
    #[error("queue {0} not found")]
    NotFound(i64),
    #[error("{0}")]
    Conflict(String),
    #[error("queue {0} is no longer held by this worker")]
    ClaimLost(i64),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

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

/// The database, whichever backend the URL names.
#[derive(Clone, Debug)]
pub struct Store {
    backend: sqlite::Sqlite,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Store> {
        if url.starts_with("sqlite:") {
            let backend = sqlite::Sqlite::open(url).await?;
            return Ok(Store { backend });
        }
        Err(StoreError::UnsupportedUrl(url.to_string()))
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
        let id = self.backend.create_queue(q, now_ms()).await?;
        self.queue(id).await
    }

    /// One queue with its tasks and cases.
    pub async fn queue(&self, id: i64) -> Result<QueueDetail> {
        self.backend
            .queue(id)
            .await?
            .ok_or(StoreError::NotFound(id))
    }

    /// Newest-first page of queues, optionally of one status, with ids below `before`.
    /// Returns the page and the cursor of the next one.
    pub async fn list_queues(
        &self,
        status: Option<QueueStatus>,
        limit: u32,
        before: Option<i64>,
    ) -> Result<(Vec<QueueDetail>, Option<i64>)> {
        let mut rows = self.backend.list_queues(status, limit + 1, before).await?;
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|q| q.queue.id)
        } else {
            None
        };
        Ok((rows, next))
    }

    /// Aborts a queue: a waiting one at once, a running one by asking its worker.
    pub async fn abort_queue(&self, id: i64) -> Result<QueueDetail> {
        let current = self.queue(id).await?;
        match current.queue.status {
            QueueStatus::Waiting => {
                if !self.backend.abort_waiting(id, now_ms()).await? {
                    // Claimed in the meantime: ask the worker instead.
                    self.backend.request_abort(id).await?;
                }
            }
            QueueStatus::Running => self.backend.request_abort(id).await?,
            done => {
                return Err(StoreError::Conflict(format!(
                    "queue {id} already finished ({done})"
                )))
            }
        }
        self.queue(id).await
    }

    /// Deletes a queue's rows; a running queue is asked to abort first.
    pub async fn delete_queue(&self, id: i64) -> Result<()> {
        let current = self.queue(id).await?;
        if current.queue.status == QueueStatus::Running {
            self.backend.request_abort(id).await?;
        }
        if self.backend.delete_queue(id).await? {
            Ok(())
        } else {
            Err(StoreError::NotFound(id))
        }
    }

    /// The change counter now; pass it to [`Store::changes_since`] later.
    pub async fn current_rev(&self) -> Result<i64> {
        self.backend.current_rev().await
    }

    /// Queues changed and ids deleted after change `rev` (at most 500 queues at a time).
    pub async fn changes_since(&self, rev: i64) -> Result<(Vec<QueueDetail>, Vec<i64>)> {
        self.backend.changes_since(rev).await
    }

    /// How many queues there are of each status.
    pub async fn count_by_status(&self) -> Result<std::collections::HashMap<QueueStatus, i64>> {
        let mut map = std::collections::HashMap::new();
        for (status, n) in self.backend.count_by_status().await? {
            map.insert(status.parse().map_err(StoreError::Corrupt)?, n);
        }
        Ok(map)
    }

    /// Which queue ids each worker runs now.
    pub async fn running_by_worker(&self) -> Result<std::collections::HashMap<String, Vec<i64>>> {
        let mut map: std::collections::HashMap<String, Vec<i64>> = std::collections::HashMap::new();
        for (w, id) in self.backend.running_by_worker().await? {
            map.entry(w).or_default().push(id);
        }
        Ok(map)
    }

    // ---- worker side -------------------------------------------------------------------

    /// Registers a worker (or refreshes its heartbeat).
    pub async fn register_worker(&self, w: &WorkerRow) -> Result<()> {
        self.backend.register_worker(w).await
    }

    /// Records that a worker is alive.
    pub async fn worker_heartbeat(&self, worker_id: &str) -> Result<()> {
        self.backend.worker_heartbeat(worker_id, now_ms()).await
    }

    /// Removes a worker that stopped cleanly.
    pub async fn unregister_worker(&self, worker_id: &str) -> Result<()> {
        self.backend.unregister_worker(worker_id).await
    }

    /// Workers registered on `hostname` that are provably dead (another boot, or their pid is
    /// gone): their leases are expired at once and their rows removed. Returns their ids.
    pub async fn dead_workers_on(
        &self,
        hostname: &str,
        boot_id: &str,
        pid_alive: fn(i64) -> bool,
    ) -> Result<Vec<String>> {
        let mut dead = Vec::new();
        for w in self.backend.workers_on(hostname).await? {
            if w.boot_id != boot_id || !pid_alive(w.pid) {
                self.backend.expire_worker(&w.id).await?;
                dead.push(w.id);
            }
        }
        Ok(dead)
    }

    /// Workers seen within `fresh_ms`.
    pub async fn workers(&self, fresh_ms: i64) -> Result<Vec<WorkerRow>> {
        self.backend.workers(now_ms() - fresh_ms).await
    }

    /// Claims the highest-priority, oldest waiting queue for `worker_id` with a lease of `lease_ms`.
    pub async fn claim(&self, worker_id: &str, lease_ms: i64) -> Result<Option<QueueRow>> {
        self.backend.claim(worker_id, now_ms(), lease_ms).await
    }

    /// Takes back running queues whose lease ran out: they wait again, or after `max_attempts`
    /// claims they become `error`. Returns the ids taken back and the ids given up.
    pub async fn reclaim_expired(&self, max_attempts: i64) -> Result<(Vec<i64>, Vec<i64>)> {
        self.backend.reclaim_expired(now_ms(), max_attempts).await
    }

    /// Renews the lease; returns whether an abort was asked for. `ClaimLost` if the queue is
    /// no longer ours (deleted, taken back).
    pub async fn renew_lease(&self, id: i64, worker_id: &str, lease_ms: i64) -> Result<bool> {
        self.backend
            .renew_lease(id, worker_id, now_ms() + lease_ms)
            .await?
            .ok_or(StoreError::ClaimLost(id))
    }

    /// Sets the phase of a queue we hold.
    pub async fn set_phase(&self, id: i64, worker_id: &str, phase: Option<Phase>) -> Result<()> {
        self.backend.set_phase(id, worker_id, phase).await
    }

    /// Stores the resolved commit of a queue we hold.
    pub async fn set_commit(&self, id: i64, worker_id: &str, sha: &str) -> Result<()> {
        self.backend.set_commit(id, worker_id, sha).await
    }

    /// Creates the tasks of a queue that named no scenarios (the repository's default set).
    pub async fn create_tasks(
        &self,
        id: i64,
        worker_id: &str,
        scenarios: &[String],
    ) -> Result<Vec<TaskRow>> {
        self.backend.create_tasks(id, worker_id, scenarios).await
    }

    /// Sets a task's status (and error) for a queue we hold.
    pub async fn set_task(
        &self,
        task_id: i64,
        worker_id: &str,
        status: CaseStatus,
        error: Option<&str>,
    ) -> Result<()> {
        self.backend
            .set_task(task_id, worker_id, status, error, now_ms())
            .await
    }

    /// Creates the pending cases of a task from its parsed scenario; returns their row ids in order.
    pub async fn create_cases(
        &self,
        task_id: i64,
        worker_id: &str,
        cases: &[NewCase],
    ) -> Result<Vec<i64>> {
        self.backend.create_cases(task_id, worker_id, cases).await
    }

    /// Marks a case running.
    pub async fn start_case(&self, case_id: i64, worker_id: &str) -> Result<()> {
        self.backend.start_case(case_id, worker_id, now_ms()).await
    }

    /// Records a case's verdict.
    pub async fn finish_case(
        &self,
        case_id: i64,
        worker_id: &str,
        result: &CaseResult,
    ) -> Result<()> {
        self.backend
            .finish_case(case_id, worker_id, result, now_ms())
            .await
    }

    /// Marks every unfinished case and task of a queue `skipped` (pending) or `error` (running).
    pub async fn close_unfinished(
        &self,
        id: i64,
        worker_id: &str,
        running_message: &str,
    ) -> Result<()> {
        self.backend
            .close_unfinished(id, worker_id, running_message, now_ms())
            .await
    }

    /// Finishes a queue we hold with its final status.
    pub async fn finish_queue(
        &self,
        id: i64,
        worker_id: &str,
        status: QueueStatus,
        error: Option<&str>,
    ) -> Result<()> {
        self.backend
            .finish_queue(id, worker_id, status, error, now_ms())
            .await
    }

    /// Records a process group a worker started, so a later worker can kill it after a crash.
    pub async fn record_group(&self, g: &StaleGroup) -> Result<()> {
        self.backend.record_group(g).await
    }

    /// Forgets a process group that ended.
    pub async fn forget_group(&self, hostname: &str, pgid: i32) -> Result<()> {
        self.backend.forget_group(hostname, pgid).await
    }

    /// Process groups on `hostname` recorded by workers that are no longer alive
    /// (heartbeat older than `stale_ms`), removing them from the table.
    pub async fn take_stale_groups(
        &self,
        hostname: &str,
        stale_ms: i64,
    ) -> Result<Vec<StaleGroup>> {
        self.backend
            .take_stale_groups(hostname, now_ms() - stale_ms)
            .await
    }
}

#[cfg(test)]
mod tests;
