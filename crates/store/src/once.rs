//! Submits that happen at most once: a webhook delivery, or a client's `Idempotency-Key`. Both
//! ride on the queue's own INSERT (a unique index on the key's columns), so two tries at the
//! same time make one queue, and a replay finds the queue the first try made.

use crate::rows::{CaseCaps, QueueDetail};
use crate::{now_ms, Result, Store, StoreError};
use testarena_core::validate::ValidQueue;

/// A client's `Idempotency-Key` for one submit, as the store keeps it beside the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitKey {
    /// Whose key it is: a digest of the caller's credentials, `""` for anonymous callers (who
    /// share one scope).
    pub caller: String,
    /// The key as the client sent it.
    pub key: String,
    /// A digest of the request, to tell a replay from another request under the same key.
    pub request: String,
}

/// What makes the insert of a queue happen at most once.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Once<'a> {
    /// A webhook delivery id (Gitea's `X-Gitea-Delivery`).
    Delivery(&'a str),
    /// A client's `Idempotency-Key`.
    Key(&'a SubmitKey),
}

impl std::fmt::Display for Once<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Once::Delivery(d) => write!(f, "delivery {d}"),
            Once::Key(k) => write!(f, "idempotency key {:?}", k.key),
        }
    }
}

/// What a submit with an `Idempotency-Key` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Keyed {
    /// It made this new queue.
    Created(QueueDetail),
    /// The key's earlier submit, with the same request, made this queue: nothing new.
    Replayed(QueueDetail),
    /// The key was used before for another request, which made queue `id`: nothing new.
    Reused(i64),
}

/// How often an insert is tried when the queue that held its key vanished (deleted) between
/// the refused insert and the look-up.
const ONCE_TRIES: usize = 3;

impl Store {
    /// Stores a new queue for a webhook delivery, unless that delivery already made one: then
    /// that queue is returned. The flag says whether the queue is new.
    pub async fn create_queue_once(
        &self,
        q: &ValidQueue,
        delivery: &str,
        caps: CaseCaps,
    ) -> Result<(QueueDetail, bool)> {
        let (id, created, _) = self.insert_once(q, Once::Delivery(delivery), None).await?;
        Ok((self.queue_capped(id, caps).await?, created))
    }

    /// Stores a new queue for a submit with an `Idempotency-Key`, unless the key (of that
    /// caller) already made one: then that queue is returned if the request was the same, and
    /// [`Keyed::Reused`] if it was not. `submitted_by` names the API token that submitted it.
    pub async fn create_queue_keyed(
        &self,
        q: &ValidQueue,
        key: &SubmitKey,
        submitted_by: Option<&str>,
        caps: CaseCaps,
    ) -> Result<Keyed> {
        let (id, created, request) = self.insert_once(q, Once::Key(key), submitted_by).await?;
        if created {
            return Ok(Keyed::Created(self.queue_capped(id, caps).await?));
        }
        self.earlier(id, request, key, caps).await
    }

    /// What an earlier submit with `key` made, if it made anything (and its queue still
    /// exists): for a request that must be checked before it can be built (a re-run of a queue
    /// that may be gone by the time the client tries again).
    pub async fn keyed_earlier(&self, key: &SubmitKey, caps: CaseCaps) -> Result<Option<Keyed>> {
        match self.retry(|| self.backend.queue_of(Once::Key(key))).await? {
            Some((id, request)) => Ok(Some(self.earlier(id, request, key, caps).await?)),
            None => Ok(None),
        }
    }

    /// The answer to a key that made queue `id` with the request digest `request`.
    async fn earlier(
        &self,
        id: i64,
        request: Option<String>,
        key: &SubmitKey,
        caps: CaseCaps,
    ) -> Result<Keyed> {
        if request.as_deref() != Some(key.request.as_str()) {
            return Ok(Keyed::Reused(id));
        }
        match self.queue_capped(id, caps).await {
            Ok(detail) => Ok(Keyed::Replayed(detail)),
            // Deleted since: the key is free again, as if never used.
            Err(StoreError::NotFound(_)) => Err(StoreError::Busy(format!(
                "queue {id} of idempotency key {:?} was deleted meanwhile",
                key.key
            ))),
            Err(e) => Err(e),
        }
    }

    /// Inserts `q` unless `once` already made a queue. Returns the queue's id, whether it is
    /// new, and for an earlier one the request digest stored with it.
    async fn insert_once(
        &self,
        q: &ValidQueue,
        once: Once<'_>,
        submitted_by: Option<&str>,
    ) -> Result<(i64, bool, Option<String>)> {
        for _ in 0..ONCE_TRIES {
            let now = now_ms();
            if let Some(id) = self
                .retry(|| self.backend.insert_queue(q, Some(once), submitted_by, now))
                .await?
            {
                return Ok((id, true, None));
            }
            if let Some((id, request)) = self.retry(|| self.backend.queue_of(once)).await? {
                return Ok((id, false, request));
            }
            // The queue that held it was deleted between the two: the insert may go in now.
        }
        Err(StoreError::Busy(format!(
            "the queue of {once} kept vanishing; try again"
        )))
    }
}
