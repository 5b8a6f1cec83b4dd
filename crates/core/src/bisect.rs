//! Finding the commit that broke it (issue 16): the request that starts a bisect and its
//! checks, the API's answer, how one step queue's result becomes a verdict on its commit, and
//! the pure binary search over a commit range ([`search`]). No I/O: the worker's driver
//! (`crates/runner/src/bisect.rs`) does the git work and submits the step queues, the store keeps
//! the rows.

mod search;
#[cfg(test)]
mod tests;

pub use search::{next_step, outcome, Next, Outcome, Undecided};

use crate::validate::{NewQueue, ValidQueue, ValidationError};
use crate::{CaseStatus, QueueStatus};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};

/// Priority of a bisect's step queues when the request names none: below a queue's default
/// (5), so a bisect yields to the queues people wait for.
pub const DEFAULT_PRIORITY: i64 = 2;
/// Most commits a bisect's range (`good..bad`) may hold; a longer one ends the bisect in `error`.
pub const MAX_RANGE: usize = 10_000;
/// Longest commit subject or author kept (characters); longer ones are cut.
pub const MAX_COMMIT_TEXT: usize = 200;
/// Longest case id (as the scenario format allows).
pub const MAX_CASE_CHARS: usize = 100;
/// A case id: `[A-Za-z0-9_.-]{1,100}`, not `.` or `..` (as the scenario format allows).
pub const CASE_PATTERN: &str = r"^(?!\.\.?$)[A-Za-z0-9_.-]{1,100}$";

crate::state::string_enum!(
    /// Where a bisect is in its life: `running` until it found the first bad commit (`found`),
    /// could not decide (`undecided`, the message says why), was aborted, or failed (`error`:
    /// the repository could not be read, the range is too long).
    BisectStatus ("bisect status") { Running => "running", Found => "found", Undecided => "undecided", Aborted => "aborted", Error => "error" }
);

crate::state::string_enum!(
    /// What one step found of its commit: the scenarios pass (`good`), fail (`bad`), or the
    /// commit could not be tested (`skip`: the build failed, the emulator would not start).
    StepVerdict ("step verdict") { Good => "good", Bad => "bad", Skip => "skip" }
);

impl BisectStatus {
    /// The status every bisect starts in.
    pub const INITIAL: BisectStatus = BisectStatus::Running;

    /// True once the bisect can no longer change.
    pub fn is_finished(self) -> bool {
        self != BisectStatus::Running
    }

    /// Whether a bisect may go from `self` to `to`: a running one ends, once.
    pub fn can_become(self, to: BisectStatus) -> bool {
        self == BisectStatus::Running && to.is_finished()
    }
}

/// The body of `POST /api/v1/bisects`, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBisect {
    /// Git URL or an allowed local path, as for a queue.
    #[schema(schema_with = crate::schema::repo)]
    pub repo: String,
    /// A commit known to pass: a commit SHA (4 to 40 hex digits) or a branch or tag name.
    #[schema(schema_with = rev)]
    pub good: String,
    /// A commit known to fail, a descendant of `good`: a SHA or a branch or tag name.
    #[schema(schema_with = rev)]
    pub bad: String,
    /// Scenario files each step runs; `None` runs the repository's default set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::scenarios)]
    pub scenarios: Option<Vec<String>>,
    /// The id of the one test case that decides good or bad; other cases do not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = case_id)]
    pub case: Option<String>,
    /// Priority of the step queues, 0..=9; 2 when absent (below a queue's default).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::validate::integral"
    )]
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<i64>,
    /// Labels a worker must all have to run the step queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::labels)]
    pub labels: Option<Vec<String>>,
}

/// A bisect request that passed every check, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidBisect {
    pub repo: String,
    pub good: String,
    pub bad: String,
    pub scenarios: Option<Vec<String>>,
    pub case: Option<String>,
    pub priority: i64,
    /// Sorted, no duplicates; empty: any worker.
    pub labels: Vec<String>,
}

