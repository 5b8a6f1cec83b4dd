//! The seam between the store's logic and a database: what each backend (SQLite and
//! PostgreSQL) implements in its own SQL dialect. Everything above it (retries, the order of
//! operations, which transitions are allowed, row mapping, counts, assembling a queue's detail)
//! is written once, in the store.

use crate::history::{CaseQuery, ResultRow, StripQuery, StripRow};
use crate::once::Once;
use crate::reports::{ReportClaim, ReportDue};
use crate::rows::Chunk;
use crate::rows::{CaseCaps, CaseRow, NewCase, QueueDetail, QueueRow, StaleGroup, TaskRow};
use crate::rows::{FoundCase, Holder, WorkerRow};
use crate::{CaseUpdate, Result};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use testarena_core::history::Compared;
use testarena_core::validate::ValidQueue;
use testarena_core::{CaseStatus, Phase, QueueStatus};

/// What a backend's operation returns: a boxed future, so the store can hold any backend.
pub(crate) type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A database the store can use: every operation of the parts below.
pub(crate) trait Backend:
    Queues
    + Pages
    + Work
    + Files
    + Reports
    + Copying
    + Tokens
    + Bisects
    + History
    + std::fmt::Debug
    + Send
    + Sync
{
    /// Runs a trivial query.
    fn ping(&self) -> Fut<'_, ()>;
    /// Closes the connection pool, waiting for connections in use.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// Waits until another process may have made `what` (a backend that can tell, with
    /// PostgreSQL's LISTEN/NOTIFY) or `timeout` passed; without such a signal (SQLite, where
    /// one process writes) it just waits out the timeout.
    fn wait_for(
        &self,
        what: Wakeup,
        timeout: std::time::Duration,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let _ = what;
        Box::pin(tokio::time::sleep(timeout))
    }
    /// Whether [`Backend::wait_for`] wakes on other processes' changes.
    fn notifies(&self) -> bool {
        false
    }
}

/// What a waiter waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wakeup {
    /// A queue became waiting (created, or taken back).
    Work,
    /// Any visible change of a queue, its tasks or cases.
    Change,
    /// New chunks of a queue's files (its logs).
    Files,
    /// A bisect may need a decision (created, or its step queue ended).
    Bisects,
}

/// Queues as the API sees them: create, read, list, abort, delete, follow changes.
pub(crate) trait Queues {
    /// Stores a waiting queue (and its tasks); with a `once` (a webhook delivery, an
    /// idempotency key) that already made one, stores nothing and returns `None`.
    fn insert_queue<'a>(
        &'a self,
        q: &'a ValidQueue,
        once: Option<Once<'a>>,
        submitted_by: Option<&'a str>,
        now: i64,
    ) -> Fut<'a, Option<i64>>;
    /// The queue an earlier insert with `once` made, with the request digest stored with it.
    fn queue_of<'a>(&'a self, once: Once<'a>) -> Fut<'a, Option<(i64, Option<String>)>>;
    /// One queue with its tasks and their cases (all, or the first ones and the counts).
    fn queue(&self, id: i64, caps: Option<CaseCaps>) -> Fut<'_, Option<QueueDetail>>;
    /// One queue's row alone.
    fn queue_row(&self, id: i64) -> Fut<'_, Option<QueueRow>>;
    /// A page of one task's cases and the task's total; `None` if the queue has no such task.
    fn task_cases(
        &self,
        queue_id: i64,
        task_id: i64,
        after: Option<i64>,
        limit: u32,
    ) -> Fut<'_, Option<(Vec<CaseRow>, u64)>>;
    /// The first case `key` of a queue (of task `task` if given), with its task.
    fn case_task<'a>(
        &'a self,
        queue_id: i64,
        key: &'a str,
        task: Option<i64>,
    ) -> Fut<'a, Option<FoundCase>>;
    /// Newest first, at most `limit`, optionally of one status and below an id.
    fn list_queues(
        &self,
        status: Option<QueueStatus>,
        limit: u32,
        before: Option<i64>,
        caps: CaseCaps,
    ) -> Fut<'_, Vec<QueueDetail>>;
    /// The change counter.
    fn current_rev(&self) -> Fut<'_, i64>;
    /// Queues changed (at most 500) and ids deleted after change `rev`.
    fn changes_since(&self, rev: i64, caps: CaseCaps) -> Fut<'_, (Vec<QueueDetail>, Vec<i64>)>;
    /// How many queues have each status (as stored).
    fn count_by_status(&self) -> Fut<'_, Vec<(String, i64)>>;
    /// (worker, queue id) of every running queue.
    fn running_by_worker(&self) -> Fut<'_, Vec<(String, i64)>>;
    /// Aborts a waiting queue, with `reason` as its error; false if it is not waiting (any more).
    fn abort_waiting<'a>(&'a self, id: i64, reason: &'a str, now: i64) -> Fut<'a, bool>;
    /// Asks the worker of a running queue to abort it.
    fn request_abort(&self, id: i64) -> Fut<'_, ()>;
    /// Deletes a queue's rows; false if there was none.
    fn delete_queue(&self, id: i64) -> Fut<'_, bool>;
}

