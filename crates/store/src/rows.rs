//! Rows as the store hands them out, how they are read from any backend's result rows, and the
//! logic on them that no backend writes twice: case counts, and assembling a queue's detail.

use crate::{Result, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use testarena_core::api::Summary;
use testarena_core::auth::Scope;
use testarena_core::{CaseStatus, Phase, QueueStatus};

/// A queue row.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRow {
    pub id: i64,
    pub name: String,
    pub repo: String,
    pub branch: String,
    pub requested_commit: Option<String>,
    pub commit: Option<String>,
    pub scenarios: Option<Vec<String>>,
    pub status: QueueStatus,
    pub phase: Option<Phase>,
    pub priority: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    pub abort_requested: bool,
    pub worker_id: Option<String>,
    pub attempts: i64,
    pub case_filter: Option<BTreeMap<String, Vec<String>>>,
    /// Change counter: higher means changed later.
    pub rev: i64,
    pub origin: Option<testarena_core::origin::Origin>,
    /// Labels a worker must all have to claim it; empty: any worker.
    pub labels: Vec<String>,
    /// The name of the API token that submitted it; `None`: no token (or a webhook).
    pub submitted_by: Option<String>,
    /// Build even when the worker's build cache holds this commit's build.
    pub no_cache: bool,
    /// The queue whose cached build this one reused instead of building.
    pub build_cached_from: Option<i64>,
    /// How many times a failed case is tried again when its scenario does not say.
    pub retries: u8,
    /// The previous finished run of its repository and branch, found when it finished.
    pub previous_id: Option<i64>,
    /// How many cases got worse than in `previous_id`; `None` until compared.
    pub regressions: Option<i64>,
}

/// A task row (one scenario file of a queue).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub id: i64,
    pub queue_id: i64,
    pub position: i64,
    pub scenario: String,
    pub status: CaseStatus,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
}

/// A test case row.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseRow {
    pub id: i64,
    pub task_id: i64,
    pub position: i64,
    pub key: String,
    pub name: String,
    pub status: CaseStatus,
    pub duration_ms: Option<i64>,
    pub message: Option<String>,
    /// Where its log starts in the queue log (byte offset), once it started.
    pub log_from: Option<i64>,
    /// Where its log ends in the queue log, once it ended.
    pub log_to: Option<i64>,
}

/// A case found by its key, with the position and scenario of its task.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundCase {
    pub task_position: i64,
    pub scenario: String,
    pub case: CaseRow,
}

/// A case to create: its id in the scenario and its name.
#[derive(Debug, Clone)]
pub struct NewCase {
    pub key: String,
    pub name: String,
}

/// A queue with its tasks and their cases.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDetail {
    pub queue: QueueRow,
    /// Every task; with all its cases, or only the first ones after a capped read.
    pub tasks: Vec<(TaskRow, Vec<CaseRow>)>,
    /// Case counts by verdict of each task id, filled by a capped read (which may list only
    /// some cases); a task missing here has all its cases in `tasks`.
    pub counts: HashMap<i64, Summary>,
}

/// How many cases a capped read lists: the first `per_task` of each task, and no more than
/// `per_queue` in all (earlier tasks first). Counts always cover every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseCaps {
    pub per_task: u32,
    pub per_queue: u32,
}

impl CaseCaps {
    /// No cap at all.
    pub const ALL: CaseCaps = CaseCaps {
        per_task: u32::MAX,
        per_queue: u32::MAX,
    };
}

/// Who holds a claimed queue: the worker and the attempt its claim made (the queue's
/// `attempts` after the claim). Every write of a worker carries it; the attempt is the fencing
/// token, so a worker that lost its claim changes nothing of a newer attempt, even one the same
/// worker id claimed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holder {
    pub worker: String,
    pub attempt: i64,
}

impl Holder {
    /// `worker`'s claim number `attempt`.
    pub fn new(worker: impl Into<String>, attempt: i64) -> Holder {
        Holder {
            worker: worker.into(),
            attempt,
        }
    }

    /// What the store's guards compare: `worker#attempt` (unambiguous, the attempt is digits).
    pub(crate) fn token(&self) -> String {
        format!("{}#{}", self.worker, self.attempt)
    }
}

impl QueueRow {
    /// Who holds this queue (as read): `None` unless a worker claimed it.
    pub fn holder(&self) -> Option<Holder> {
        self.worker_id
            .as_ref()
            .map(|w| Holder::new(w.clone(), self.attempts))
    }
}

/// A worker process.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub id: String,
    pub hostname: String,
    pub pid: i64,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub concurrency: i64,
    pub boot_id: String,
    /// The TestArena version it runs.
    pub version: String,
    /// Its labels: the queues it may claim ask for none but these.
    pub labels: Vec<String>,
}

/// A process group a worker started.
#[derive(Debug, Clone, PartialEq)]
pub struct StaleGroup {
    pub pgid: i32,
    pub worker_id: String,
    pub hostname: String,
    pub boot_id: String,
    pub queue_id: Option<i64>,
    pub command: String,
}