impl NewBisect {
    /// Checks every field; `allowed_roots` are the directories local repositories may live
    /// under. `good` and `bad` are checked for their shape only: whether they name commits,
    /// whether `good` is an ancestor of `bad`, and whether they are the same commit (also when
    /// written alike), only the repository can tell (the driver ends the bisect `error` or
    /// `undecided` with the reason).
    pub fn validate(self, allowed_roots: &[PathBuf]) -> Result<ValidBisect, ValidationError> {
        check_rev(&self.good).map_err(|m| ValidationError::new("good", m))?;
        check_rev(&self.bad).map_err(|m| ValidationError::new("bad", m))?;
        if let Some(case) = &self.case {
            check_case_id(case).map_err(|m| ValidationError::new("case", m))?;
        }
        // The fields a step queue is made of are checked as a queue's, with its messages.
        let as_queue = NewQueue {
            scenarios: self.scenarios,
            priority: Some(self.priority.unwrap_or(DEFAULT_PRIORITY)),
            labels: self.labels,
            ..NewQueue::new(self.repo, "bisect")
        }
        .validate(allowed_roots)?;
        Ok(ValidBisect {
            repo: as_queue.repo,
            good: self.good,
            bad: self.bad,
            scenarios: as_queue.scenarios,
            case: self.case,
            priority: as_queue.priority,
            labels: as_queue.labels,
        })
    }
}

/// Checks a revision as given: a branch or tag name as `git check-ref-format --branch` accepts
/// it (a SHA is one too), so it can be neither an option nor revision syntax (`main~3`, `@{1}`).
pub fn check_rev(rev: &str) -> Result<(), String> {
    crate::validate::check_branch(rev)
}

/// Checks a test case id: `[A-Za-z0-9_.-]{1,100}`, not `.` or `..`.
pub fn check_case_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.chars().count() > MAX_CASE_CHARS {
        return Err(format!("must be at most {MAX_CASE_CHARS} characters"));
    }
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    if !id.bytes().all(ok) || id == "." || id == ".." {
        return Err(format!(
            "'{}' is not a case id: letters A-Z a-z, digits, '_', '.' and '-'",
            id.escape_debug()
        ));
    }
    Ok(())
}

/// The schema of `NewBisect.good` and `.bad`.
fn rev() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(crate::schema::BRANCH_MAX_LEN))
        .pattern(Some(crate::schema::BRANCH_PATTERN))
        .description(Some(
            "A commit SHA (4 to 40 hex digits) or a branch or tag name of the repository, as \
             `git check-ref-format --branch` accepts it; whether it names a commit only the \
             repository can tell (the bisect then ends `error`).",
        ))
}

/// The schema of `NewBisect.case`.
fn case_id() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .min_length(Some(1))
        .max_length(Some(MAX_CASE_CHARS))
        .pattern(Some(CASE_PATTERN))
        .description(Some(
            "The id of the one test case that decides good or bad (in any scenario); other \
             failing cases do not count. Absent: the step queue's verdict decides.",
        ))
}

/// One commit of a bisect's range: its SHA, subject and author (`Name <email>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BisectCommit {
    pub commit: String,
    pub subject: String,
    pub author: String,
}

/// One step of a bisect: a commit tested by a queue (and, when it failed, by a second one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BisectStep {
    /// The commit's position in the range: 0 is `good`, `range_size` is `bad`.
    pub index: u64,
    pub commit: String,
    pub subject: String,
    pub author: String,
    /// The step queue.
    pub queue_id: i64,
    /// The second queue on the same commit, run when the first failed: the step is bad only
    /// if it fails too.
    pub rerun_queue_id: Option<i64>,
    /// Null while the step runs.
    pub verdict: Option<StepVerdict>,
    /// Why a step was skipped, or that it was flaky.
    pub note: Option<String>,
}

/// A bisect as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bisect {
    pub id: i64,
    pub repo: String,
    /// As given.
    pub good: String,
    /// As given.
    pub bad: String,
    /// `good` resolved to a full SHA; null until a worker read the repository.
    pub good_commit: Option<String>,
    /// `bad` resolved to a full SHA; null until a worker read the repository.
    pub bad_commit: Option<String>,
    pub scenarios: Option<Vec<String>>,
    /// The one case that decides; null: each step queue's verdict decides.
    pub case: Option<String>,
    /// Priority of the step queues.
    pub priority: i64,
    pub labels: Vec<String>,
    pub submitted_by: Option<String>,
    pub status: BisectStatus,
    /// Why it is undecided, aborted or in error.
    pub message: Option<String>,
    /// Commits in `good..bad` (`bad` included, `good` not); null until a worker read the
    /// repository.
    pub range_size: Option<u64>,
    /// The step queue being waited for (while running).
    pub current_queue: Option<i64>,
    /// The steps taken, in order.
    pub steps: Vec<BisectStep>,
    /// The first bad commit, once found.
    pub result: Option<BisectCommit>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// `GET /api/v1/bisects`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BisectList {
    pub bisects: Vec<Bisect>,
    /// Pass as `before` to get the next (older) page; null on the last page.
    pub next: Option<i64>,
}