/// A page of the queue list to answer (see `crate::page`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Page {
    pub status: Option<QueueStatus>,
    /// Only queues with a case that got worse (`regressions > 0`).
    pub worse: bool,
    pub limit: u32,
    pub before: Option<i64>,
    /// Workers with a heartbeat at or after this are alive (ms).
    pub since: i64,
}

/// A queue's `rev` and `waiting_reason`, read for every request (a row of `crate::page::stamps`).
#[derive(Debug, Clone)]
pub(crate) struct Stamp {
    pub id: i64,
    pub rev: i64,
    pub reason: Option<String>,
}

/// What a page of the list depends on besides its queues' rows, read in one statement: the
/// change counter (every change of a queue, task or case, and every new or deleted queue, takes
/// the next value) and the label sets of the workers alive (`waiting_reason`), as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    pub seq: i64,
    pub alive: String,
}

/// A queue's JSON as built at `rev` (a row of `crate::page::select`): `head` without its closing brace,
/// `tail` without its opening one, so that a `waiting_reason` goes between them.
#[derive(Debug, Clone)]
pub(crate) struct Body {
    pub id: i64,
    pub rev: i64,
    pub head: Arc<str>,
    pub tail: Arc<str>,
    pub raw: bool,
}

/// The API's answers built by the database (`crate::page`); `since`: workers with a heartbeat
/// at or after it are alive.
pub(crate) trait Pages {
    /// The `rev` and `waiting_reason` of one queue.
    fn queue_stamp(&self, id: i64, since: i64) -> Fut<'_, Option<Stamp>>;
    /// The same of a page of the list, newest first, with the [`Version`] of the same snapshot.
    fn list_stamps(&self, page: Page) -> Fut<'_, (Vec<Stamp>, Version)>;
    /// The [`Version`] now.
    fn version(&self, since: i64) -> Fut<'_, Version>;
    /// The JSON of the queues `ids` (those that still exist), with at most `caps` cases, and
    /// their `waiting_reason`, in one statement.
    fn bodies<'a>(
        &'a self,
        ids: &'a [i64],
        caps: CaseCaps,
        since: i64,
    ) -> Fut<'a, Vec<(Body, Option<String>)>>;
}

/// The worker's side: registration, claims and leases, and the writes of a queue it holds
/// (each fails with `ClaimLost` when the worker no longer holds the queue).
pub(crate) trait Work {
    fn register_worker<'a>(&'a self, w: &'a WorkerRow) -> Fut<'a, ()>;
    fn workers_on<'a>(&'a self, hostname: &'a str) -> Fut<'a, Vec<WorkerRow>>;
    /// Expires the leases of a dead worker's queues and forgets it.
    fn expire_worker<'a>(&'a self, id: &'a str) -> Fut<'a, ()>;
    fn worker_heartbeat<'a>(&'a self, id: &'a str, now: i64) -> Fut<'a, ()>;
    fn unregister_worker<'a>(&'a self, id: &'a str) -> Fut<'a, ()>;
    /// Workers with a heartbeat at or after `since`.
    fn workers(&self, since: i64) -> Fut<'_, Vec<WorkerRow>>;
    /// Claims the highest-priority, oldest waiting queue whose labels are all among `labels`,
    /// atomically.
    fn claim<'a>(
        &'a self,
        worker: &'a str,
        labels: &'a [String],
        now: i64,
        lease_ms: i64,
    ) -> Fut<'a, Option<QueueRow>>;
    /// Hands a queue the worker holds back to wait again (a stopping worker): it starts over
    /// on its next claim, and this attempt does not count; false if it was not held.
    fn hand_back<'a>(&'a self, id: i64, holder: &'a Holder) -> Fut<'a, bool>;
    /// Takes back (waiting again) or gives up (error) queues whose lease ran out.
    fn reclaim_expired(&self, now: i64, max_attempts: i64) -> Fut<'_, (Vec<i64>, Vec<i64>)>;
    /// Renews a lease; `Some(abort requested)`, or `None` when the queue is not held.
    fn renew_lease<'a>(&'a self, id: i64, holder: &'a Holder, until: i64) -> Fut<'a, Option<bool>>;
    fn set_phase<'a>(&'a self, id: i64, holder: &'a Holder, phase: Option<Phase>) -> Fut<'a, ()>;
    fn set_commit<'a>(&'a self, id: i64, holder: &'a Holder, sha: &'a str) -> Fut<'a, ()>;
    fn set_build_cached_from<'a>(
        &'a self,
        id: i64,
        holder: &'a Holder,
        from: Option<i64>,
    ) -> Fut<'a, ()>;
    fn create_tasks<'a>(
        &'a self,
        id: i64,
        holder: &'a Holder,
        scenarios: &'a [String],
    ) -> Fut<'a, Vec<TaskRow>>;
    /// Sets a task's status and error; `started_at` / `finished_at` when given.
    fn set_task<'a>(&'a self, task: TaskUpdate<'a>, holder: &'a Holder) -> Fut<'a, ()>;
    fn create_cases<'a>(
        &'a self,
        task_id: i64,
        holder: &'a Holder,
        cases: &'a [NewCase],
    ) -> Fut<'a, Vec<i64>>;
    /// Applies case starts and verdicts in one transaction, fenced by `holder`'s claim.
    fn record_cases<'a>(&'a self, holder: &'a Holder, updates: &'a [CaseUpdate]) -> Fut<'a, ()>;
    /// Cuts short every unfinished case and task of a queue.
    fn close_unfinished<'a>(
        &'a self,
        id: i64,
        holder: &'a Holder,
        running_message: &'a str,
        now: i64,
    ) -> Fut<'a, ()>;
    fn finish_queue<'a>(
        &'a self,
        id: i64,
        holder: &'a Holder,
        status: QueueStatus,
        error: Option<&'a str>,
        now: i64,
    ) -> Fut<'a, ()>;
    fn record_group<'a>(&'a self, g: &'a StaleGroup) -> Fut<'a, ()>;
    fn forget_group<'a>(&'a self, hostname: &'a str, pgid: i32) -> Fut<'a, ()>;
    /// Removes and returns the groups on `hostname` of workers not alive since `alive_since`.
    fn take_stale_groups<'a>(
        &'a self,
        hostname: &'a str,
        alive_since: i64,
    ) -> Fut<'a, Vec<StaleGroup>>;
}

