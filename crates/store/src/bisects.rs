//! Bisects (issue 16): their rows and steps, and the driver's side: a claim of a bisect that
//! needs a decision (new, or its step queue ended), held for a while and fenced like a queue's
//! claim ([`Holder`]: the driver and its claim number), and the decision recorded in one
//! transaction with the step queue it submits.

use crate::rows::{Columns, Holder};
use crate::{now_ms, Result, Store, StoreError};
use testarena_core::bisect::{BisectCommit, BisectStatus, StepVerdict, ValidBisect};
use testarena_core::validate::ValidQueue;

/// A bisect's row (its commit list aside, which only the driver reads).
#[derive(Debug, Clone, PartialEq)]
pub struct BisectRow {
    pub id: i64,
    pub repo: String,
    pub good: String,
    pub bad: String,
    pub scenarios: Option<Vec<String>>,
    pub case: Option<String>,
    pub priority: i64,
    pub labels: Vec<String>,
    pub submitted_by: Option<String>,
    pub status: BisectStatus,
    pub message: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub good_sha: Option<String>,
    pub bad_sha: Option<String>,
    pub range_size: Option<i64>,
    /// The first bad commit's index in the range, once found.
    pub result_index: Option<i64>,
    pub current_queue: Option<i64>,
}

impl BisectRow {
    /// The request it was made from, as checked (what its step queues are made of).
    pub fn spec(&self) -> ValidBisect {
        ValidBisect {
            repo: self.repo.clone(),
            good: self.good.clone(),
            bad: self.bad.clone(),
            scenarios: self.scenarios.clone(),
            case: self.case.clone(),
            priority: self.priority,
            labels: self.labels.clone(),
        }
    }
}

/// One step of a bisect.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub position: i64,
    /// The commit's index in the range (0 is `good`).
    pub commit_index: i64,
    pub commit: BisectCommit,
    pub queue_id: i64,
    pub rerun_queue_id: Option<i64>,
    pub verdict: Option<StepVerdict>,
    pub note: Option<String>,
}

/// A bisect with its steps in order.
#[derive(Debug, Clone, PartialEq)]
pub struct BisectDetail {
    pub bisect: BisectRow,
    pub steps: Vec<StepRow>,
}

impl BisectDetail {
    /// The step of the first bad commit, once found.
    pub fn result(&self) -> Option<&StepRow> {
        let index = self.bisect.result_index?;
        self.steps.iter().find(|s| s.commit_index == index)
    }
}

/// A bisect a driver claimed: its detail, the range once listed, and the claim every write
/// of the driver carries.
#[derive(Debug, Clone, PartialEq)]
pub struct BisectClaim {
    pub detail: BisectDetail,
    /// The range, `good` first and `bad` last; `None` until the first decision listed it.
    pub commits: Option<Vec<BisectCommit>>,
    pub holder: Holder,
}

/// The range of a bisect as the driver read it from the repository.
#[derive(Debug, Clone, PartialEq)]
pub struct BisectRange {
    pub good_sha: String,
    pub bad_sha: String,
    /// `good` first, `bad` last.
    pub commits: Vec<BisectCommit>,
}

/// A driver's decision on a bisect it holds, recorded at once: the range (on the first
/// decision), the verdict of the step that ended, and the next move.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub range: Option<BisectRange>,
    /// The verdict (and note) of the bisect's last step.
    pub verdict: Option<(StepVerdict, Option<String>)>,
    pub next: Move,
}

/// What a bisect does after a decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Move {
    /// A new step: commit `index` of the range, tested by `queue`.
    Step {
        index: usize,
        commit: BisectCommit,
        queue: ValidQueue,
    },
    /// The last step's second queue, on the same commit.
    Rerun { queue: ValidQueue },
    /// The bisect ends: `found` with the index of the first bad commit, or another end with
    /// its message.
    Finish {
        status: BisectStatus,
        message: Option<String>,
        result_index: Option<usize>,
    },
}

/// The columns of `bisects` that [`bisect_row`] reads (not `commits`).
pub(crate) const BISECT_COLUMNS: &str =
    "id, repo, good, bad, scenarios, case_key, priority, labels, submitted_by, status, message, \
     created_at, finished_at, good_sha, bad_sha, range_size, result_index, current_queue";

/// The columns of `bisect_steps` that [`step_row`] reads.
pub(crate) const STEP_COLUMNS: &str =
    "bisect_id, position, commit_index, commit_sha, subject, author, queue_id, rerun_queue_id, verdict, note";

pub(crate) fn bisect_row(r: &impl Columns) -> Result<BisectRow> {
    Ok(BisectRow {
        id: r.int("id")?,
        repo: r.text("repo")?,
        good: r.text("good")?,
        bad: r.text("bad")?,
        scenarios: r.json("scenarios")?,
        case: r.opt_text("case_key")?,
        priority: r.int("priority")?,
        labels: r.json("labels")?.unwrap_or_default(),
        submitted_by: r.opt_text("submitted_by")?,
        status: r.parsed("status")?,
        message: r.opt_text("message")?,
        created_at: r.int("created_at")?,
        finished_at: r.opt_int("finished_at")?,
        good_sha: r.opt_text("good_sha")?,
        bad_sha: r.opt_text("bad_sha")?,
        range_size: r.opt_int("range_size")?,
        result_index: r.opt_int("result_index")?,
        current_queue: r.opt_int("current_queue")?,
    })
}