/// The short form of a SHA (its first 7 digits), as people write it.
pub fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// The name of a bisect's step queue: `bisect #3: 1a2b3c4` (the dashboard links it back to
/// its bisect by this name), ` (re-run)` for the second queue of a step.
pub fn step_queue_name(bisect: i64, sha: &str, rerun: bool) -> String {
    let again = if rerun { " (re-run)" } else { "" };
    format!("bisect #{bisect}: {}{again}", short(sha))
}

/// A step queue: the bisect's scenarios at exactly `sha`.
pub fn step_queue(bisect: i64, b: &ValidBisect, sha: &str, rerun: bool) -> ValidQueue {
    ValidQueue {
        repo: b.repo.clone(),
        // Shown only: the queue is pinned to `commit`.
        branch: format!("bisect/{bisect}"),
        scenarios: b.scenarios.clone(),
        name: step_queue_name(bisect, sha, rerun),
        priority: b.priority,
        commit: Some(sha.to_string()),
        case_filter: None,
        origin: None,
        labels: b.labels.clone(),
        no_cache: false,
        // A failed step is run again as a queue of its own (see `outcome`); the scenario's
        // own `retries` still apply inside each.
        retries: 0,
    }
}

/// What a finished step queue says of its commit, and a note when that needs saying. With
/// `case`, only that case (in any scenario) decides: it failed: bad; it passed: good; it did
/// not run or ended in error: skip. Without, the queue's verdict decides: `passed` good,
/// `failed` bad, `error` (the build failed, the emulator would not start) skip. An aborted
/// queue is not judged here (the driver ends the bisect).
pub fn queue_verdict<'a>(
    status: QueueStatus,
    error: Option<&str>,
    cases: impl IntoIterator<Item = (&'a str, CaseStatus)>,
    case: Option<&str>,
) -> (StepVerdict, Option<String>) {
    let why = || error.map(|e| cut(first_line(e), MAX_COMMIT_TEXT));
    let Some(key) = case else {
        return match status {
            QueueStatus::Passed => (StepVerdict::Good, None),
            QueueStatus::Failed => (StepVerdict::Bad, None),
            _ => {
                let note = why().unwrap_or_else(|| format!("the queue ended {status}"));
                (StepVerdict::Skip, Some(format!("not testable: {note}")))
            }
        };
    };
    let seen: Vec<CaseStatus> = cases
        .into_iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, s)| s)
        .collect();
    if seen.contains(&CaseStatus::Failed) {
        return (StepVerdict::Bad, None);
    }
    // A flaky case (it failed, then passed when tried again) passed.
    if !seen.is_empty()
        && seen
            .iter()
            .all(|s| matches!(s, CaseStatus::Passed | CaseStatus::Flaky))
    {
        return (StepVerdict::Good, None);
    }
    let note = match (seen.contains(&CaseStatus::Error), why()) {
        (true, _) => format!("case {key} ended in error"),
        (false, Some(e)) => format!("case {key} did not run: {e}"),
        (false, None) => format!("case {key} did not run"),
    };
    (StepVerdict::Skip, Some(note))
}

/// The first line of an error; one that ends with `:` (it introduces what follows, e.g. the
/// build's last lines) without its last clause.
fn first_line(error: &str) -> &str {
    let line = error.lines().next().unwrap_or("").trim();
    match (line.strip_suffix(':'), line.rfind("; ")) {
        (Some(_), Some(at)) => &line[..at],
        (Some(head), None) => head,
        (None, _) => line,
    }
}

/// `text` cut to at most `max` characters (an ellipsis marks the cut).
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}