/// A queue's files, as chunks in the database (see migrations `*_files.sql`): the worker
/// holding the queue writes them, everybody reads them.
pub(crate) trait Files {
    /// Stores `chunks` of queue `id` (a chunk already there, from a write tried twice, is
    /// left as it is); `ClaimLost` unless `holder` holds the queue.
    fn put_chunks<'a>(&'a self, id: i64, holder: &'a Holder, chunks: &'a [Chunk]) -> Fut<'a, ()>;
    /// Stores `chunks` of queue `id` without a claim (copying an installation, importing the
    /// files of an older version); chunks already there stay as they are.
    fn import_chunks<'a>(&'a self, id: i64, chunks: &'a [Chunk]) -> Fut<'a, ()>;
    /// Deletes the files of queue `id` but `keep` (a new attempt starts them over) and returns
    /// `keep`'s length; `ClaimLost` unless `holder` holds the queue.
    fn restart_files<'a>(&'a self, id: i64, holder: &'a Holder, keep: &'a str) -> Fut<'a, i64>;
    /// Deletes one file of queue `id`; `ClaimLost` unless `holder` holds the queue.
    fn remove_file<'a>(&'a self, id: i64, holder: &'a Holder, name: &'a str) -> Fut<'a, ()>;
    /// The chunks of file `name` that hold bytes from `offset` to before `end`, in order.
    fn chunks<'a>(&'a self, id: i64, name: &'a str, offset: i64, end: i64) -> Fut<'a, Vec<Chunk>>;
    /// Every file of queue `id` with its length, by name.
    fn files(&self, id: i64) -> Fut<'_, Vec<(String, i64)>>;
    /// The length of file `name` of queue `id`, if it has one.
    fn file_len<'a>(&'a self, id: i64, name: &'a str) -> Fut<'a, Option<i64>>;
}

/// A task's new status, with the times it sets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskUpdate<'a> {
    pub id: i64,
    pub status: CaseStatus,
    pub error: Option<&'a str>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Commit statuses to send for queues with an origin (filled by the database itself as queues
/// start and end), claimed by one sender at a time.
pub(crate) trait Reports {
    /// Queue ids whose report is behind and not claimed by anyone until after `now`.
    fn due_reports(&self, now: i64, limit: u32) -> Fut<'_, Vec<ReportDue>>;
    /// Claims a due report of `queue_id` for `by` until `until`.
    fn claim_report<'a>(
        &'a self,
        queue_id: i64,
        by: &'a str,
        now: i64,
        until: i64,
    ) -> Fut<'a, Option<ReportClaim>>;
    /// Records that `state` was posted (or given up) for a report `by` holds, and releases it.
    fn report_posted<'a>(&'a self, queue_id: i64, by: &'a str, state: &'a str) -> Fut<'a, bool>;
    /// Releases a report `by` holds, to be tried again after `retry_at`.
    fn report_retry<'a>(&'a self, queue_id: i64, by: &'a str, retry_at: i64) -> Fut<'a, ()>;
}

