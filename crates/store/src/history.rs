//! A case's history across queues (issue 16): the results kept when a queue finishes, and the
//! answers read from them.
//!
//! Why a table of its own (`case_results`, migrations `*_history.sql`) rather than a query
//! over `queues`, `tasks` and `cases`: a case's history is asked for by repository, scenario
//! and case id, and a queue's repository is stored as submitted (it may hold credentials, and
//! the history is keyed by the URL as the API shows it: `testarena_core::history::repo_key`,
//! which SQL cannot compute). Copied once, when the worker records the verdict (in the same
//! transaction), each result carries its key, and "the last N results of a case" is one range
//! of the index `(repo_key, [branch,] scenario, case_key, finished_at, queue_id)` read
//! backwards: as fast with 100,000 queues as with ten.
//!
//! A *run* is a queue a worker finished as passed, failed or error with a resolved commit
//! (aborted queues, and queues given up after their worker was lost, are none). When a run is
//! recorded, it also finds the previous run of its repository and branch (`previous_id`) and
//! counts its cases that got worse since (`regressions`), which the queue list filters on.

use crate::dialect::Dialect;
use crate::rows::Columns;
use crate::{rfc3339, Result, Store, StoreError};
use testarena_core::history::{
    self, CaseHistory, CaseStrip, Compared, ComparedQueue, Comparison, HistoryResult, Point,
    QueueHistory, ResultStatus,
};
use testarena_core::{CaseStatus, QueueStatus};

/// One result of a case as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResultRow {
    pub queue_id: i64,
    pub branch: String,
    pub commit: String,
    pub status: ResultStatus,
    pub finished_at: i64,
    pub duration_ms: Option<i64>,
}

impl ResultRow {
    fn api(&self) -> HistoryResult {
        HistoryResult {
            queue: self.queue_id,
            branch: self.branch.clone(),
            commit: self.commit.clone(),
            status: self.status,
            finished_at: rfc3339(self.finished_at),
            duration_ms: self.duration_ms.map(|d| d.max(0) as u64),
        }
    }

    fn point(&self) -> Point<'_> {
        Point {
            queue: self.queue_id,
            commit: &self.commit,
            status: self.status,
        }
    }
}

/// One case of a queue with its last results (a row of [`strips_sql`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StripRow {
    pub task_id: i64,
    pub scenario: String,
    pub case_key: String,
    pub results: Vec<ResultRow>,
}

/// Which results of a case to read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CaseQuery<'a> {
    pub repo_key: &'a str,
    pub scenario: &'a str,
    pub case_key: &'a str,
    pub branch: Option<&'a str>,
    pub limit: u32,
}

/// Which page of a queue's cases to read with their results.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StripQuery<'a> {
    pub queue_id: i64,
    pub repo_key: &'a str,
    pub branch: &'a str,
    /// Only results of runs finished before or at (ms, queue id): the queue itself and older.
    pub until: (i64, i64),
    /// Results per case.
    pub limit: u32,
    /// Cases to skip (in run order), and at most how many to read.
    pub offset: u64,
    pub cases: u32,
}

/// A queue that finished, as `finish_queue` records it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run<'a> {
    pub id: i64,
    pub status: QueueStatus,
    pub repo: &'a str,
    pub branch: &'a str,
    pub commit: Option<&'a str>,
    pub finished_at: i64,
}

impl Run<'_> {
    /// Whether it is a run of the history: a verdict of the firmware or the infrastructure
    /// (not an abort) on a commit that was resolved.
    pub(crate) fn counts(&self) -> bool {
        self.commit.is_some()
            && matches!(
                self.status,
                QueueStatus::Passed | QueueStatus::Failed | QueueStatus::Error
            )
    }
}

/// `c.status NOT IN (…)`: a case of alias `c` that has its verdict.
pub(crate) fn finished_case(alias: &str) -> String {
    let open: Vec<String> = CaseStatus::ALL
        .iter()
        .filter(|s| !s.is_finished())
        .map(|s| crate::guards::c(*s))
        .collect();
    format!("{alias}.status NOT IN ({})", open.join(", "))
}

/// Copies a run's finished cases into `case_results`. Parameters: `$1` queue, `$2` repo key,
/// `$3` branch, `$4` commit, `$5` finished at.
pub(crate) fn record_sql() -> String {
    format!(
        "INSERT INTO case_results (case_id, queue_id, repo_key, branch, commit_sha, scenario, case_key, status, duration_ms, finished_at) \
         SELECT c.id, c.queue_id, $2, $3, $4, t.scenario, c.case_key, c.status, c.duration_ms, $5 \
         FROM cases c JOIN tasks t ON t.id = c.task_id WHERE c.queue_id = $1 AND {}",
        finished_case("c")
    )
}

/// The previous run: `$1` repo key, `$2` branch, `$3` finished before (ms), `$4` id (not it,
/// and older at the same ms).
pub(crate) const PREVIOUS_SQL: &str = "SELECT id FROM queues WHERE repo_key = $1 AND branch = $2 AND id <> $4 \
     AND finished_at <= $3 AND (finished_at < $3 OR id < $4) ORDER BY finished_at DESC, id DESC LIMIT 1";

