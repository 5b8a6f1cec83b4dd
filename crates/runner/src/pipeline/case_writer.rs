//! The one writer of a queue's case starts and verdicts: they are written to the store in
//! batches, at most [`WRITE_EVERY`] after they happened, so a case costs no database round
//! trip of its own (a hundred short cases on one boot would otherwise spend more time in the
//! database than in the emulator). Nothing is lost: the pipeline flushes before it reads the
//! cases back or ends a task or the queue.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use testarena_store::{CaseUpdate, Holder, Store, StoreError};
use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;

/// Longest a case start or verdict waits before it is written (the dashboard lags by this).
pub(super) const WRITE_EVERY: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Pending {
    updates: Vec<CaseUpdate>,
    /// The first write that failed; later updates are dropped.
    error: Option<StoreError>,
    failed: bool,
}

struct Shared {
    store: Store,
    holder: Holder,
    pending: Mutex<Pending>,
    /// Held while a batch is written: batches reach the store in the order they were taken.
    writing: tokio::sync::Mutex<()>,
    wake: Notify,
}

/// The batching writer of one queue attempt's cases.
pub(super) struct CaseWriter {
    shared: Arc<Shared>,
    _task: AbortOnDropHandle<()>,
}

impl CaseWriter {
    /// A writer for the queue held as `holder`.
    pub(super) fn new(store: Store, holder: Holder) -> CaseWriter {
        let shared = Arc::new(Shared {
            store,
            holder,
            pending: Mutex::default(),
            writing: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                s.wake.notified().await;
                tokio::time::sleep(WRITE_EVERY).await;
                s.write_pending().await;
            }
        });
        CaseWriter {
            shared,
            _task: AbortOnDropHandle::new(task),
        }
    }

    /// Queues `update` for the next batch; `Err` with the first write that failed, if one did.
    pub(super) fn push(&self, update: CaseUpdate) -> Result<(), StoreError> {
        let mut p = self.shared.lock();
        if let Some(e) = p.error.take() {
            return Err(e);
        }
        if p.failed {
            return Ok(());
        }
        let first = p.updates.is_empty();
        p.updates.push(update);
        drop(p);
        if first {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Writes what is queued now; `Err` with the first write that failed, if one did (once).
    pub(super) async fn flush(&self) -> Result<(), StoreError> {
        self.shared.write_pending().await;
        match self.shared.lock().error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the queued updates as one batch.
    async fn write_pending(&self) {
        let _writing = self.writing.lock().await;
        let updates = std::mem::take(&mut self.lock().updates);
        if updates.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_cases(&self.holder, &updates).await {
            tracing::warn!(error = %e, "cannot record the queue's cases");
            let mut p = self.lock();
            p.failed = true;
            p.error.get_or_insert(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testarena_core::validate::ValidQueue;
    use testarena_core::CaseStatus;
    use testarena_store::{CaseResult, NewCase};

    async fn queue_with_cases(store: &Store, n: usize) -> (Holder, i64, Vec<i64>) {
        let q = ValidQueue {
            repo: "https://example.com/r.git".into(),
            branch: "main".into(),
            scenarios: Some(vec!["s.xml".into()]),
            name: "q".into(),
            priority: 5,
            commit: None,
            case_filter: None,
            labels: Vec::new(),
            origin: None,
            no_cache: false,
            retries: 0,
        };
        let id = store.create_queue(&q).await.unwrap().queue.id;
        let holder = store.claim("w", 60_000).await.unwrap().unwrap();
        let holder = holder.holder().unwrap();
        let task = store.queue(id).await.unwrap().tasks[0].0.id;
        let cases: Vec<NewCase> = (0..n)
            .map(|i| NewCase {
                key: format!("TC_{i}"),
                name: String::new(),
            })
            .collect();
        let ids = store.create_cases(task, &holder, &cases).await.unwrap();
        (holder, id, ids)
    }

    fn passed() -> CaseResult {
        CaseResult {
            status: CaseStatus::Passed,
            duration_ms: Some(1),
            message: None,
        }
    }

    #[tokio::test]
    async fn updates_reach_the_store_by_themselves_and_on_flush() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let store = Store::open(&url).await.unwrap();
        let (holder, id, cases) = queue_with_cases(&store, 3).await;
        let w = CaseWriter::new(store.clone(), holder);
        w.push(CaseUpdate::Started {
            case_id: cases[0],
            at: 1,
            log_from: Some(5),
        })
        .unwrap();
        // Within a few batch periods, without a flush.
        let mut seen = None;
        for _ in 0..100 {
            let c = store.case_task(id, "TC_0", None).await.unwrap().unwrap();
            if c.case.status == CaseStatus::Running {
                seen = Some(c.case.log_from);
                break;
            }
            tokio::time::sleep(WRITE_EVERY / 5).await;
        }
        assert_eq!(seen, Some(Some(5)));
        for (i, c) in cases.iter().enumerate() {
            let (at, log_to) = (2, Some(10 + i as u64));
            w.push(CaseUpdate::Finished {
                case_id: *c,
                at,
                result: passed(),
                log_to,
            })
            .unwrap();
        }
        w.flush().await.unwrap();
        let d = store.queue(id).await.unwrap();
        let statuses: Vec<_> = d.tasks[0].1.iter().map(|c| (c.status, c.log_to)).collect();
        assert_eq!(
            statuses,
            vec![
                (CaseStatus::Passed, Some(10)),
                (CaseStatus::Passed, Some(11)),
                (CaseStatus::Passed, Some(12))
            ]
        );
    }

    #[tokio::test]
    async fn a_lost_claim_is_reported_once_and_later_updates_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let store = Store::open(&url).await.unwrap();
        let (_, _, cases) = queue_with_cases(&store, 1).await;
        let w = CaseWriter::new(store.clone(), Holder::new("someone-else", 1));
        let start = CaseUpdate::Started {
            case_id: cases[0],
            at: 1,
            log_from: None,
        };
        w.push(start.clone()).unwrap();
        assert!(matches!(w.flush().await, Err(StoreError::ClaimLost(_))));
        w.push(start).unwrap();
        w.flush().await.unwrap();
    }
}
