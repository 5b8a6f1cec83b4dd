//! Rows as the store hands them out, and their conversion to the API's shapes.

use crate::rfc3339;
use std::collections::{BTreeMap, HashMap};
use testarena_core::api;
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
    pub origin: Option<testarena_core::gitea::Origin>,
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
    pub counts: HashMap<i64, api::Summary>,
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
    /// The API's view of this queue.
    pub fn to_api(&self) -> api::Queue {
        let q = &self.queue;
        let mut summary = api::Summary::default();
        let tasks = self
            .tasks
            .iter()
            .map(|(t, cases)| {
                let counts = self.counts.get(&t.id).cloned().unwrap_or_else(|| {
                    let mut s = api::Summary::default();
                    for c in cases {
                        s.add(c.status);
                    }
                    s
                });
                summary.total += counts.total;
                summary.passed += counts.passed;
                summary.failed += counts.failed;
                summary.error += counts.error;
                summary.skipped += counts.skipped;
                let cases_next = (counts.total > cases.len() as u64).then(|| {
                    let base = format!("/api/v1/queues/{}/tasks/{}/cases", q.id, t.id);
                    match cases.last() {
                        Some(c) => format!("{base}?after={}", c.position),
                        None => base,
                    }
                });
                api::Task {
                    id: t.id,
                    scenario: t.scenario.clone(),
                    status: t.status,
                    started_at: t.started_at.map(rfc3339),
                    finished_at: t.finished_at.map(rfc3339),
                    error: t.error.clone(),
                    cases: cases.iter().map(|c| c.to_api(q.id)).collect(),
                    cases_total: counts.total,
                    cases_next,
                }
            })
            .collect();
        api::Queue {
            id: q.id,
            name: q.name.clone(),
            // The clone URL may carry a token: the API never shows it.
            repo: testarena_core::redact::redact(&q.repo),
            branch: q.branch.clone(),
            commit: q.commit.clone(),
            status: q.status,
            phase: q.phase,
            priority: q.priority,
            created_at: rfc3339(q.created_at),
            started_at: q.started_at.map(rfc3339),
            finished_at: q.finished_at.map(rfc3339),
            error: q.error.clone(),
            scenarios: q.scenarios.clone(),
            abort_requested: q.abort_requested && !q.status.is_finished(),
            worker: q.worker_id.clone(),
            attempts: q.attempts,
            summary,
            tasks,
        }
    }
}

impl CaseRow {
    /// The API's view of this case of queue `queue_id`.
    pub fn to_api(&self, queue_id: i64) -> api::Case {
        api::Case {
            log_url: format!(
                "/api/v1/queues/{queue_id}/cases/{}/log?task={}",
                urlencode(&self.key),
                self.task_id
            ),
            html_url: format!(
                "/api/v1/queues/{queue_id}/cases/{}/log.html?task={}",
                urlencode(&self.key),
                self.task_id
            ),
            id: self.key.clone(),
            name: self.name.clone(),
            status: self.status,
            duration_ms: self.duration_ms.map(|d| d.max(0) as u64),
            message: self.message.clone(),
        }
    }
}

/// Percent-encodes a path segment (case ids are `[A-Za-z0-9_.-]`, so this rarely changes anything).
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
