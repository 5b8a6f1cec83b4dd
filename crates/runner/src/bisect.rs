//! The bisect driver: a loop in every worker process that claims a bisect needing a decision
//! (new, or its step queue ended), does the git work with the worker's mirror (the server tier
//! has no clone), and records the step's verdict with the next step queue in one transaction.
//!
//! The store's claim is fenced (at most one driver decides a bisect at a time; a driver whose
//! claim ran out changes nothing) and renewed while the driver works. Drivers wake when a
//! bisect is created or a step queue ends: in-process from the server and the worker, from
//! other processes by PostgreSQL's NOTIFY, and otherwise by a slow poll. The search itself is
//! pure and lives in `testarena_core::bisect`.

use crate::git::{GitError, MirrorCache};
use std::sync::Arc;
use std::time::Duration;
use testarena_core::bisect::{
    next_step, outcome, queue_verdict, short, step_queue, BisectCommit, BisectStatus, Next,
    Outcome, StepVerdict, Undecided, ValidBisect, MAX_RANGE,
};
use testarena_core::QueueStatus;
use testarena_store::{
    BisectClaim, BisectRange, Decision, Holder, Move, StepRow, Store, StoreError,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a claim on a bisect lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(60);
/// How often a claim is renewed while its driver works (fetching may take long).
const RENEW_EVERY: Duration = Duration::from_secs(15);
/// How often a driver looks for bisects when nothing woke it.
pub const POLL_EVERY: Duration = Duration::from_secs(2);
/// How long a bisect whose decision failed for now (the database away) waits to be tried again.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Most step commits named in an undecided bisect's message.
const MAX_NAMED: usize = 10;

/// One worker process's bisect driver.
pub struct Driver {
    pub store: Store,
    /// The worker's mirrors (the same locks as its queues').
    pub mirrors: Arc<MirrorCache>,
    /// Who claims: the worker's id.
    pub id: String,
    /// Limit of fetching the repository.
    pub fetch_timeout: Duration,
    /// Signalled by an in-process server when something was submitted (a bisect too); the
    /// driver signals it when it submitted a step queue, so an idle worker claims it at once.
    pub new_work: Arc<Notify>,
    /// Signalled by this process's worker when a queue it ran ended.
    pub queue_ended: Arc<Notify>,
}

/// Why no decision was made now.
#[derive(Debug)]
enum NotNow {
    /// Shutting down, or the claim was lost: let go at once.
    Stopped,
    /// Trouble that may pass (the database): try again later.
    Later(String),
}

impl From<StoreError> for NotNow {
    fn from(e: StoreError) -> Self {
        NotNow::Later(e.to_string())
    }
}

/// What the step that ended makes of the bisect.
enum Closed {
    /// The step's verdict (and note).
    Verdict(StepVerdict, Option<String>),
    /// A move at once: run the step again, or end the bisect.
    Now(Box<Move>),
}

/// What a finished step queue said.
enum Judged {
    Verdict(StepVerdict, Option<String>),
    /// The queue was aborted (by somebody else than the bisect): the bisect ends aborted.
    Aborted,
    /// The queue was deleted.
    Gone,
}

impl Driver {
    /// Decides bisects until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            // Listening before looking: a wake-up while we look is not lost.
            let submitted = self.new_work.notified();
            let ended = self.queue_ended.notified();
            tokio::pin!(submitted, ended);
            submitted.as_mut().enable();
            ended.as_mut().enable();
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                match self
                    .store
                    .claim_bisect(&self.id, LEASE.as_millis() as i64)
                    .await
                {
                    Ok(Some(claim)) => self.advance(claim, &shutdown).await,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming a bisect failed");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = &mut submitted => {}
                _ = &mut ended => {}
                // Another process's new bisect or ended step (PostgreSQL's NOTIFY), else the poll.
                _ = self.store.wait_for_bisects(POLL_EVERY) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Makes and records the decision on a claimed bisect, renewing the claim meanwhile.
    async fn advance(&self, claim: BisectClaim, shutdown: &CancellationToken) {
        let id = claim.detail.bisect.id;
        let holder = claim.holder.clone();
        let cancel = shutdown.child_token();
        let renewal = renew(self.store.clone(), id, holder.clone(), cancel.clone());
        let renewal = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(renewal));
        let decision = self.decide(&claim, &cancel).await;
        drop(renewal);
        let result = match decision {
            Ok(d) => self.store.decide_bisect(id, &holder, &d).await,
            Err(NotNow::Stopped) => {
                let _ = self.store.release_bisect(id, &holder, 0).await;
                return;
            }
            Err(NotNow::Later(e)) => Err(StoreError::Internal(e)),
        };
        match result {
            Ok(Some(queue)) => {
                tracing::info!(bisect = id, queue, "bisect step submitted");
                self.new_work.notify_waiters();
            }
            Ok(None) => tracing::info!(bisect = id, "bisect ended"),
            Err(StoreError::ClaimLost(_)) => {
                tracing::info!(bisect = id, "bisect aborted or taken over meanwhile");
            }
            Err(e) => {
                tracing::warn!(bisect = id, error = %e, "cannot decide the bisect now; trying again later");
                let later = RETRY_AFTER.as_millis() as i64;
                let _ = self.store.release_bisect(id, &holder, later).await;
            }
        }
    }

    /// The decision on a claimed bisect: the range on the first one, then the verdict of the
    /// step that ended, and the next step or the end.
    async fn decide(
        &self,
        claim: &BisectClaim,
        cancel: &CancellationToken,
    ) -> Result<Decision, NotNow> {
        let row = &claim.detail.bisect;
        let spec = row.spec();
        let (range, commits) = match &claim.commits {
            Some(commits) => (None, commits.clone()),
            None => match self.read_range(&spec, cancel).await? {
                Ok(range) => {
                    let commits = range.commits.clone();
                    (Some(range), commits)
                }
                Err(end) => {
                    return Ok(Decision {
                        range: None,
                        verdict: None,
                        next: end,
                    })
                }
            },
        };
        let mut verdicts: Vec<Option<StepVerdict>> = vec![None; commits.len()];
        for s in &claim.detail.steps {
            if let Some(v) = verdicts.get_mut(index(s)) {
                *v = s.verdict;
            }
        }
        let mut verdict = None;
        if let Some(step) = claim.detail.steps.last().filter(|s| s.verdict.is_none()) {
            let closed = if index(step) < commits.len() {
                self.close_step(row.id, &spec, step).await?
            } else {
                let message = format!("step {} names no commit of the range", step.position);
                Closed::Now(Box::new(end_move(BisectStatus::Error, message)))
            };
            match closed {
                Closed::Verdict(v, note) => {
                    verdicts[index(step)] = Some(v);
                    verdict = Some((v, note));
                }
                Closed::Now(next) => {
                    return Ok(Decision {
                        range,
                        verdict: None,
                        next: *next,
                    })
                }
            }
        }
        let next = match next_step(&verdicts) {
            Next::Test(i) => Move::Step {
                index: i,
                commit: commits[i].clone(),
                queue: step_queue(row.id, &spec, &commits[i].commit, false),
            },
            Next::Found(i) => Move::Finish {
                status: BisectStatus::Found,
                message: None,
                result_index: Some(i),
            },
            Next::Undecided(why) => Move::Finish {
                status: BisectStatus::Undecided,
                message: Some(undecided(&why, &commits)),
                result_index: None,
            },
        };
        Ok(Decision {
            range,
            verdict,
            next,
        })
    }

    /// What the last step's queues (the first, and the re-run if one ran) make of it: its
    /// verdict, or a move of their own (run it again; the bisect ends).
    async fn close_step(
        &self,
        bisect: i64,
        spec: &ValidBisect,
        step: &StepRow,
    ) -> Result<Closed, NotNow> {
        let case = spec.case.as_deref();
        let first = match self.judge(step.queue_id, case).await? {
            Judged::Verdict(v, note) => (v, note),
            other => return Ok(Closed::Now(Box::new(ended_by(step.queue_id, other)))),
        };
        let rerun = match step.rerun_queue_id {
            None => None,
            Some(q) => match self.judge(q, case).await? {
                Judged::Verdict(v, _) => Some(v),
                other => return Ok(Closed::Now(Box::new(ended_by(q, other)))),
            },
        };
        Ok(match outcome(first.0, rerun) {
            Outcome::Rerun => Closed::Now(Box::new(Move::Rerun {
                queue: step_queue(bisect, spec, &step.commit.commit, true),
            })),
            Outcome::Verdict(v, note) => Closed::Verdict(v, note.map(String::from).or(first.1)),
        })
    }

    /// What step queue `id` says of its commit.
    async fn judge(&self, id: i64, case: Option<&str>) -> Result<Judged, NotNow> {
        let detail = match self.store.queue(id).await {
            Ok(d) => d,
            Err(StoreError::NotFound(_)) => return Ok(Judged::Gone),
            Err(e) => return Err(e.into()),
        };
        let q = &detail.queue;
        if q.status == QueueStatus::Aborted {
            return Ok(Judged::Aborted);
        }
        if !q.status.is_finished() {
            return Err(NotNow::Later(format!("step queue #{id} has not ended")));
        }
        let cases = detail
            .tasks
            .iter()
            .flat_map(|(_, cases)| cases.iter().map(|c| (c.key.as_str(), c.status)));
        let (v, note) = queue_verdict(q.status, q.error.as_deref(), cases, case);
        Ok(Judged::Verdict(v, note))
    }

    /// The bisect's range from the repository; `Err(move)` when the bisect ends instead (an
    /// end that names no commit, a range too long, a repository that cannot be read).
    async fn read_range(
        &self,
        spec: &ValidBisect,
        cancel: &CancellationToken,
    ) -> Result<Result<BisectRange, Move>, NotNow> {
        let end = |status, message: String| Ok(Err(end_move(status, message)));
        let git = |e: GitError| match e {
            GitError::Cancelled { .. } => Err(NotNow::Stopped),
            e => end(
                BisectStatus::Error,
                format!("cannot read the repository: {e}"),
            ),
        };
        let mut quiet = |line: &[u8]| tracing::debug!(line = %String::from_utf8_lossy(line), "git");
        let mirror = match self
            .mirrors
            .fetch(&spec.repo, self.fetch_timeout, cancel, &mut quiet)
            .await
        {
            Ok(m) => m,
            Err(e) => return git(e),
        };
        let mut ends = Vec::new();
        for (field, rev) in [("good", &spec.good), ("bad", &spec.bad)] {
            match self.mirrors.resolve_rev(&mirror, rev, cancel).await {
                Ok(Some(sha)) => ends.push(sha),
                Ok(None) => {
                    let message = format!(
                        "{field}: '{rev}' is neither a branch, a tag nor a commit of the repository"
                    );
                    return end(BisectStatus::Error, message);
                }
                Err(e) => return git(e),
            }
        }
        let (good, bad) = (ends[0].clone(), ends[1].clone());
        if good == bad {
            let message = format!("good and bad are the same commit, {}", short(&good));
            return end(BisectStatus::Undecided, message);
        }
        match self.mirrors.is_ancestor(&mirror, &good, &bad, cancel).await {
            Ok(true) => {}
            Ok(false) => {
                let message = format!(
                    "good {} is not an ancestor of bad {}: there is no range between them",
                    short(&good),
                    short(&bad)
                );
                return end(BisectStatus::Undecided, message);
            }
            Err(e) => return git(e),
        }
        match self
            .mirrors
            .commit_range(&mirror, &good, &bad, MAX_RANGE, cancel)
            .await
        {
            Ok(Some(commits)) => Ok(Ok(BisectRange {
                good_sha: good,
                bad_sha: bad,
                commits,
            })),
            Ok(None) => end(
                BisectStatus::Error,
                format!("the range has more than {MAX_RANGE} commits; pick a closer good commit"),
            ),
            Err(e) => git(e),
        }
    }
}

/// A step's commit index as the range's.
fn index(step: &StepRow) -> usize {
    usize::try_from(step.commit_index).unwrap_or(usize::MAX)
}

/// The move that ends a bisect with `status` and `message`.
fn end_move(status: BisectStatus, message: String) -> Move {
    Move::Finish {
        status,
        message: Some(message),
        result_index: None,
    }
}

/// The move when step queue `queue` was aborted or deleted instead of judged: the bisect ends
/// aborted (somebody stopped it) or in error.
fn ended_by(queue: i64, judged: Judged) -> Move {
    let (status, what) = match judged {
        Judged::Aborted => (BisectStatus::Aborted, "was aborted"),
        _ => (BisectStatus::Error, "was deleted"),
    };
    end_move(status, format!("step queue #{queue} {what}"))
}

/// Why the bisect is undecided, in words, naming the commits.
fn undecided(why: &Undecided, commits: &[BisectCommit]) -> String {
    let name = |i: usize| commits.get(i).map_or("?", |c| short(&c.commit)).to_string();
    let last = commits.len().saturating_sub(1);
    match why {
        Undecided::Empty => "the range holds no commit after good".into(),
        Undecided::GoodFails => format!(
            "the good commit {} fails too: the change that broke it is older than the range",
            name(0)
        ),
        Undecided::GoodUntestable => format!("the good commit {} could not be tested", name(0)),
        Undecided::BadPasses => format!(
            "the bad commit {} passes: no commit of the range breaks it",
            name(last)
        ),
        Undecided::BadUntestable => format!("the bad commit {} could not be tested", name(last)),
        Undecided::Skipped { first, last } => {
            let all: Vec<String> = (*first..=*last).map(name).collect();
            let shown = if all.len() > MAX_NAMED {
                format!("{} … {}", all[..MAX_NAMED - 1].join(", "), name(*last))
            } else {
                all.join(", ")
            };
            format!(
                "the first bad commit is one of {} commits ({shown}): all but the last could not \
                 be tested",
                all.len()
            )
        }
    }
}

/// Renews the claim on bisect `id` until dropped; a lost claim cancels `cancel`.
async fn renew(store: Store, id: i64, holder: Holder, cancel: CancellationToken) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        match store
            .renew_bisect(id, &holder, LEASE.as_millis() as i64)
            .await
        {
            Ok(()) => {}
            Err(StoreError::ClaimLost(_)) => {
                cancel.cancel();
                return;
            }
            Err(e) => tracing::warn!(bisect = id, error = %e, "renewing the bisect's claim failed"),
        }
    }
}
