//! The API's answers for `GET /api/v1/queues/{id}` and `GET /api/v1/queues`, built by the
//! database: each queue's whole JSON (its row, its tasks with their first cases, the counts, the
//! links, why it waits) comes out of ONE statement as text, and is handed on as it is.
//!
//! Why: reading a queue as rows (queue, tasks, cases, counts, live workers) cost a pooled
//! connection and a round trip each, and for a page of 50 queues most of the time went into
//! materialising every column as a value and freeing it again (bench/NOTES.md, benchmark 5).
//! Built in SQL, a queue is one text value. That alone did not make a page cheaper (on SQLite
//! the statement's subqueries cost as much as the rows did, bench/NOTES.md "Issue 14 goal 4");
//! keeping the built JSON by the queue's `rev` did (below).
//!
//! The JSON is the shape of `testarena_core::api::Queue`, as the server's `view::queue_live`
//! makes it from [`crate::QueueDetail`] (the server's tests compare the two). Two things SQL
//! does not do here: hiding credentials in the repository URL and percent-encoding case ids in
//! links. The statement flags a queue whose repository holds `@` or `?` or whose cases have an
//! id outside `[A-Za-z0-9_.-]` ([`QueueJson::raw`]); for those (rare) queues the server redoes
//! both on the parsed JSON.
//!
//! Each backend runs [`select`], [`stamp`] and [`stamps`] in its dialect ([`Dialect`]).
//!
//! ## The answers kept ([`Answers`])
//!
//! Building a queue's JSON costs the database far more than reading its `rev`, so the store
//! keeps each queue's JSON (but its `waiting_reason`) with the `rev` it was built at, and a
//! request first reads only the `rev` (and the `waiting_reason`, which depends on the live
//! workers and the clock, so it is never kept) of the queues it answers: a queue whose `rev`
//! is the one kept is answered from memory, the others are built (in one statement) and kept.
//! This is never stale, on one `serve` or several on one database, because:
//! - every change of anything the JSON shows (the queue's row, its tasks, their cases)
//!   gives the queue a new `rev` from one counter in the same transaction: the triggers of
//!   migrations `*_changes.sql` / `0001_init.sql`, and those of `0011_queue_list.sql` /
//!   `0007_queue_list.sql` for the columns a queue is created with and for deleted tasks
//!   and cases (the server's `tests/page.rs` checks it);
//! - a kept JSON and its `rev` come out of the same statement, so from one snapshot;
//! - a request's `rev` is read by its own statement, after every write committed before it.
//!
//! So a kept JSON whose `rev` is the queue's `rev` now is what building it now would give.

mod sql;

pub(crate) use sql::{
    body, ids_filter, list_filter, select, stamp, stamp_of, stamps, stamps_of, version, version_of,
};

use crate::backend::{Body, Stamp, Version};
use crate::rows::CaseCaps;
use crate::{now_ms, Result, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use testarena_core::QueueStatus;

/// One queue's answer as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueJson {
    pub id: i64,
    /// The whole `api::Queue` object.
    pub json: String,
    /// The repository URL may hold credentials, or a case id needs percent-encoding in its
    /// links: the caller must redo those (see the module's comment) before answering.
    pub raw: bool,
}

impl Body {
    /// The whole JSON, with `reason` as its `waiting_reason` (left out when `None`, as
    /// `api::Queue` serialises it).
    fn json(&self, reason: Option<&str>) -> Result<QueueJson> {
        let mut json = String::with_capacity(self.head.len() + self.tail.len() + 80);
        json.push_str(&self.head);
        if let Some(reason) = reason {
            json.push_str(",\"waiting_reason\":");
            json.push_str(
                &serde_json::to_string(reason).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
        }
        json.push(',');
        json.push_str(&self.tail);
        Ok(QueueJson {
            id: self.id,
            json,
            raw: self.raw,
        })
    }
}

/// What a kept value takes, for the bound of [`Bounded`].
trait Bytes {
    fn bytes(&self) -> usize;
}

impl Bytes for Body {
    fn bytes(&self) -> usize {
        self.head.len() + self.tail.len()
    }
}

impl Bytes for (Version, Arc<ListPage>) {
    fn bytes(&self) -> usize {
        self.1 .0.iter().map(|q| q.json.len()).sum()
    }
}

/// Values kept in memory within [`Bounded::MAX_BYTES`]: a value of more than an eighth of it
/// is not kept, and when one would outgrow it the map starts over empty.
#[derive(Debug)]
struct Bounded<K, V> {
    kept: Mutex<(HashMap<K, V>, usize)>,
}

impl<K, V> Default for Bounded<K, V> {
    fn default() -> Self {
        Bounded {
            kept: Mutex::new((HashMap::new(), 0)),
        }
    }
}

impl<K: std::hash::Hash + Eq, V: Bytes + Clone> Bounded<K, V> {
    /// What the values may hold in all (a queue's detail can be ~1 MB: 2,000 cases; pages
    /// of up to 500 queues, with any cursor, are many).
    const MAX_BYTES: usize = 8 << 20;

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<K, V>, usize)> {
        // A panic while holding it leaves a consistent map (each change is one insert or clear).
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &K) -> Option<V> {
        self.lock().0.get(key).cloned()
    }

