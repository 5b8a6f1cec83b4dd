//! The rows of a copy: what one snapshot of a history holds, read through the
//! backend-independent row types.

use crate::rows::{queue_row, CaseRow, Columns, QueueRow, TaskRow};
use crate::{Result, StoreError};

/// A queue row with the columns the API does not show.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CopiedQueue {
    pub row: QueueRow,
    pub lease_expires_at: Option<i64>,
    pub delivery: Option<String>,
    /// The submit's idempotency key: its caller's digest, the key, the request's digest.
    pub idem_caller: Option<String>,
    pub idem_key: Option<String>,
    pub idem_request: Option<String>,
    /// Set on runs of the case history (`crate::history`).
    pub repo_key: Option<String>,
}

/// A case row with the columns the API does not show.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CopiedCase {
    pub row: CaseRow,
    pub queue_id: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A commit-status report row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CopiedReport {
    pub queue_id: i64,
    pub wanted: String,
    pub posted: Option<String>,
    pub claimed_by: Option<String>,
    pub claimed_until: Option<i64>,
    pub rounds: i64,
}

/// Everything a copy carries, in id order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    pub queues: Vec<CopiedQueue>,
    pub tasks: Vec<TaskRow>,
    pub cases: Vec<CopiedCase>,
    pub reports: Vec<CopiedReport>,
    /// API tokens with their hashes (the secrets exist nowhere, so the tokens keep working).
    pub tokens: Vec<crate::rows::VerifiedToken>,
    /// The change counter (queues keep their `rev`, so it must not go back).
    pub change_seq: i64,
    /// The case history (`crate::history`), by case id.
    pub results: Vec<CopiedResult>,
    /// The rows of each of [`PLAIN_TABLES`], in its order.
    pub plain: Vec<Vec<Vec<Cell>>>,
}

/// One column's value in a table copied as it is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Int(Option<i64>),
    Text(Option<String>),
}

/// A table whose columns are all integers or text, copied column by column as it is.
pub(crate) struct PlainTable {
    pub name: &'static str,
    /// The columns, each with whether it holds an integer.
    pub columns: &'static [(&'static str, bool)],
    /// The `ORDER BY` of the rows.
    pub order: &'static str,
}

/// The tables copied as they are, parents first: bisects and their steps (their step queues
/// are ordinary queues, copied with the others).
pub(crate) const PLAIN_TABLES: &[PlainTable] = &[
    PlainTable {
        name: "bisects",
        columns: &[
            ("id", true),
            ("repo", false),
            ("good", false),
            ("bad", false),
            ("scenarios", false),
            ("case_key", false),
            ("priority", true),
            ("labels", false),
            ("submitted_by", false),
            ("status", false),
            ("message", false),
            ("created_at", true),
            ("finished_at", true),
            ("good_sha", false),
            ("bad_sha", false),
            ("range_size", true),
            ("commits", false),
            ("result_index", true),
            ("current_queue", true),
            ("driver", false),
            ("claimed_until", true),
            ("claims", true),
        ],
        order: "id",
    },
    PlainTable {
        name: "bisect_steps",
        columns: &[
            ("bisect_id", true),
            ("position", true),
            ("commit_index", true),
            ("commit_sha", false),
            ("subject", false),
            ("author", false),
            ("queue_id", true),
            ("rerun_queue_id", true),
            ("verdict", false),
            ("note", false),
        ],
        order: "bisect_id, position",
    },
];

impl PlainTable {
    fn column_list(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(c, _)| *c).collect();
        names.join(", ")
    }

    pub fn select(&self) -> String {
        format!(
            "SELECT {} FROM {} ORDER BY {}",
            self.column_list(),
            self.name,
            self.order
        )
    }

    pub fn insert(&self) -> String {
        let params: Vec<String> = (1..=self.columns.len()).map(|i| format!("${i}")).collect();
        format!(
            "INSERT INTO {} ({}) VALUES ({})",
            self.name,
            self.column_list(),
            params.join(", ")
        )
    }

    pub fn row(&self, r: &impl Columns) -> Result<Vec<Cell>> {
        self.columns
            .iter()
            .map(|&(c, int)| {
                Ok(if int {
                    Cell::Int(r.opt_int(c)?)
                } else {
                    Cell::Text(r.opt_text(c)?)
                })
            })
            .collect()
    }
}

