//! Live logs wake on change: one watcher per server process looks at the length of every queue
//! log someone follows (a file, no database) and hears from the change poller when a queue ends,
//! and each log has one `watch` channel all its viewers share. A viewer reads the file when the
//! log grew, and ends once its queue finished and everything was sent: N viewers of one log
//! cost one look at the file per tick, and no database query at all after they connected.

use crate::changes::QueueEvent;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use testarena_store::Store;
use tokio::sync::{broadcast, watch};

/// How often the watcher looks at the followed logs' lengths.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// What the viewers of one log know of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tail {
    /// The log's length when last looked at.
    pub len: u64,
    /// Its queue finished (or was deleted): nothing more will be written.
    pub finished: bool,
}

/// One followed log.
struct Followed {
    path: PathBuf,
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

    /// Follows the log of queue `id` at `path`: a receiver that changes when the log grows or
    /// the queue finishes.
    pub fn follow(&self, id: i64, path: PathBuf) -> watch::Receiver<Tail> {
        let mut logs = self.lock();
        let entry = logs.entry(id).or_insert_with(|| Followed {
            tx: watch::Sender::new(Tail {
                len: file_len(&path),
                finished: false,
            }),
            path,
        });
        entry.tx.subscribe()
    }

    /// Tells the viewers of queue `id`'s log that it ended (after one last look at its length).
    pub fn finished(&self, id: i64) {
        if let Some(f) = self.lock().get(&id) {
            let len = file_len(&f.path);
            f.tx.send_if_modified(|t| {
                let changed = !t.finished || t.len != len;
                *t = Tail {
                    len,
                    finished: true,
                };
                changed
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

    /// Looks at every followed log's length, tells its viewers if it grew, and forgets the
    /// logs nobody follows any more.
    fn look(&self) {
        let mut logs = self.lock();
        logs.retain(|_, f| f.tx.receiver_count() > 0);
        for f in logs.values() {
            let len = file_len(&f.path);
            f.tx.send_if_modified(|t| {
                let grew = t.len != len;
                t.len = len;
                grew
            });
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
        let mut every = tokio::time::interval(LOOK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => self.look(),
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

/// The length of the file at `path`; 0 if there is none (yet).
fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn viewers_of_one_log_share_one_watch_and_wake_on_growth_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.log");
        let follows = LogFollows::default();
        let mut a = follows.follow(7, path.clone());
        let mut b = follows.follow(7, path.clone());
        assert_eq!(follows.counts(), (1, 2));
        follows.look();
        assert!(!a.has_changed().unwrap(), "nothing written yet");
        std::fs::write(&path, "line\n").unwrap();
        follows.look();
        assert!(a.has_changed().unwrap() && b.has_changed().unwrap());
        assert_eq!(a.borrow_and_update().len, 5);
        follows.finished(7);
        a.changed().await.unwrap();
        assert!(a.borrow().finished);
        assert!(b.borrow_and_update().finished);
        drop((a, b));
        follows.look();
        assert_eq!(follows.counts(), (0, 0), "forgotten when nobody follows");
    }
}
