//! The worker's side of the store: registration and heartbeats, claims and leases, and the
//! writes of a queue it holds.

use crate::backend::TaskUpdate;
use crate::rows::{Holder, NewCase, QueueRow, StaleGroup, TaskRow, WorkerRow};
use crate::{now_ms, CaseResult, CaseUpdate, Result, Store, StoreError};
use testarena_core::{CaseStatus, Phase, QueueStatus};

impl Store {
    /// Registers a worker (or refreshes its heartbeat).
    pub async fn register_worker(&self, w: &WorkerRow) -> Result<()> {
        self.retry(|| self.backend.register_worker(w)).await
    }

    /// Records that a worker is alive.
    pub async fn worker_heartbeat(&self, worker_id: &str) -> Result<()> {
        let now = now_ms();
        self.retry(|| self.backend.worker_heartbeat(worker_id, now))
            .await
    }

    /// Removes a worker that stopped cleanly.
    pub async fn unregister_worker(&self, worker_id: &str) -> Result<()> {
        self.retry(|| self.backend.unregister_worker(worker_id))
            .await
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
        for w in self.retry(|| self.backend.workers_on(hostname)).await? {
            if w.boot_id != boot_id || !pid_alive(w.pid) {
                self.retry(|| self.backend.expire_worker(&w.id)).await?;
                dead.push(w.id);
            }
        }
        Ok(dead)
    }

    /// Workers seen within `fresh_ms`.
    pub async fn workers(&self, fresh_ms: i64) -> Result<Vec<WorkerRow>> {
        let since = now_ms() - fresh_ms;
        self.retry(|| self.backend.workers(since)).await
    }

    /// Claims the highest-priority, oldest waiting queue that asks for no labels for
    /// `worker_id` with a lease of `lease_ms`.
    pub async fn claim(&self, worker_id: &str, lease_ms: i64) -> Result<Option<QueueRow>> {
        self.claim_labelled(worker_id, &[], lease_ms).await
    }

    /// Claims the highest-priority, oldest waiting queue whose labels are all among `labels`.
    pub async fn claim_labelled(
        &self,
        worker_id: &str,
        labels: &[String],
        lease_ms: i64,
    ) -> Result<Option<QueueRow>> {
        self.retry(|| self.backend.claim(worker_id, labels, now_ms(), lease_ms))
            .await
    }

    /// Hands a queue this worker holds back to wait again (the worker is stopping): it starts
    /// over on its next claim, and the attempt does not count. False if it was not held.
    pub async fn hand_back(&self, id: i64, holder: &Holder) -> Result<bool> {
        self.retry(|| self.backend.hand_back(id, holder)).await
    }

    /// Takes back running queues whose lease ran out: they wait again, or after `max_attempts`
    /// claims they become `error`. Returns the ids taken back and the ids given up.
    pub async fn reclaim_expired(&self, max_attempts: i64) -> Result<(Vec<i64>, Vec<i64>)> {
        self.retry(|| self.backend.reclaim_expired(now_ms(), max_attempts))
            .await
    }

    /// Renews the lease; returns whether an abort was asked for. `ClaimLost` if the queue is
    /// no longer ours (deleted, taken back).
    pub async fn renew_lease(&self, id: i64, holder: &Holder, lease_ms: i64) -> Result<bool> {
        self.retry(|| self.backend.renew_lease(id, holder, now_ms() + lease_ms))
            .await?
            .ok_or(StoreError::ClaimLost(id))
    }

    /// Sets the phase of a queue we hold.
    pub async fn set_phase(&self, id: i64, holder: &Holder, phase: Option<Phase>) -> Result<()> {
        self.retry(|| self.backend.set_phase(id, holder, phase))
            .await
    }

    /// Stores the resolved commit of a queue we hold.
    pub async fn set_commit(&self, id: i64, holder: &Holder, sha: &str) -> Result<()> {
        self.retry(|| self.backend.set_commit(id, holder, sha))
            .await
    }

    /// Records that a queue we hold reused the build of queue `from` (its cached outputs).
    pub async fn set_build_cached_from(
        &self,
        id: i64,
        holder: &Holder,
        from: Option<i64>,
    ) -> Result<()> {
        self.retry(|| self.backend.set_build_cached_from(id, holder, from))
            .await
    }

