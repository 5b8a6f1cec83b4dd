//! The JSON shapes of the REST API, shared by the server, the CLI client and the tests.

use crate::{CaseStatus, Phase, QueueStatus};
use serde::{Deserialize, Serialize};

/// A queue as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Queue {
    pub id: i64,
    pub name: String,
    pub repo: String,
    pub branch: String,
    /// Resolved commit SHA; null until the worker fetched the repository.
    pub commit: Option<String>,
    pub status: QueueStatus,
    pub phase: Option<Phase>,
    pub priority: i64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// Scenario files asked for; null means the repository's default set.
    pub scenarios: Option<Vec<String>>,
    /// Set when an abort was asked for and the worker has not stopped yet.
    pub abort_requested: bool,
    /// Which worker runs it (while running).
    pub worker: Option<String>,
    /// How many times a worker claimed it (a run handed back by a stopping worker counts too).
    pub attempts: i64,
    /// Labels a worker must all have to run it; empty: any worker.
    #[serde(default)]
    pub labels: Vec<String>,
    /// The name of the API token that submitted it; null when submitted without one (or by a
    /// webhook).
    #[serde(default)]
    pub submitted_by: Option<String>,
    /// Submitted with `no_cache`: it builds even when the worker holds a cached build.
    #[serde(default)]
    pub no_cache: bool,
    /// Its build phase.
    #[serde(default)]
    pub build: Build,
    /// How many times a failed case is tried again when its scenario does not say
    /// (`<testcase retries>`, `<scenario retries>` win); 0..=5.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 5)]
    pub retries: u8,
    /// The previous finished run of the same repository and branch, as found when this one
    /// finished (its cases are compared with this one's); null before, or without one.
    #[serde(default)]
    pub previous_id: Option<i64>,
    /// How many cases got worse than in `previous_id` (passed or flaky there, failed or
    /// error here); null until it finished with a previous run to compare with.
    #[serde(default)]
    pub regressions: Option<u64>,
    /// Why a waiting queue is not being run, when no live worker can take it (e.g.
    /// `waiting for a worker with labels esp32`); null otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_reason: Option<String>,
    pub summary: Summary,
    pub tasks: Vec<Task>,
}

/// A queue's build phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Build {
    /// The queue whose build this one reused from the worker's build cache instead of
    /// building (same repository, commit, build command and build configuration); null when
    /// it built (or has not reached its build yet).
    pub cached_from: Option<i64>,
}

/// Counts of a queue's cases by verdict.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Summary {
    pub total: u64,
    pub passed: u64,
    pub failed: u64,
    pub error: u64,
    pub skipped: u64,
    /// Cases that failed, then passed when tried again (they count as passed for the
    /// queue's verdict, and are not in `passed`).
    #[serde(default)]
    pub flaky: u64,
}

/// One scenario file of a queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Task {
    pub id: i64,
    pub scenario: String,
    pub status: CaseStatus,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Why the whole task failed (scenario missing or invalid, emulator would not start).
    pub error: Option<String>,
    /// The task's cases in file order; only the first ones when `cases_next` is set.
    pub cases: Vec<Case>,
    /// How many cases the task has.
    #[serde(default)]
    pub cases_total: u64,
    /// Null when `cases` lists every case; else the path of the page with the next ones
    /// (`GET /api/v1/queues/{id}/tasks/{task}/cases?after=N`).
    #[serde(default)]
    pub cases_next: Option<String>,
}

/// `GET /api/v1/queues/{id}/tasks/{task}/cases`: one page of a task's cases.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CaseList {
    pub cases: Vec<Case>,
    /// How many cases the task has.
    pub total: u64,
    /// Pass as `after` to get the next page; null on the last page.
    pub next: Option<i64>,
}

/// One test case of a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Case {
    /// The test case id from the scenario file.
    pub id: String,
    pub name: String,
    pub status: CaseStatus,
    pub duration_ms: Option<u64>,
    pub message: Option<String>,
    /// The case's plain-text log.
    pub log_url: String,
    /// The case's HTML log.
    pub html_url: String,
}

/// `GET /api/v1/queues`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct QueueList {
    pub queues: Vec<Queue>,
    /// Pass as `before` to get the next (older) page; null on the last page.
    pub next: Option<i64>,
}