    fn put(&self, key: K, value: V) {
        let size = value.bytes();
        if size > Self::MAX_BYTES / 8 {
            return;
        }
        let mut kept = self.lock();
        let (map, bytes) = &mut *kept;
        if let Some(old) = map.remove(&key) {
            *bytes -= old.bytes();
        }
        if *bytes + size > Self::MAX_BYTES {
            map.clear();
            *bytes = 0;
        }
        map.insert(key, value);
        *bytes += size;
    }

    /// The bytes held now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().1
    }
}

/// The JSON kept of each queue (and caps), with the `rev` it was built at (see the module's
/// comment for why it is never stale).
#[derive(Debug, Default)]
pub(crate) struct Answers {
    bodies: Bounded<(i64, u32, u32), Body>,
}

impl Answers {
    /// The JSON kept of queue `id` with `caps` if it was built at `rev`.
    fn get(&self, id: i64, caps: CaseCaps, rev: i64) -> Option<Body> {
        self.bodies
            .get(&(id, caps.per_task, caps.per_queue))
            .filter(|b| b.rev == rev)
    }

    /// Keeps `body` (built with `caps`).
    fn put(&self, caps: CaseCaps, body: &Body) {
        self.bodies
            .put((body.id, caps.per_task, caps.per_queue), body.clone());
    }
}

/// A page of the list: its queues' answers and the cursor of the next page.
pub type ListPage = (Vec<QueueJson>, Option<i64>);