/// A row of `case_results`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CopiedResult {
    pub case_id: i64,
    pub row: crate::history::ResultRow,
    pub repo_key: String,
    pub scenario: String,
    pub case_key: String,
}

/// The columns of `case_results`.
pub(crate) const RESULT_COLUMNS: &str =
    "case_id, queue_id, repo_key, branch, commit_sha, scenario, case_key, status, duration_ms, finished_at";

pub(crate) fn copied_result(r: &impl Columns) -> Result<CopiedResult> {
    Ok(CopiedResult {
        case_id: r.int("case_id")?,
        row: crate::history::result_row(r)?,
        repo_key: r.text("repo_key")?,
        scenario: r.text("scenario")?,
        case_key: r.text("case_key")?,
    })
}

/// How many rows a copy wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopySummary {
    pub queues: usize,
    pub tasks: usize,
    pub cases: usize,
    pub reports: usize,
    /// API tokens.
    pub tokens: usize,
    /// Bisects (with their steps).
    pub bisects: usize,
    /// Bytes of the queues' files (logs, reports) copied.
    pub file_bytes: u64,
}

/// The columns of `queues` a copy reads and writes.
pub(crate) const COPY_QUEUE_COLUMNS: &str =
    "id, name, repo, branch, requested_commit, commit_sha, scenarios, status, phase, priority, \
     created_at, started_at, finished_at, error, abort_requested, worker_id, attempts, case_filter, rev, origin, labels, \
     submitted_by, lease_expires_at, delivery, idem_caller, idem_key, idem_request, no_cache, build_cached_from, retries, \
     previous_id, regressions, repo_key";

/// The columns of `cases` a copy reads and writes.
pub(crate) const COPY_CASE_COLUMNS: &str =
    "id, task_id, queue_id, position, case_key, name, status, duration_ms, message, started_at, finished_at, log_from, log_to";

/// The columns of `status_reports`.
pub(crate) const REPORT_COLUMNS: &str =
    "queue_id, wanted, posted, claimed_by, claimed_until, rounds";

pub(crate) fn copied_queue(r: &impl Columns) -> Result<CopiedQueue> {
    Ok(CopiedQueue {
        row: queue_row(r)?,
        lease_expires_at: r.opt_int("lease_expires_at")?,
        delivery: r.opt_text("delivery")?,
        idem_caller: r.opt_text("idem_caller")?,
        idem_key: r.opt_text("idem_key")?,
        idem_request: r.opt_text("idem_request")?,
        repo_key: r.opt_text("repo_key")?,
    })
}

pub(crate) fn copied_case(r: &impl Columns) -> Result<CopiedCase> {
    Ok(CopiedCase {
        row: crate::rows::case_row(r)?,
        queue_id: r.int("queue_id")?,
        started_at: r.opt_int("started_at")?,
        finished_at: r.opt_int("finished_at")?,
    })
}

pub(crate) fn copied_report(r: &impl Columns) -> Result<CopiedReport> {
    Ok(CopiedReport {
        queue_id: r.int("queue_id")?,
        wanted: r.text("wanted")?,
        posted: r.opt_text("posted")?,
        claimed_by: r.opt_text("claimed_by")?,
        claimed_until: r.opt_int("claimed_until")?,
        rounds: r.int("rounds")?,
    })
}

/// The message of a refused copy into a database that already has a history.
pub(crate) fn not_empty(queues: i64) -> StoreError {
    StoreError::Conflict(format!(
        "the target database is not empty ({queues} queues, or deleted ones): \
         copy only into a new, empty database"
    ))
}
