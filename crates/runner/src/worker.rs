//! The worker loop: clean up after a crashed predecessor, claim queues, run them with a lease
//! renewed every second (which is also how an abort from the API arrives), stop on shutdown;
//! beside it, the process's bisect driver (`crate::bisect`).

use crate::git::{FetchPolicy, MirrorCache};
use crate::pipeline::{self, QueueControl, RunnerConfig, StopReason};
use crate::process;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testarena_store::{Holder, QueueRow, Store, StoreError, WorkerRow};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long a claim lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a running queue's lease is renewed and its abort flag read.
pub const RENEW_EVERY: Duration = Duration::from_millis(500);
/// Claims of one queue before it is given up as `error`.
pub const MAX_ATTEMPTS: i64 = testarena_core::limits::MAX_QUEUE_ATTEMPTS;
/// How often the worker looks for work when nobody wakes it (neither an in-process server
/// nor, on PostgreSQL, a NOTIFY from another process).
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// This machine's boot id: a process group recorded under another boot is long gone.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A worker process's identity and settings.
pub struct Worker {
    pub store: Store,
    pub cfg: Arc<RunnerConfig>,
    pub concurrency: usize,
    /// Woken by an in-process server when a queue is created.
    pub new_work: Arc<Notify>,
    /// What repositories may be fetched (checked again before every fetch) and the stall limit.
    pub fetch_policy: FetchPolicy,
    /// Its labels: it claims only queues that ask for none but these.
    pub labels: Vec<String>,
    /// On shutdown, how long running queues may go on before they are stopped and handed back.
    pub grace: Duration,
}

impl Worker {
    /// Kills what a crashed worker on this host left running and takes back its queues.
    pub async fn recover(&self) -> Result<(), StoreError> {
        // First the provably dead workers of this host (their rows go), then every process
        // group recorded by a worker that is no longer registered is theirs: kill it.
        let dead = self
            .store
            .dead_workers_on(&self.cfg.hostname, &self.cfg.boot_id, pid_alive)
            .await?;
        for w in &dead {
            tracing::warn!(worker = %w, "expiring the leases of a dead worker on this host");
        }
        let stale_ms = testarena_core::limits::WORKER_ALIVE_MS;
        let stale = self
            .store
            .take_stale_groups(&self.cfg.hostname, stale_ms)
            .await?;
        let mine: Vec<i32> = stale
            .iter()
            .filter(|g| g.boot_id == self.cfg.boot_id)
            .map(|g| g.pgid)
            .collect();
        let killed = process::kill_stale_groups(&mine);
        if killed > 0 {
            tracing::warn!(killed, "killed process groups left by a crashed worker");
        }
        let (back, gone) = self.store.reclaim_expired(MAX_ATTEMPTS).await?;
        if !back.is_empty() || !gone.is_empty() {
            tracing::warn!(?back, ?gone, "took back queues of lost workers");
        }
        Ok(())
    }

    /// Claims and runs queues until `shutdown` fires; then claims no more, lets running queues
    /// finish within the grace period, stops the rest (killing their processes), hands them
    /// back to wait for another worker, and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StoreError> {
        self.start().await?;
        // The heartbeat goes on through the grace period: the worker is alive until it returns.
        let heartbeat = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(heartbeat(
            self.store.clone(),
            self.cfg.worker_id.clone(),
            CancellationToken::new(),
        )));
        let running = Running::default();
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let policy = self.fetch_policy.clone();
        let mirrors = Arc::new(MirrorCache::new(self.cfg.data_dir.join("git")).with_policy(policy));
        let queue_ended = Arc::new(Notify::new());
        let _bisects = self.bisect_driver(mirrors.clone(), queue_ended.clone(), &shutdown);
        let mut handles = Vec::new();
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.cancelled() => break,
            };
            let Some(queue) = self.claim().await else {
                drop(permit);
                tokio::select! {
                    _ = self.new_work.notified() => {}
                    // Another process's new queue (PostgreSQL's NOTIFY), else the slow poll.
                    _ = self.store.wait_for_work(POLL_EVERY) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            };
            let job = self.queue_job(queue, mirrors.clone(), running.clone());
            let ended = queue_ended.clone();
            handles.push(tokio::spawn(async move {
                job.await;
                // It may have been a bisect's step.
                ended.notify_one();
                drop(permit);
            }));
            handles.retain(|h| !h.is_finished());
        }
        handles.retain(|h| !h.is_finished());
        if !handles.is_empty() {
            tracing::info!(
                running = handles.len(),
                grace = %humantime::format_duration(self.grace),
                "stopping: no more claims; running queues may finish within the grace period"
            );
        }
        let mut all_done = tokio::spawn(async move {
            for h in handles {
                let _ = h.await;
            }
        });
        if tokio::time::timeout(self.grace, &mut all_done)
            .await
            .is_err()
        {
            tracing::warn!("grace period over: stopping running queues and handing them back");
            running.stop_all();
            let _ = all_done.await;
        }
        drop(heartbeat);
        let _ = self.store.unregister_worker(&self.cfg.worker_id).await;
        tracing::info!("worker stopped");
        Ok(())
    }

    /// Starts this process's bisect driver (see `crate::bisect`), with the worker's mirrors;
    /// it runs until `shutdown` or until the handle is dropped.
    fn bisect_driver(
        &self,
        mirrors: Arc<MirrorCache>,
        queue_ended: Arc<Notify>,
        shutdown: &CancellationToken,
    ) -> tokio_util::task::AbortOnDropHandle<()> {
        let driver = crate::bisect::Driver {
            store: self.store.clone(),
            mirrors,
            id: self.cfg.worker_id.clone(),
            fetch_timeout: self.cfg.clone_timeout,
            new_work: self.new_work.clone(),
            queue_ended,
        };
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(driver.run(shutdown.clone())))
    }

    /// Prepares this host and registers the worker: subreaper, disk reserve, crash clean-up.
    async fn start(&self) -> Result<(), StoreError> {
        if let Err(e) = process::become_subreaper() {
            tracing::warn!(error = %e, "cannot become a child subreaper; daemonized build children may escape");
        }
        hold_reserve(&self.cfg.data_dir);
        let now = testarena_store::now_ms();
        self.store
            .register_worker(&WorkerRow {
                id: self.cfg.worker_id.clone(),
                hostname: self.cfg.hostname.clone(),
                pid: i64::from(std::process::id()),
                started_at: now,
                heartbeat_at: now,
                concurrency: self.concurrency as i64,
                boot_id: self.cfg.boot_id.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                labels: self.labels.clone(),
            })
            .await?;
        self.recover().await?;
        tracing::info!(worker = %self.cfg.worker_id, concurrency = self.concurrency, labels = ?self.labels, "worker started");
        Ok(())
    }

    /// The next waiting queue this worker may take, if any (a failed claim is logged).
    async fn claim(&self) -> Option<QueueRow> {
        let lease = LEASE.as_millis() as i64;
        match self
            .store
            .claim_labelled(&self.cfg.worker_id, &self.labels, lease)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "claim failed");
                None
            }
        }
    }

    /// Runs a claimed queue under its renewed lease, registered in `running` meanwhile.
    fn queue_job(
        &self,
        queue: QueueRow,
        mirrors: Arc<MirrorCache>,
        running: Running,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let id = queue.id;
        let holder = Holder::new(self.cfg.worker_id.clone(), queue.attempts);
        tracing::info!(queue = id, "claimed");
        let ctl = running.add(id);
        let store = self.store.clone();
        let cfg = self.cfg.clone();
        async move {
            let work = pipeline::run_queue(&store, &cfg, &mirrors, queue, &ctl);
            with_lease(&store, holder, id, &ctl, work).await;
            hold_reserve(&cfg.data_dir);
            running.remove(id);
            tracing::info!(queue = id, "done");
        }
    }
}