/// The latest run: `$1` repo key, `$2` branch, `$3` not this id.
pub(crate) const LATEST_SQL: &str =
    "SELECT id FROM queues WHERE repo_key = $1 AND branch = $2 AND id <> $3 \
     ORDER BY finished_at DESC, id DESC LIMIT 1";

/// How many cases of run `$1` got worse than in run `$2`.
pub(crate) fn regressions_sql() -> String {
    let (good, bad) = (
        verdicts(ResultStatus::is_good),
        verdicts(ResultStatus::is_bad),
    );
    format!(
        "SELECT COUNT(*) FROM case_results n WHERE n.queue_id = $1 AND n.status IN ({bad}) \
         AND EXISTS (SELECT 1 FROM case_results p WHERE p.queue_id = $2 AND p.scenario = n.scenario \
         AND p.case_key = n.case_key AND p.status IN ({good}))"
    )
}

/// The statuses that pass `which`, as SQL literals.
fn verdicts(which: fn(ResultStatus) -> bool) -> String {
    ResultStatus::ALL
        .iter()
        .filter(|s| which(**s))
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns of a result.
const RESULT_COLUMNS: &str = "queue_id, branch, commit_sha, status, finished_at, duration_ms";

/// A case's last results: `$1` repo key, `$2` scenario, `$3` case, `$4` limit, `$5` branch
/// (when `branch`).
pub(crate) fn case_results_sql(branch: bool) -> String {
    let branch = if branch { " AND branch = $5" } else { "" };
    format!(
        "SELECT {RESULT_COLUMNS} FROM case_results WHERE repo_key = $1 AND scenario = $2 AND case_key = $3{branch} \
         ORDER BY finished_at DESC, queue_id DESC LIMIT $4"
    )
}

/// A page of a queue's cases with each one's last results as one JSON text (`results`:
/// `[[queue, branch, commit, status, finished_at, duration_ms], …]`, newest first): one
/// statement, each case's results one backwards range of `case_results_branch` (the bound is
/// written `finished_at <= $3 AND (…)` so that both planners use it for the range, not as a
/// filter over every newer result). Parameters as
/// [`StripQuery`]: `$1` repo key, `$2` branch, `$3` `$4` until, `$5` limit, `$6` queue, `$7`
/// cases, `$8` offset.
pub(crate) fn strips_sql(d: Dialect) -> String {
    let item = "r.queue_id, r.branch, r.commit_sha, r.status, r.finished_at, r.duration_ms";
    let order = "r.finished_at DESC, r.queue_id DESC";
    let agg = match d {
        Dialect::Sqlite => format!("json_group_array(json_array({item}) ORDER BY {order})"),
        Dialect::Postgres => format!(
            "(COALESCE(json_agg(json_build_array({item}) ORDER BY {order}), '[]'::json))::text"
        ),
    };
    // The page of cases first, so that only its cases' results are read (a sort over the
    // whole queue would read them for every case before cutting the page).
    format!(
        "SELECT p.task_id AS task_id, p.scenario AS scenario, p.case_key AS case_key, \
           (SELECT {agg} FROM (SELECT {RESULT_COLUMNS} FROM case_results r \
              WHERE r.repo_key = $1 AND r.branch = $2 AND r.scenario = p.scenario AND r.case_key = p.case_key \
              AND r.finished_at <= $3 AND (r.finished_at < $3 OR r.queue_id <= $4) \
              ORDER BY {order} LIMIT $5) r) AS results \
         FROM (SELECT t.id AS task_id, t.scenario AS scenario, c.case_key AS case_key, \
                      t.position AS task_position, c.position AS position \
               FROM cases c JOIN tasks t ON t.id = c.task_id WHERE c.queue_id = $6 \
               ORDER BY t.position, c.position LIMIT $7 OFFSET $8) p \
         ORDER BY p.task_position, p.position"
    )
}

/// Every case of queue `$1` in run order.
pub(crate) const OUTCOMES_SQL: &str = "SELECT t.scenario AS scenario, c.case_key AS case_key, c.name AS name, c.status AS status, c.message AS message \
     FROM cases c JOIN tasks t ON t.id = c.task_id WHERE c.queue_id = $1 ORDER BY t.position, c.position";

/// A status as stored.
fn status(text: &str) -> Result<ResultStatus> {
    text.parse().map_err(StoreError::Corrupt)
}

/// A row of [`case_results_sql`].
pub(crate) fn result_row(r: &impl Columns) -> Result<ResultRow> {
    Ok(ResultRow {
        queue_id: r.int("queue_id")?,
        branch: r.text("branch")?,
        commit: r.text("commit_sha")?,
        status: status(&r.text("status")?)?,
        finished_at: r.int("finished_at")?,
        duration_ms: r.opt_int("duration_ms")?,
    })
}

/// A row of [`strips_sql`].
pub(crate) fn strip_row(r: &impl Columns) -> Result<StripRow> {
    type Item = (i64, String, String, String, i64, Option<i64>);
    let items: Vec<Item> = serde_json::from_str(&r.text("results")?)
        .map_err(|e| StoreError::Corrupt(format!("results: {e}")))?;
    let results = items
        .into_iter()
        .map(|(queue_id, branch, commit, s, finished_at, duration_ms)| {
            Ok(ResultRow {
                queue_id,
                branch,
                commit,
                status: status(&s)?,
                finished_at,
                duration_ms,
            })
        })
        .collect::<Result<_>>()?;
    Ok(StripRow {
        task_id: r.int("task_id")?,
        scenario: r.text("scenario")?,
        case_key: r.text("case_key")?,
        results,
    })
}

/// A row of [`OUTCOMES_SQL`].
pub(crate) fn outcome_row(r: &impl Columns) -> Result<Compared> {
    Ok(Compared {
        scenario: r.text("scenario")?,
        case: r.text("case_key")?,
        name: r.text("name")?,
        status: status(&r.text("status")?)?,
        message: r.opt_text("message")?,
    })
}

/// The queue as a comparison names it.
fn compared(q: &crate::QueueRow) -> ComparedQueue {
    ComparedQueue {
        id: q.id,
        branch: q.branch.clone(),
        commit: q.commit.clone(),
        status: q.status,
    }
}

impl Store {
    /// The last `limit` results of case `case` of `scenario` in repository `repo` (as
    /// submitted or as the API shows it), of one branch or all, newest first, and what they
    /// add up to.
    pub async fn case_history(
        &self,
        repo: &str,
        scenario: &str,
        case: &str,
        branch: Option<&str>,
        limit: u32,
    ) -> Result<CaseHistory> {
        let key = history::repo_key(repo);
        let q = CaseQuery {
            repo_key: &key,
            scenario,
            case_key: case,
            branch,
            limit,
        };
        let rows = self.retry(|| self.backend.case_results(q)).await?;
        let points: Vec<Point<'_>> = rows.iter().map(ResultRow::point).collect();
        let stats = history::stats(&points);
        Ok(CaseHistory {
            results: rows.iter().map(ResultRow::api).collect(),
            repo: key.clone(),
            scenario: scenario.to_string(),
            case: case.to_string(),
            branch: branch.map(str::to_string),
            stats,
        })
    }

    /// A page of queue `id`'s cases (those after the `after`-th, 0-based, in run order; at
    /// most `cases`), each with its last `limit` results on the queue's repository and branch
    /// up to this queue (for one still running: the latest). `NotFound` without the queue.
    pub async fn queue_history(
        &self,
        id: i64,
        limit: u32,
        after: Option<u64>,
        cases: u32,
    ) -> Result<QueueHistory> {
        let row = self.queue_row(id).await?;
        let key = history::repo_key(&row.repo);
        let offset = after.map_or(0, |a| a.saturating_add(1));
        let q = StripQuery {
            queue_id: id,
            repo_key: &key,
            branch: &row.branch,
            until: row.finished_at.map_or((i64::MAX, i64::MAX), |f| (f, id)),
            limit,
            offset,
            cases: cases.saturating_add(1),
        };
        let mut rows = self.retry(|| self.backend.strips(q)).await?;
        let next = (rows.len() > cases as usize).then(|| {
            rows.truncate(cases as usize);
            offset + u64::from(cases) - 1
        });
        let cases = rows
            .into_iter()
            .map(|s| {
                let points: Vec<Point<'_>> = s.results.iter().map(ResultRow::point).collect();
                let stats = history::stats(&points);
                CaseStrip {
                    task: s.task_id,
                    results: s.results.iter().map(ResultRow::api).collect(),
                    flaky: !stats.flaky_commits.is_empty(),
                    pass_rate: stats.pass_rate,
                    flaky_rate: stats.flaky_rate,
                    scenario: s.scenario,
                    case: s.case_key,
                }
            })
            .collect();
        Ok(QueueHistory {
            queue: id,
            cases,
            next,
        })
    }

    /// How the cases of queue `head` fared against those of queue `base`. `NotFound` for
    /// either missing.
    pub async fn compare(&self, base: i64, head: i64) -> Result<Comparison> {
        let (b, h) = (self.queue_row(base).await?, self.queue_row(head).await?);
        let base_cases = self.retry(|| self.backend.case_outcomes(base)).await?;
        let head_cases = self.retry(|| self.backend.case_outcomes(head)).await?;
        Ok(history::compare(
            compared(&b),
            compared(&h),
            base_cases,
            head_cases,
        ))
    }

    /// The run queue `id` compares with: the previous run recorded when it finished, if that
    /// queue still exists; otherwise the latest run of its repository and branch finished
    /// before it (for one not finished: the latest). `NotFound` without the queue.
    pub async fn previous_run(&self, id: i64) -> Result<Option<i64>> {
        let row = self.queue_row(id).await?;
        if let Some(previous) = row.previous_id {
            match self.queue_row(previous).await {
                Ok(_) => return Ok(Some(previous)),
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let key = history::repo_key(&row.repo);
        let before = row.finished_at.map(|f| (f, id));
        self.retry(|| self.backend.previous_run(&key, &row.branch, before, id))
            .await
    }
}