    /// Creates the tasks of a queue that named no scenarios (the repository's default set).
    pub async fn create_tasks(
        &self,
        id: i64,
        holder: &Holder,
        scenarios: &[String],
    ) -> Result<Vec<TaskRow>> {
        self.retry(|| self.backend.create_tasks(id, holder, scenarios))
            .await
    }

    /// Sets a task's status (and error) for a queue we hold: `running` stamps its start, a
    /// verdict its end.
    pub async fn set_task(
        &self,
        task_id: i64,
        holder: &Holder,
        status: CaseStatus,
        error: Option<&str>,
    ) -> Result<()> {
        let now = now_ms();
        let update = TaskUpdate {
            id: task_id,
            status,
            error,
            started_at: (status == CaseStatus::Running).then_some(now),
            finished_at: status.is_finished().then_some(now),
        };
        self.retry(|| self.backend.set_task(update, holder)).await
    }

    /// Creates the pending cases of a task from its parsed scenario; returns their row ids in order.
    pub async fn create_cases(
        &self,
        task_id: i64,
        holder: &Holder,
        cases: &[NewCase],
    ) -> Result<Vec<i64>> {
        self.retry(|| self.backend.create_cases(task_id, holder, cases))
            .await
    }

    /// Marks a case running (now, with no log range).
    pub async fn start_case(&self, case_id: i64, holder: &Holder) -> Result<()> {
        let at = now_ms();
        let log_from = None;
        self.record_cases(
            holder,
            &[CaseUpdate::Started {
                case_id,
                at,
                log_from,
            }],
        )
        .await
    }

    /// Records a case's verdict (now, with no log range).
    pub async fn finish_case(
        &self,
        case_id: i64,
        holder: &Holder,
        result: &CaseResult,
    ) -> Result<()> {
        let (at, result, log_to) = (now_ms(), result.clone(), None);
        let update = CaseUpdate::Finished {
            case_id,
            at,
            result,
            log_to,
        };
        self.record_cases(holder, &[update]).await
    }

    /// Records case starts and verdicts in one transaction, fenced by `holder`'s claim: all of
    /// them, or none (`ClaimLost` when a case is not of a queue `holder` holds).
    pub async fn record_cases(&self, holder: &Holder, updates: &[CaseUpdate]) -> Result<()> {
        for u in updates {
            if let CaseUpdate::Finished {
                case_id, result, ..
            } = u
            {
                if !result.status.is_finished() {
                    return Err(StoreError::Conflict(format!(
                        "case {case_id} cannot end as {}",
                        result.status
                    )));
                }
            }
        }
        if updates.is_empty() {
            return Ok(());
        }
        self.retry(|| self.backend.record_cases(holder, updates))
            .await
    }

    /// Marks every unfinished case and task of a queue `skipped` (pending) or `error` (running).
    pub async fn close_unfinished(
        &self,
        id: i64,
        holder: &Holder,
        running_message: &str,
    ) -> Result<()> {
        let now = now_ms();
        self.retry(|| {
            self.backend
                .close_unfinished(id, holder, running_message, now)
        })
        .await
    }

    /// Finishes a queue we hold with its final status (a verdict core lets a running queue
    /// become).
    pub async fn finish_queue(
        &self,
        id: i64,
        holder: &Holder,
        status: QueueStatus,
        error: Option<&str>,
    ) -> Result<()> {
        if !(status.is_finished() && QueueStatus::Running.can_become(status)) {
            return Err(StoreError::Conflict(format!(
                "queue {id} cannot end as {status}"
            )));
        }
        let now = now_ms();
        self.retry(|| self.backend.finish_queue(id, holder, status, error, now))
            .await
    }

    /// Records a process group a worker started, so a later worker can kill it after a crash.
    pub async fn record_group(&self, g: &StaleGroup) -> Result<()> {
        self.retry(|| self.backend.record_group(g)).await
    }

    /// Forgets a process group that ended.
    pub async fn forget_group(&self, hostname: &str, pgid: i32) -> Result<()> {
        self.retry(|| self.backend.forget_group(hostname, pgid))
            .await
    }

    /// Process groups on `hostname` recorded by workers that are no longer alive
    /// (heartbeat older than `stale_ms`), removing them from the table.
    pub async fn take_stale_groups(
        &self,
        hostname: &str,
        stale_ms: i64,
    ) -> Result<Vec<StaleGroup>> {
        let alive_since = now_ms() - stale_ms;
        self.retry(|| self.backend.take_stale_groups(hostname, alive_since))
            .await
    }
}
