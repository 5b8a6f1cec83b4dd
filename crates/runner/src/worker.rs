//! The worker loop: clean up after a crashed predecessor, claim queues, run them with a lease
//! renewed every second (which is also how an abort from the API arrives), stop on shutdown.

use crate::git::{FetchPolicy, MirrorCache};
use crate::pipeline::{self, QueueControl, RunnerConfig, StopReason};
use crate::process;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testarena_store::{Store, StoreError, WorkerRow};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long a claim lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a running queue's lease is renewed and its abort flag read.
pub const RENEW_EVERY: Duration = Duration::from_millis(500);
/// Claims of one queue before it is given up as `error`.
pub const MAX_ATTEMPTS: i64 = 3;
/// How often the worker looks for work when nobody wakes it.
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// A worker whose heartbeat is older than this is considered dead.
pub const WORKER_STALE: Duration = Duration::from_secs(60);

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
        let stale_ms = WORKER_STALE.as_millis() as i64;
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

    /// Claims and runs queues until `shutdown` fires; then stops running queues (killing their
    /// processes) and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StoreError> {
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
            })
            .await?;
        self.recover().await?;
        tracing::info!(worker = %self.cfg.worker_id, concurrency = self.concurrency, "worker started");
        let running: Arc<Mutex<HashMap<i64, Arc<QueueControl>>>> = Arc::default();
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mirrors = Arc::new(
            MirrorCache::new(self.cfg.data_dir.join("git")).with_policy(self.fetch_policy.clone()),
        );
        let heartbeat = {
            let store = self.store.clone();
            let id = self.cfg.worker_id.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
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
            })
        };
        let mut handles = Vec::new();
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.cancelled() => break,
            };
            let claimed = match self
                .store
                .claim(&self.cfg.worker_id, LEASE.as_millis() as i64)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "claim failed");
                    None
                }
            };
            let Some(queue) = claimed else {
                drop(permit);
                tokio::select! {
                    _ = self.new_work.notified() => {}
                    _ = tokio::time::sleep(POLL_EVERY) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            };
            let id = queue.id;
            tracing::info!(queue = id, "claimed");
            let ctl = Arc::new(QueueControl::default());
            running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, ctl.clone());
            let store = self.store.clone();
            let cfg = self.cfg.clone();
            let mirrors = mirrors.clone();
            let running = running.clone();
            handles.push(tokio::spawn(async move {
                // Aborted on drop: also when `run_queue` panics, so that the lease runs out
                // and the queue is taken back instead of staying `running` for ever.
                let renew = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(renew_lease(
                    store.clone(),
                    cfg.worker_id.clone(),
                    id,
                    ctl.clone(),
                )));
                pipeline::run_queue(&store, &cfg, &mirrors, queue, &ctl).await;
                drop(renew);
                hold_reserve(&cfg.data_dir);
                running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                drop(permit);
                tracing::info!(queue = id, "done");
            }));
            handles.retain(|h| !h.is_finished());
        }
        let controls: Vec<Arc<QueueControl>> = running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for c in controls {
            c.stop(StopReason::Shutdown);
        }
        for h in handles {
            let _ = h.await;
        }
        heartbeat.abort();
        let _ = self.store.unregister_worker(&self.cfg.worker_id).await;
        tracing::info!("worker stopped");
        Ok(())
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
async fn renew_lease(store: Store, worker: String, id: i64, ctl: Arc<QueueControl>) {
    loop {
        match store
            .renew_lease(id, &worker, LEASE.as_millis() as i64)
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