/// A step row, with the id of its bisect.
pub(crate) fn step_row(r: &impl Columns) -> Result<(i64, StepRow)> {
    let verdict = r.opt_text("verdict")?;
    Ok((
        r.int("bisect_id")?,
        StepRow {
            position: r.int("position")?,
            commit_index: r.int("commit_index")?,
            commit: BisectCommit {
                commit: r.text("commit_sha")?,
                subject: r.text("subject")?,
                author: r.text("author")?,
            },
            queue_id: r.int("queue_id")?,
            rerun_queue_id: r.opt_int("rerun_queue_id")?,
            verdict: verdict
                .map(|v| v.parse().map_err(StoreError::Corrupt))
                .transpose()?,
            note: r.opt_text("note")?,
        },
    ))
}

/// Bisects with their steps: `steps` (bisect id, step) in order, grouped onto `rows`.
pub(crate) fn with_steps(rows: Vec<BisectRow>, steps: Vec<(i64, StepRow)>) -> Vec<BisectDetail> {
    let mut out: Vec<BisectDetail> = rows
        .into_iter()
        .map(|bisect| BisectDetail {
            bisect,
            steps: Vec::new(),
        })
        .collect();
    for (id, step) in steps {
        if let Some(d) = out.iter_mut().find(|d| d.bisect.id == id) {
            d.steps.push(step);
        }
    }
    out
}

impl Store {
    /// Stores a new running bisect; returns it.
    pub async fn create_bisect(
        &self,
        b: &ValidBisect,
        submitted_by: Option<&str>,
    ) -> Result<BisectDetail> {
        let now = now_ms();
        let id = self
            .retry(|| self.backend.insert_bisect(b, submitted_by, now))
            .await?;
        self.bisect(id)
            .await?
            .ok_or_else(|| StoreError::Internal(format!("bisect {id} vanished")))
    }

    /// One bisect with its steps.
    pub async fn bisect(&self, id: i64) -> Result<Option<BisectDetail>> {
        self.retry(|| self.backend.bisect(id)).await
    }

    /// Newest-first page of bisects with ids below `before`; returns the page and the cursor
    /// of the next one.
    pub async fn list_bisects(
        &self,
        limit: u32,
        before: Option<i64>,
    ) -> Result<(Vec<BisectDetail>, Option<i64>)> {
        let mut rows = self
            .retry(|| self.backend.list_bisects(limit + 1, before))
            .await?;
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|b| b.bisect.id)
        } else {
            None
        };
        Ok((rows, next))
    }

    /// Claims, for `driver` and `lease_ms`, a running bisect that needs a decision: one
    /// nobody holds (or whose holder's time ran out) that is new, or whose step queue ended
    /// (or was deleted). At most one driver holds a bisect at a time.
    pub async fn claim_bisect(&self, driver: &str, lease_ms: i64) -> Result<Option<BisectClaim>> {
        let now = now_ms();
        self.retry(|| self.backend.claim_bisect(driver, now, now + lease_ms))
            .await
    }

    /// Extends a claim by `lease_ms`; `ClaimLost` when `holder` no longer holds the bisect (it
    /// was aborted, or the claim ran out and another driver took it).
    pub async fn renew_bisect(&self, id: i64, holder: &Holder, lease_ms: i64) -> Result<()> {
        let until = now_ms() + lease_ms;
        match self
            .retry(|| self.backend.renew_bisect(id, holder, until))
            .await?
        {
            true => Ok(()),
            false => Err(StoreError::ClaimLost(id)),
        }
    }

    /// Lets go of a claim without a decision (the driver could not make one now): the bisect
    /// may be claimed again after `delay_ms`.
    pub async fn release_bisect(&self, id: i64, holder: &Holder, delay_ms: i64) -> Result<()> {
        let at = now_ms() + delay_ms;
        self.retry(|| self.backend.release_bisect(id, holder, at))
            .await?;
        Ok(())
    }

    /// Records a decision of the driver that holds the bisect, in one transaction: the range,
    /// the last step's verdict, and the next step's queue (returned: its id) or the end. The
    /// claim is let go. `ClaimLost` (and nothing changed) when `holder` no longer holds it.
    pub async fn decide_bisect(
        &self,
        id: i64,
        holder: &Holder,
        decision: &Decision,
    ) -> Result<Option<i64>> {
        if let Move::Finish { status, .. } = &decision.next {
            if !BisectStatus::Running.can_become(*status) {
                return Err(StoreError::Conflict(format!(
                    "bisect {id} cannot end as {status}"
                )));
            }
        }
        let now = now_ms();
        self.retry(|| self.backend.decide_bisect(id, holder, decision, now))
            .await
    }

    /// Ends a running bisect as aborted with `message`; returns it (its `current_queue` is the
    /// step queue to abort), or `None` if it is not running (or does not exist).
    pub async fn abort_bisect(&self, id: i64, message: &str) -> Result<Option<BisectRow>> {
        let now = now_ms();
        self.retry(|| self.backend.abort_bisect(id, message, now))
            .await
    }
}

#[cfg(test)]
pub(crate) mod tests;