impl QueueDetail {
    /// The case counts of task `task` (every case, even after a capped read).
    pub fn task_counts(&self, task: &TaskRow, cases: &[CaseRow]) -> Summary {
        self.counts.get(&task.id).cloned().unwrap_or_else(|| {
            let mut s = Summary::default();
            for c in cases {
                s.add(c.status);
            }
            s
        })
    }

    /// The case counts of the whole queue.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for (t, cases) in &self.tasks {
            let c = self.task_counts(t, cases);
            summary.total += c.total;
            summary.passed += c.passed;
            summary.failed += c.failed;
            summary.error += c.error;
            summary.skipped += c.skipped;
            summary.flaky += c.flaky;
        }
        summary
    }
}

/// Typed access to the columns of a result row; each backend implements it for its row type,
/// and the mapping to the store's rows below is written once.
pub(crate) trait Columns {
    fn int(&self, column: &str) -> Result<i64>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
    fn text(&self, column: &str) -> Result<String>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;

    /// A column holding a status (or another name with a `FromStr`).
    fn parsed<T: FromStr<Err = String>>(&self, column: &str) -> Result<T> {
        self.text(column)?.parse().map_err(StoreError::Corrupt)
    }

    /// A nullable column holding JSON.
    fn json<T: serde::de::DeserializeOwned>(&self, column: &str) -> Result<Option<T>> {
        match self.opt_text(column)? {
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("{column}: {e}"))),
            None => Ok(None),
        }
    }
}

