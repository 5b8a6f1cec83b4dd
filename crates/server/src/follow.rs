//! Live logs wake on change: one watcher per server process looks at the length of every queue
//! log someone follows (in the database) when chunks were written (PostgreSQL's NOTIFY, or a
//! write in this process; SQLite polls), and hears from the change poller when a queue ends;
//! each log has one `watch` channel all its viewers share. A viewer reads the log when it grew,
//! and ends once its queue finished and everything was sent: N viewers of one log cost one
//! length query per wake-up, not N.

use crate::changes::QueueEvent;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testarena_core::limits::LOG_CHUNK;
use testarena_store::Store;
use tokio::sync::{broadcast, watch};

/// How often the watcher looks at the followed logs' lengths when the database tells nobody of
/// new chunks (SQLite, written by another process).
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// How often it looks when the database tells of new chunks (PostgreSQL's NOTIFY): a fallback.
const LOOK_NOTIFIED: Duration = Duration::from_secs(1);

/// The log viewers follow.
const QUEUE_LOG: &str = "queue.log";

/// What the viewers of one log know of it.
#[derive(Debug, Clone, Default)]
pub struct Tail {
    /// The log's length when last looked at.
    pub len: u64,
    /// Its queue finished (or was deleted): nothing more will be written.
    pub finished: bool,
    /// What the log gained when last looked at (from the start of its last partial line), read
    /// once for all viewers.
    pub recent: Option<Arc<Recent>>,
}

/// Bytes of a log from `start`.
#[derive(Debug)]
pub struct Recent {
    pub start: u64,
    pub data: Vec<u8>,
}

impl Tail {
    /// The log from `offset` as far as the recent bytes go, if they hold `offset`.
    pub fn cached(&self, offset: u64) -> Option<&[u8]> {
        let r = self.recent.as_ref()?;
        let from = usize::try_from(offset.checked_sub(r.start)?).ok()?;
        (from < r.data.len()).then(|| &r.data[from..])
    }
}

/// One followed log.
struct Followed {
    tx: watch::Sender<Tail>,
}

/// Every log followed now, by queue id.
#[derive(Default)]
pub struct LogFollows {
    logs: Mutex<HashMap<i64, Followed>>,
}

impl LogFollows {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Followed>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the log of queue `id`: a receiver that changes when the log grows or the queue
    /// finishes (a viewer reads the log once on connecting in any case).
    pub fn follow(&self, id: i64) -> watch::Receiver<Tail> {
        let mut logs = self.lock();
        let entry = logs.entry(id).or_insert_with(|| Followed {
            tx: watch::Sender::new(Tail::default()),
        });
        entry.tx.subscribe()
    }

    /// Tells the viewers of queue `id`'s log that it ended: every line was written before its
    /// verdict, so whatever they read from now on is all of it.
    pub fn finished(&self, id: i64) {
        if let Some(f) = self.lock().get(&id) {
            f.tx.send_if_modified(|t| {
                let changed = !t.finished;
                t.finished = true;
                changed
            });
        }
    }

    /// Where queue `id`'s followed log stood when last looked at (length, and where the
    /// recent bytes' last partial line starts), if it is followed.
    fn stood(&self, id: i64) -> Option<(u64, u64)> {
        let logs = self.lock();
        let t = logs.get(&id)?.tx.borrow();
        let partial_from = match &t.recent {
            Some(r) if r.start + r.data.len() as u64 == t.len => {
                let whole = r
                    .data
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                r.start + whole as u64
            }
            _ => t.len,
        };
        Some((t.len, partial_from))
    }

    /// Tells the viewers of queue `id`'s log its length now, and the bytes it gained.
    fn grew(&self, id: i64, len: u64, recent: Option<Recent>) {
        if let Some(f) = self.lock().get(&id) {
            let recent = recent.map(Arc::new);
            f.tx.send_if_modified(|t| {
                let grew = t.len != len;
                t.len = len;
                if grew {
                    t.recent = recent;
                }
                grew
            });
        }
    }

