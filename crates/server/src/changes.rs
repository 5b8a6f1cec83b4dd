//! Live updates: one poller per server process follows the database's change counter (the
//! worker may be another process, so the database is the only common ground) and fans every
//! change out: to `/api/v1/events` subscribers, to the live logs, to the metrics and to the
//! Gitea reporter. N viewers cost the database nothing more than one.

use crate::metrics::Metrics;
use crate::view::{self, DETAIL_CAPS};
use std::sync::Arc;
use std::time::Duration;
use testarena_core::api;
use testarena_store::Store;
use tokio::sync::{broadcast, watch, Notify};

/// How often the poller looks at the change counter when nobody pokes it (nor, on
/// PostgreSQL, a NOTIFY of a change by another process or replica).
const POLL_EVERY: Duration = Duration::from_millis(250);

/// How often it looks when the database tells of changes (PostgreSQL's NOTIFY): a fallback.
const POLL_NOTIFIED: Duration = Duration::from_secs(2);

/// Most queues one read of changes returns (the store's page).
const CHANGES_PAGE: usize = 500;

/// A change to send to dashboard clients.
#[derive(Debug, Clone)]
pub enum QueueEvent {
    /// Created or updated.
    Changed(Box<api::Queue>),
    /// Deleted.
    Deleted(i64),
}

/// Where the poller sends what it sees.
pub(crate) struct Fanout {
    pub store: Store,
    pub events: broadcast::Sender<QueueEvent>,
    pub rev: watch::Sender<i64>,
    pub poke: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

impl Fanout {
    /// Follows the change counter from `start` (read now if not given) until the task is
    /// dropped; `poke` makes it look at once.
    pub(crate) async fn run(self, start: Option<i64>) {
        let mut rev = match start {
            Some(rev) => rev,
            None => self.store.current_rev().await.unwrap_or(0),
        };
        self.rev.send_replace(rev);
        let poll = if self.store.notifies() {
            POLL_NOTIFIED
        } else {
            POLL_EVERY
        };
        loop {
            tokio::select! {
                // A change by another process (PostgreSQL's NOTIFY), else the slow poll.
                _ = self.store.wait_for_change(poll) => {}
                _ = self.poke.notified() => {}
            }
            match self.store.current_rev().await {
                Ok(now) if now != rev => rev = self.send_changes(rev, now).await,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the change counter"),
            }
        }
    }

    /// Sends the changes after `rev` (the counter is `now`); returns where to continue from.
    async fn send_changes(&self, rev: i64, now: i64) -> i64 {
        match self.store.changes_since(rev, DETAIL_CAPS).await {
            Ok((changed, deleted)) => {
                let live = match changed.is_empty() {
                    true => None,
                    false => view::live_labels(&self.store).await,
                };
                for q in &changed {
                    let q = view::queue_live(q, live.as_deref());
                    self.metrics.observe(&q);
                    let _ = self.events.send(QueueEvent::Changed(Box::new(q)));
                }
                for id in deleted {
                    let _ = self.events.send(QueueEvent::Deleted(id));
                }
                // A full page: continue from the last queue seen.
                let next = if changed.len() >= CHANGES_PAGE {
                    changed.iter().map(|q| q.queue.rev).max().unwrap_or(now)
                } else {
                    now
                };
                self.rev.send_replace(next);
                next
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read changes");
                rev
            }
        }
    }
}