/// Which page of the list: status, "got worse", limit, cursor, caps.
type ListKey = (Option<&'static str>, bool, u32, Option<i64>, u32, u32);

/// The pages of the list kept whole, each with the [`Version`] of the snapshot it was read in:
/// a request reads the version now (one cheap statement) and, if it is the one kept, answers
/// with the page as it is. Never stale: every change of what a page shows (a queue, task or
/// case changed, a queue made or deleted) takes the next value of the change counter in its
/// own transaction, and `waiting_reason` depends only on the rows and the label sets of the
/// workers alive, which the version holds. Only pages whose every queue came from the kept
/// answers at the `rev` of the stamps' snapshot are kept (one snapshot for all of it).
#[derive(Debug, Default)]
pub(crate) struct Lists {
    pages: Bounded<ListKey, (Version, Arc<ListPage>)>,
}

impl Lists {
    fn get(&self, key: &ListKey) -> Option<(Version, Arc<ListPage>)> {
        self.pages.get(key)
    }

    fn put(&self, key: ListKey, version: Version, page: Arc<ListPage>) {
        self.pages.put(key, (version, page));
    }
}

impl Store {
    /// One queue's answer as JSON, each task with at most `caps` cases; a waiting queue says
    /// why unless a worker seen within `alive_ms` can take it.
    pub async fn queue_json(&self, id: i64, caps: CaseCaps, alive_ms: i64) -> Result<QueueJson> {
        let since = now_ms() - alive_ms;
        let stamp = self
            .retry(|| self.backend.queue_stamp(id, since))
            .await?
            .ok_or(StoreError::NotFound(id))?;
        let (mut page, _) = self.answers(vec![stamp], caps, since).await?;
        page.pop().ok_or(StoreError::NotFound(id))
    }

    /// As [`Store::list_queues`], each queue's answer as JSON (as [`Store::queue_json`]).
    pub async fn list_queues_json(
        &self,
        status: Option<QueueStatus>,
        limit: u32,
        before: Option<i64>,
        caps: CaseCaps,
        alive_ms: i64,
    ) -> Result<(Vec<QueueJson>, Option<i64>)> {
        self.list_queues_json_where(status, false, limit, before, caps, alive_ms)
            .await
    }

    /// As [`Store::list_queues_json`]; `worse`: only queues with a case that got worse than
    /// in the previous run of their branch (`regressions` above 0).
    pub async fn list_queues_json_where(
        &self,
        status: Option<QueueStatus>,
        worse: bool,
        limit: u32,
        before: Option<i64>,
        caps: CaseCaps,
        alive_ms: i64,
    ) -> Result<(Vec<QueueJson>, Option<i64>)> {
        let since = now_ms() - alive_ms;
        let key: ListKey = (
            status.map(|s| s.as_str()),
            worse,
            limit,
            before,
            caps.per_task,
            caps.per_queue,
        );
        if let Some((kept_at, page)) = self.lists.get(&key) {
            if self.retry(|| self.backend.version(since)).await? == kept_at {
                return Ok(ListPage::clone(&page));
            }
        }
        let page = crate::backend::Page {
            status,
            worse,
            limit: limit + 1,
            before,
            since,
        };
        let (mut stamps, version) = self.retry(|| self.backend.list_stamps(page)).await?;
        let next = if stamps.len() > limit as usize {
            stamps.truncate(limit as usize);
            stamps.last().map(|q| q.id)
        } else {
            None
        };
        let (answers, all_kept) = self.answers(stamps, caps, since).await?;
        let page = Arc::new((answers, next));
        if all_kept {
            self.lists.put(key, version, page.clone());
        }
        Ok(ListPage::clone(&page))
    }

    /// The answers of the queues `stamps` names, in order: kept ones whose `rev` is still the
    /// queue's, the others built in one statement (and kept). A queue deleted meanwhile is
    /// left out. Also whether every answer was a kept one (all of the stamps' snapshot).
    async fn answers(
        &self,
        stamps: Vec<Stamp>,
        caps: CaseCaps,
        since: i64,
    ) -> Result<(Vec<QueueJson>, bool)> {
        let mut found: Vec<(Stamp, Option<Body>)> = stamps
            .into_iter()
            .map(|s| {
                let kept = self.answers.get(s.id, caps, s.rev);
                (s, kept)
            })
            .collect();
        let missing: Vec<i64> = found
            .iter()
            .filter(|(_, b)| b.is_none())
            .map(|(s, _)| s.id)
            .collect();
        let all_kept = missing.is_empty();
        let mut built: HashMap<i64, (Body, Option<String>)> = HashMap::new();
        if !missing.is_empty() {
            for (body, reason) in self
                .retry(|| self.backend.bodies(&missing, caps, since))
                .await?
            {
                self.answers.put(caps, &body);
                built.insert(body.id, (body, reason));
            }
        }
        let mut out = Vec::with_capacity(found.len());
        for (stamp, kept) in found.drain(..) {
            if let Some(body) = kept {
                out.push(body.json(stamp.reason.as_deref())?);
            } else if let Some((body, reason)) = built.remove(&stamp.id) {
                // Built now: its own snapshot's reason goes with it. (Neither: the queue was
                // deleted since the stamps were read.)
                out.push(body.json(reason.as_deref())?);
            }
        }
        Ok((out, all_kept))
    }
}

#[cfg(test)]
mod lists_tests {
    use super::*;

    fn page(bytes: usize) -> Arc<ListPage> {
        let q = QueueJson {
            id: 1,
            json: "x".repeat(bytes),
            raw: false,
        };
        Arc::new((vec![q], None))
    }

    fn version(seq: i64) -> Version {
        Version {
            seq,
            alive: "[]".into(),
        }
    }

    #[test]
    fn kept_pages_stay_within_their_bytes() {
        let lists = Lists::default();
        let big = Bounded::<ListKey, (Version, Arc<ListPage>)>::MAX_BYTES / 8;
        for cursor in 0..100 {
            lists.put(
                (None, false, 500, Some(cursor), 50, 50),
                version(1),
                page(big),
            );
            assert!(
                lists.pages.bytes() <= Bounded::<ListKey, (Version, Arc<ListPage>)>::MAX_BYTES,
                "after {cursor}"
            );
        }
        // The same page again replaces it, counted once.
        let key = (None, false, 50, None, 50, 50);
        lists.put(key, version(1), page(1000));
        let before = lists.pages.bytes();
        lists.put(key, version(2), page(1000));
        assert_eq!(lists.pages.bytes(), before);
        assert_eq!(lists.get(&key).map(|(v, _)| v.seq), Some(2));
        // Too large to keep at all.
        let huge = (Some("waiting"), false, 500, None, 50, 50);
        lists.put(huge, version(3), page(big + 1));
        assert!(lists.get(&huge).is_none());
    }
}