    /// How many logs are followed, and by how many viewers in all.
    pub fn counts(&self) -> (usize, usize) {
        let logs = self.lock();
        (
            logs.len(),
            logs.values().map(|f| f.tx.receiver_count()).sum(),
        )
    }

    /// Forgets the logs nobody follows any more; returns the ones followed.
    fn prune(&self) -> Vec<i64> {
        let mut logs = self.lock();
        logs.retain(|_, f| f.tx.receiver_count() > 0);
        logs.keys().copied().collect()
    }

    /// Looks at every followed log's length in the database and, if it grew, reads what it
    /// gained once for all its viewers.
    async fn look(&self, store: &Store) {
        for id in self.prune() {
            let Some((was, partial_from)) = self.stood(id) else {
                continue;
            };
            let len = match store.file_len(id, QUEUE_LOG).await {
                Ok(len) if len != was => len,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(queue = id, error = %e, "cannot look at a followed log");
                    continue;
                }
            };
            let recent = store
                .read_file(id, QUEUE_LOG, partial_from, LOG_CHUNK)
                .await
                .ok()
                .map(|data| Recent {
                    start: partial_from,
                    data,
                });
            self.grew(id, len, recent);
        }
    }

    /// The followed queues (to check after missing some changes).
    fn ids(&self) -> Vec<i64> {
        self.lock().keys().copied().collect()
    }

    /// Runs the watcher until the task is dropped: looks at the logs every [`LOOK_EVERY`] and
    /// marks logs finished as the change poller reports their queues' ends.
    pub(crate) async fn run(
        self: std::sync::Arc<Self>,
        mut events: broadcast::Receiver<QueueEvent>,
        store: Store,
    ) {
        let every = match store.notifies() {
            true => LOOK_NOTIFIED,
            false => LOOK_EVERY,
        };
        loop {
            tokio::select! {
                _ = store.wait_for_files(every) => self.look(&store).await,
                event = events.recv() => match event {
                    Ok(QueueEvent::Changed(q)) if q.status.is_finished() => self.finished(q.id),
                    Ok(QueueEvent::Deleted(id)) => self.finished(id),
                    Ok(QueueEvent::Changed(_)) => {}
                    // Some changes were missed: ask the database about the followed queues.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.recheck(&store).await,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// Marks the followed queues that finished (or are gone), from the database.
    async fn recheck(&self, store: &Store) {
        for id in self.ids() {
            match store.queue_row(id).await {
                Ok(q) if !q.status.is_finished() => {}
                Ok(_) | Err(testarena_store::StoreError::NotFound(_)) => self.finished(id),
                Err(e) => tracing::warn!(queue = id, error = %e, "cannot check a followed queue"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn viewers_of_one_log_share_one_watch_and_wake_on_growth_and_end() {
        let follows = LogFollows::default();
        let mut a = follows.follow(7);
        let mut b = follows.follow(7);
        assert_eq!(follows.counts(), (1, 2));
        follows.grew(7, 0, None);
        assert!(!a.has_changed().unwrap(), "nothing written yet");
        let recent = Recent {
            start: 0,
            data: b"one\ntw".to_vec(),
        };
        follows.grew(7, 6, Some(recent));
        assert!(a.has_changed().unwrap() && b.has_changed().unwrap());
        assert_eq!(a.borrow().cached(4), Some(&b"tw"[..]));
        assert_eq!(a.borrow().cached(6), None);
        assert_eq!(a.borrow_and_update().len, 6);
        // The next read starts at the partial line, for viewers that stopped before it.
        assert_eq!(follows.stood(7), Some((6, 4)));
        follows.finished(7);
        a.changed().await.unwrap();
        assert!(a.borrow().finished);
        assert!(b.borrow_and_update().finished);
        drop((a, b));
        assert!(follows.prune().is_empty());
        assert_eq!(follows.counts(), (0, 0), "forgotten when nobody follows");
    }
}