/// API tokens (see `crate::tokens`).
pub(crate) trait Tokens {
    /// Stores a token; `None` if the name is taken.
    fn insert_token<'a>(
        &'a self,
        name: &'a str,
        scope: &'a str,
        hash: &'a str,
        now: i64,
        expires_at: Option<i64>,
    ) -> Fut<'a, Option<i64>>;
    /// Every token, by id.
    fn tokens(&self) -> Fut<'_, Vec<crate::rows::TokenRow>>;
    /// One token with its hash.
    fn token(&self, id: i64) -> Fut<'_, Option<crate::rows::VerifiedToken>>;
    /// Deletes the token with id `id` or name `name`; returns it.
    fn delete_token<'a>(
        &'a self,
        id: Option<i64>,
        name: &'a str,
    ) -> Fut<'a, Option<crate::rows::TokenRow>>;
    /// Sets a token's `last_used_at`.
    fn touch_token(&self, id: i64, now: i64) -> Fut<'_, ()>;
}

/// Copying a whole history between databases (`testarena migrate --from … --to …`).
pub(crate) trait Copying {
    /// Every row a copy carries, read in one snapshot.
    fn snapshot(&self) -> Fut<'_, crate::copy::rows::Snapshot>;
    /// Writes `snapshot` with its ids in one transaction, after checking that this database
    /// has no queue (nor ever deleted one); `Conflict` otherwise.
    fn restore<'a>(&'a self, snapshot: &'a crate::copy::rows::Snapshot) -> Fut<'a, ()>;
}

/// Bisects (see `crate::bisects`): rows and steps, and the driver's claim and decisions.
pub(crate) trait Bisects {
    /// Stores a running bisect; returns its id.
    fn insert_bisect<'a>(
        &'a self,
        b: &'a testarena_core::bisect::ValidBisect,
        submitted_by: Option<&'a str>,
        now: i64,
    ) -> Fut<'a, i64>;
    /// One bisect with its steps.
    fn bisect(&self, id: i64) -> Fut<'_, Option<crate::bisects::BisectDetail>>;
    /// Newest first, at most `limit`, with ids below `before`.
    fn list_bisects(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Fut<'_, Vec<crate::bisects::BisectDetail>>;
    /// Claims a running bisect that needs a decision for `driver` until `until`, atomically.
    fn claim_bisect<'a>(
        &'a self,
        driver: &'a str,
        now: i64,
        until: i64,
    ) -> Fut<'a, Option<crate::bisects::BisectClaim>>;
    /// Extends a claim `holder` has; false if it has none.
    fn renew_bisect<'a>(&'a self, id: i64, holder: &'a Holder, until: i64) -> Fut<'a, bool>;
    /// Lets go of a claim `holder` has, not to be claimed again before `retry_at`.
    fn release_bisect<'a>(&'a self, id: i64, holder: &'a Holder, retry_at: i64) -> Fut<'a, bool>;
    /// Records a decision in one transaction (see `Store::decide_bisect`); returns the new
    /// step queue's id, if one was made.
    fn decide_bisect<'a>(
        &'a self,
        id: i64,
        holder: &'a Holder,
        decision: &'a crate::bisects::Decision,
        now: i64,
    ) -> Fut<'a, Option<i64>>;
    /// Ends a running bisect as aborted; returns it, or `None` if it is not running.
    fn abort_bisect<'a>(
        &'a self,
        id: i64,
        message: &'a str,
        now: i64,
    ) -> Fut<'a, Option<crate::bisects::BisectRow>>;
}

/// The history's side of a backend.
pub(crate) trait History {
    /// The last results of a case, newest first.
    fn case_results<'a>(&'a self, q: CaseQuery<'a>) -> Fut<'a, Vec<ResultRow>>;
    /// A page of a queue's cases in run order, each with its last results.
    fn strips<'a>(&'a self, q: StripQuery<'a>) -> Fut<'a, Vec<StripRow>>;
    /// Every case of a queue in run order, with its status and message.
    fn case_outcomes(&self, queue_id: i64) -> Fut<'_, Vec<Compared>>;
    /// The latest run of `repo_key` and `branch` other than `not`, finished before `before`
    /// (finished_at, id) when given.
    fn previous_run<'a>(
        &'a self,
        repo_key: &'a str,
        branch: &'a str,
        before: Option<(i64, i64)>,
        not: i64,
    ) -> Fut<'a, Option<i64>>;
}