/// The controls of the queues this worker runs, to stop them all on shutdown.
#[derive(Clone, Default)]
struct Running(Arc<Mutex<HashMap<i64, Arc<QueueControl>>>>);

impl Running {
    fn add(&self, id: i64) -> Arc<QueueControl> {
        let ctl = Arc::new(QueueControl::default());
        self.lock().insert(id, ctl.clone());
        ctl
    }

    fn remove(&self, id: i64) {
        self.lock().remove(&id);
    }

    fn stop_all(&self) {
        for c in self.lock().values() {
            c.stop(StopReason::Shutdown);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<QueueControl>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs `work` while renewing the queue's lease; the renewal ends with `work`, also when it
/// panics (then the lease runs out and the queue is taken back instead of staying `running`).
async fn with_lease<F: std::future::Future>(
    store: &Store,
    holder: Holder,
    id: i64,
    ctl: &Arc<QueueControl>,
    work: F,
) -> F::Output {
    let renewal = renew_lease(store.clone(), holder, id, ctl.clone());
    let _renew = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(renewal));
    work.await
}

/// Beats this worker's heartbeat and takes back queues of lost workers, until `stop`.
async fn heartbeat(store: Store, id: String, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.cancelled() => break,
        }
        if let Err(e) = store.worker_heartbeat(&id).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        if let Err(e) = store.reclaim_expired(MAX_ATTEMPTS).await {
            tracing::warn!(error = %e, "reclaiming expired leases failed");
        }
    }
}

/// Holds disk space back for verdicts (see `reserve`); without room for it, runs on.
fn hold_reserve(data_dir: &std::path::Path) {
    if let Err(e) = crate::reserve::ensure(data_dir) {
        tracing::warn!(error = %e, "cannot reserve disk space for verdicts");
    }
}

fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// Renews the lease of a running queue; turns an abort request or a lost claim into a stop.
async fn renew_lease(store: Store, holder: Holder, id: i64, ctl: Arc<QueueControl>) {
    loop {
        match store
            .renew_lease(id, &holder, LEASE.as_millis() as i64)
            .await
        {
            Ok(true) => ctl.stop(StopReason::Aborted),
            Ok(false) => {}
            Err(StoreError::ClaimLost(_)) => {
                ctl.stop(StopReason::ClaimLost);
                return;
            }
            Err(e) => tracing::warn!(queue = id, error = %e, "lease renewal failed"),
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_lease_renewal_ends_when_the_queue_run_panics() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        let ctl = Arc::new(QueueControl::default());
        let (s, c) = (store.clone(), ctl.clone());
        let run = tokio::spawn(async move {
            with_lease(&s, Holder::new("w1", 1), 1, &c, async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                panic!("a bug in the pipeline");
            })
            .await
        });
        assert!(run.await.is_err(), "the run panicked");
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The renewal task held the other reference; aborted, it let go of it.
        assert_eq!(Arc::strong_count(&ctl), 1);
    }
}