/// A value as JSON text for a nullable JSON column.
pub(crate) fn to_json<T: serde::Serialize>(value: Option<&T>) -> Result<Option<String>> {
    value
        .map(|v| serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

/// The columns of `queues` that [`queue_row`] reads, in the order of the schema.
pub(crate) const QUEUE_COLUMNS: &str =
    "id, name, repo, branch, requested_commit, commit_sha, scenarios, status, phase, priority, \
     created_at, started_at, finished_at, error, abort_requested, worker_id, attempts, case_filter, rev, origin, labels, submitted_by, \
     no_cache, build_cached_from, retries, previous_id, regressions";

/// The columns of `tasks` that [`task_row`] reads.
pub(crate) const TASK_COLUMNS: &str =
    "id, queue_id, position, scenario, status, started_at, finished_at, error";

/// The columns of `cases` that [`case_row`] reads.
pub(crate) const CASE_COLUMNS: &str =
    "id, task_id, position, case_key, name, status, duration_ms, message, log_from, log_to";

pub(crate) fn queue_row(r: &impl Columns) -> Result<QueueRow> {
    let phase = r.opt_text("phase")?;
    Ok(QueueRow {
        id: r.int("id")?,
        name: r.text("name")?,
        repo: r.text("repo")?,
        branch: r.text("branch")?,
        requested_commit: r.opt_text("requested_commit")?,
        commit: r.opt_text("commit_sha")?,
        scenarios: r.json("scenarios")?,
        status: r.parsed("status")?,
        phase: phase
            .as_deref()
            .map(|p| p.parse::<Phase>().map_err(StoreError::Corrupt))
            .transpose()?,
        priority: r.int("priority")?,
        created_at: r.int("created_at")?,
        started_at: r.opt_int("started_at")?,
        finished_at: r.opt_int("finished_at")?,
        error: r.opt_text("error")?,
        abort_requested: r.int("abort_requested")? != 0,
        worker_id: r.opt_text("worker_id")?,
        attempts: r.int("attempts")?,
        case_filter: r.json("case_filter")?,
        rev: r.int("rev")?,
        origin: r.json("origin")?,
        labels: r.json("labels")?.unwrap_or_default(),
        submitted_by: r.opt_text("submitted_by")?,
        no_cache: r.int("no_cache")? != 0,
        build_cached_from: r.opt_int("build_cached_from")?,
        retries: u8::try_from(r.int("retries")?)
            .map_err(|e| StoreError::Corrupt(format!("retries: {e}")))?,
        previous_id: r.opt_int("previous_id")?,
        regressions: r.opt_int("regressions")?,
    })
}

pub(crate) fn task_row(r: &impl Columns) -> Result<TaskRow> {
    Ok(TaskRow {
        id: r.int("id")?,
        queue_id: r.int("queue_id")?,
        position: r.int("position")?,
        scenario: r.text("scenario")?,
        status: r.parsed("status")?,
        started_at: r.opt_int("started_at")?,
        finished_at: r.opt_int("finished_at")?,
        error: r.opt_text("error")?,
    })
}

pub(crate) fn case_row(r: &impl Columns) -> Result<CaseRow> {
    Ok(CaseRow {
        id: r.int("id")?,
        task_id: r.int("task_id")?,
        position: r.int("position")?,
        key: r.text("case_key")?,
        name: r.text("name")?,
        status: r.parsed("status")?,
        duration_ms: r.opt_int("duration_ms")?,
        message: r.opt_text("message")?,
        log_from: r.opt_int("log_from")?,
        log_to: r.opt_int("log_to")?,
    })
}

pub(crate) fn worker_row(r: &impl Columns) -> Result<WorkerRow> {
    Ok(WorkerRow {
        id: r.text("id")?,
        hostname: r.text("hostname")?,
        pid: r.int("pid")?,
        started_at: r.int("started_at")?,
        heartbeat_at: r.int("heartbeat_at")?,
        concurrency: r.int("concurrency")?,
        boot_id: r.text("boot_id")?,
        version: r.text("version")?,
        labels: r.json("labels")?.unwrap_or_default(),
    })
}

pub(crate) fn stale_group(r: &impl Columns) -> Result<StaleGroup> {
    Ok(StaleGroup {
        pgid: i32::try_from(r.int("pgid")?)
            .map_err(|e| StoreError::Corrupt(format!("pgid: {e}")))?,
        worker_id: r.text("worker_id")?,
        hostname: r.text("hostname")?,
        boot_id: r.text("boot_id")?,
        queue_id: r.opt_int("queue_id")?,
        command: r.text("command")?,
    })
}

/// How many cases of one task have one status (a row of a capped read's counts).
pub(crate) struct StatusCount {
    pub task_id: i64,
    pub status: CaseStatus,
    pub n: i64,
}

pub(crate) fn status_count(r: &impl Columns) -> Result<StatusCount> {
    Ok(StatusCount {
        task_id: r.int("task_id")?,
        status: r.parsed("status")?,
        n: r.int("n")?,
    })
}

/// Puts `queues` together with their `tasks` and `cases` (as read, in order); `counts` are
/// given after a capped read, which may list only some of the cases.
pub(crate) fn assemble(
    queues: Vec<QueueRow>,
    tasks: Vec<TaskRow>,
    cases: Vec<CaseRow>,
    counts: Option<Vec<StatusCount>>,
) -> Vec<QueueDetail> {
    let mut by_task: HashMap<i64, Summary> = HashMap::new();
    let capped = counts.is_some();
    for c in counts.into_iter().flatten() {
        by_task
            .entry(c.task_id)
            .or_default()
            .add_n(c.status, c.n.max(0) as u64);
    }
    let mut cases_by_task: HashMap<i64, Vec<CaseRow>> = HashMap::new();
    for c in cases {
        cases_by_task.entry(c.task_id).or_default().push(c);
    }
    let mut tasks_by_queue: HashMap<i64, Vec<(TaskRow, Vec<CaseRow>)>> = HashMap::new();
    let mut counts_by_queue: HashMap<i64, HashMap<i64, Summary>> = HashMap::new();
    for t in tasks {
        let cs = cases_by_task.remove(&t.id).unwrap_or_default();
        if capped {
            let c = by_task.remove(&t.id).unwrap_or_default();
            counts_by_queue
                .entry(t.queue_id)
                .or_default()
                .insert(t.id, c);
        }
        tasks_by_queue.entry(t.queue_id).or_default().push((t, cs));
    }
    queues
        .into_iter()
        .map(|queue| QueueDetail {
            tasks: tasks_by_queue.remove(&queue.id).unwrap_or_default(),
            counts: counts_by_queue.remove(&queue.id).unwrap_or_default(),
            queue,
        })
        .collect()
}

/// Parses a list of `(status, count)` pairs into a map, refusing unknown statuses.
pub(crate) fn parse_counts<T: FromStr<Err = String> + std::hash::Hash + Eq>(
    rows: Vec<(String, i64)>,
) -> Result<HashMap<T, i64>> {
    let mut map = HashMap::new();
    for (status, n) in rows {
        map.insert(status.parse().map_err(StoreError::Corrupt)?, n);
    }
    Ok(map)
}

/// Bytes at offset `start` of the file `name` of a queue (see `files.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub name: String,
    pub start: i64,
    pub data: Vec<u8>,
}

/// A token as listed: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// `None`: never expires.
    pub expires_at: Option<i64>,
}

/// A token whose text was checked: its row and the stored hash of its secret (the server
/// derives a session's CSRF value from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub row: TokenRow,
    /// SHA-256 of the secret, lower-case hex.
    pub hash: String,
}

/// The columns of `tokens` that [`token_row`] reads (with `hash` after them).
pub(crate) const TOKEN_COLUMNS: &str =
    "id, name, scope, created_at, last_used_at, expires_at, hash";

pub(crate) fn token_row(r: &impl Columns) -> Result<TokenRow> {
    Ok(TokenRow {
        id: r.int("id")?,
        name: r.text("name")?,
        scope: r.parsed("scope")?,
        created_at: r.int("created_at")?,
        last_used_at: r.opt_int("last_used_at")?,
        expires_at: r.opt_int("expires_at")?,
    })
}

/// A token's row with its stored hash.
pub(crate) fn token_with_hash(r: &impl Columns) -> Result<VerifiedToken> {
    Ok(VerifiedToken {
        row: token_row(r)?,
        hash: r.text("hash")?,
    })
}

impl TokenRow {
    /// Whether the token has expired at `now` (milliseconds).
    pub fn expired_at(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}