/// The query of `GET /api/v1/queues`. The values are text, as they arrive in a URL, so the server
/// can refuse a malformed one with its own message (`bad_query`); an empty value is the same as
/// none. The `with_*` methods fill them from typed values.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueListQuery {
    /// Only queues with this status (`waiting`, `running`, `passed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Page size, 1..=500; 50 when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Only queues with a smaller id: the `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// `true`: only queues with a case that got worse than in the previous run of their
    /// branch (`regressions` above 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worse: Option<String>,
}

impl QueueListQuery {
    /// Only queues with `status`.
    pub fn with_status(mut self, status: QueueStatus) -> Self {
        self.status = Some(status.as_str().to_string());
        self
    }

    /// At most `limit` queues (1..=500).
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit.to_string());
        self
    }

    /// Only queues older than `before` (the `next` of the previous page).
    pub fn with_before(mut self, before: i64) -> Self {
        self.before = Some(before.to_string());
        self
    }

    /// Only queues with a case that got worse than in the previous run of their branch.
    pub fn with_worse(mut self) -> Self {
        self.worse = Some("true".to_string());
        self
    }
}

/// The query of `GET /api/v1/queues/{id}/tasks/{task}/cases`, as text like [`QueueListQuery`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CasePageQuery {
    /// Only cases after this position (0-based, in file order): the `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Page size, 1..=1000; 500 when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

impl CasePageQuery {
    /// Only cases after position `after`.
    pub fn with_after(mut self, after: i64) -> Self {
        self.after = Some(after.to_string());
        self
    }

    /// At most `limit` cases (1..=1000).
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit.to_string());
        self
    }
}

/// `GET /api/v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Health {
    pub status: String,
    pub database: String,
    pub version: String,
}

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for machines (`code`) and people (`message`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl Summary {
    /// Counts one case verdict.
    pub fn add(&mut self, status: CaseStatus) {
        self.add_n(status, 1);
    }

    /// Counts `n` cases of one verdict.
    pub fn add_n(&mut self, status: CaseStatus, n: u64) {
        self.total += n;
        match status {
            CaseStatus::Passed => self.passed += n,
            CaseStatus::Failed => self.failed += n,
            CaseStatus::Error => self.error += n,
            CaseStatus::Skipped => self.skipped += n,
            CaseStatus::Flaky => self.flaky += n,
            CaseStatus::Pending | CaseStatus::Running => {}
        }
    }

    /// How many cases have a verdict (passed, flaky, failed, error or skipped).
    pub fn done(&self) -> u64 {
        self.passed + self.flaky + self.failed + self.error + self.skipped
    }
}

/// `GET /api/v1/workers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct WorkerList {
    pub workers: Vec<Worker>,
}

/// A live worker process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Worker {
    pub id: String,
    pub hostname: String,
    pub pid: i64,
    pub started_at: String,
    pub heartbeat_at: String,
    /// Queues it runs at once (its capacity).
    pub concurrency: i64,
    /// The TestArena version it runs.
    #[serde(default)]
    pub version: String,
    /// Its labels (given with `--labels`, and the emulators and machines found on its host).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Ids of the queues it runs now.
    pub running: Vec<i64>,
}

impl Worker {
    /// Whether this worker has every one of `labels`.
    pub fn can_take(worker_labels: &[String], labels: &[String]) -> bool {
        labels.iter().all(|l| worker_labels.contains(l))
    }
}

/// What a waiting queue with `labels` says when no live worker (with `live` labels each) can
/// take it; `None` when one can.
pub fn waiting_reason(labels: &[String], live: &[Vec<String>]) -> Option<String> {
    if live.iter().any(|w| Worker::can_take(w, labels)) {
        return None;
    }
    Some(if labels.is_empty() {
        "waiting for a worker (none is alive)".to_string()
    } else {
        format!("waiting for a worker with labels {}", labels.join(", "))
    })
}

/// Body of `POST /api/v1/queues/{id}/rerun`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rerun {
    /// Only the cases that failed or errored (and scenarios that could not run).
    #[serde(default)]
    pub only_failed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_no_live_worker_can_take_says_why() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let live = vec![l(&["qemu-system-xtensa", "sim"]), l(&["esp32", "fast"])];
        assert_eq!(waiting_reason(&l(&["esp32"]), &live), None);
        assert_eq!(waiting_reason(&[], &live), None);
        assert_eq!(
            waiting_reason(&l(&["esp32", "sim"]), &live).as_deref(),
            Some("waiting for a worker with labels esp32, sim")
        );
        assert_eq!(
            waiting_reason(&[], &[]).as_deref(),
            Some("waiting for a worker (none is alive)")
        );
    }
}
