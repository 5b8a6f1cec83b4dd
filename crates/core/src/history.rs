//! A case's history across queues (issue 16): the JSON shapes of the history and compare
//! answers, and the rules on them (pass and flaky rates, change points, how two runs of a case
//! compare), written once here so the store, the server and the CLI agree. Pure: no I/O.
//!
//! A case is known by its repository (as the API shows it: [`repo_key`]), its scenario file and
//! its id in that file. Statuses are read as the database stores them ([`ResultStatus`]), which
//! includes `flaky` (a case that failed and then passed when run again).

use crate::state::string_enum;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

string_enum!(
    /// A case's status as stored: its verdict once it has one (`flaky`: it failed, then passed
    /// when run again), `pending` or `running` before.
    ResultStatus ("case status") { Pending => "pending", Running => "running", Passed => "passed", Failed => "failed", Error => "error", Skipped => "skipped", Flaky => "flaky" }
);

impl ResultStatus {
    /// A verdict that counts as passing: `passed`, or `flaky` (it passed in the end).
    pub fn is_good(self) -> bool {
        matches!(self, ResultStatus::Passed | ResultStatus::Flaky)
    }

    /// A verdict that counts as failing: `failed` or `error`.
    pub fn is_bad(self) -> bool {
        matches!(self, ResultStatus::Failed | ResultStatus::Error)
    }

    /// Whether the result counts in the rates: every verdict but `skipped`.
    pub fn is_counted(self) -> bool {
        self.is_good() || self.is_bad()
    }
}

/// The key of a repository in the history: its URL as the API shows it, credentials hidden
/// (`https://***@host/fw.git`). Queues of one repository submitted with and without
/// credentials, or with other credentials, are told apart only by what remains.
pub fn repo_key(repo: &str) -> String {
    crate::redact::redact(repo)
}

/// One result of a case: its verdict in one finished queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct HistoryResult {
    /// The queue it ran in.
    pub queue: i64,
    pub branch: String,
    /// The commit tested.
    pub commit: String,
    pub status: ResultStatus,
    /// When its queue finished.
    pub finished_at: String,
    /// How long the case ran.
    pub duration_ms: Option<u64>,
}

/// How many results of each verdict.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct HistoryCounts {
    pub passed: u64,
    pub failed: u64,
    pub error: u64,
    pub skipped: u64,
    pub flaky: u64,
}

/// A commit where the case's verdict changed from the commit before it (oldest first).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ChangePoint {
    pub commit: String,
    /// The verdict before (`passed`, `failed`, `error` or `flaky`).
    pub from: ResultStatus,
    /// The verdict at this commit.
    pub to: ResultStatus,
    /// The first queue that showed the new verdict.
    pub queue: i64,
}

/// What the results of a case add up to (see `docs/api.md`, "Case history").
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct HistoryStats {
    pub counts: HistoryCounts,
    /// passed / (passed + failed + error + flaky); null when no result counts.
    pub pass_rate: Option<f64>,
    /// Results on a flaky commit / (passed + failed + error + flaky); null when no result counts.
    pub flaky_rate: Option<f64>,
    /// Commits on which the case both passed and failed, or was `flaky`: it is flaky there.
    pub flaky_commits: Vec<String>,
    /// Where the verdict changed, oldest first.
    pub change_points: Vec<ChangePoint>,
}

/// `GET /api/v1/history`: the last results of one case, newest first, and what they add up to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CaseHistory {
    /// The repository as the API shows it (credentials hidden).
    pub repo: String,
    pub scenario: String,
    /// The case id.
    pub case: String,
    /// Only results of this branch; null: every branch.
    pub branch: Option<String>,
    pub results: Vec<HistoryResult>,
    #[serde(flatten)]
    pub stats: HistoryStats,
}

/// One case of a queue with its last results on the queue's repository and branch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CaseStrip {
    /// The task (scenario) of the queue it belongs to.
    pub task: i64,
    pub scenario: String,
    /// The case id.
    pub case: String,
    /// Newest first, up to this queue.
    pub results: Vec<HistoryResult>,
    /// It both passed and failed on one commit (or was `flaky`) among `results`.
    pub flaky: bool,
    pub pass_rate: Option<f64>,
    pub flaky_rate: Option<f64>,
}

/// `GET /api/v1/queues/{id}/history`: a page of a queue's cases, each with its history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct QueueHistory {
    pub queue: i64,
    /// The cases in run order (task, then file order).
    pub cases: Vec<CaseStrip>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next: Option<u64>,
}

/// A queue named in a comparison.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ComparedQueue {
    pub id: i64,
    pub branch: String,
    pub commit: Option<String>,
    pub status: crate::QueueStatus,
}

/// A case in both (or one) of two compared queues.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ComparedCase {
    pub scenario: String,
    /// The case id.
    pub case: String,
    pub name: String,
    /// Its status in the base queue; null: not there.
    pub base_status: Option<ResultStatus>,
    /// Its status in the head queue; null: not there.
    pub head_status: Option<ResultStatus>,
    pub base_message: Option<String>,
    pub head_message: Option<String>,
}

/// How many cases each list of a comparison has (a list shows at most [`COMPARE_LIST_CAP`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CompareCounts {
    pub newly_failing: u64,
    pub newly_passing: u64,
    pub still_failing: u64,
    pub new: u64,
    pub removed: u64,
    /// Cases in both whose verdict class did not change (passing both times, skipped, not
    /// finished).
    pub unchanged: u64,
}

/// `GET /api/v1/queues/{a}/compare/{b}`: how the cases of `head` (b) fared against `base` (a).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Comparison {
    pub base: ComparedQueue,
    pub head: ComparedQueue,
    /// Passed (or flaky) in base, failed or error in head.
    pub newly_failing: Vec<ComparedCase>,
    /// Failed or error in base, passed (or flaky) in head.
    pub newly_passing: Vec<ComparedCase>,
    /// Failed or error in both.
    pub still_failing: Vec<ComparedCase>,
    /// In head only.
    pub new: Vec<ComparedCase>,
    /// In base only.
    pub removed: Vec<ComparedCase>,
    pub counts: CompareCounts,
}

/// Most cases one list of a [`Comparison`] shows (`counts` has them all).
pub const COMPARE_LIST_CAP: usize = 500;

/// A result as the rules below need it: its queue, commit and status.
#[derive(Debug, Clone, PartialEq)]
pub struct Point<'a> {
    pub queue: i64,
    pub commit: &'a str,
    pub status: ResultStatus,
}

/// What `results` (newest first) add up to: counts, rates, flaky commits, change points.
///
/// - A commit is flaky when the case both passed and failed on it, or was `flaky` on it.
/// - A commit's verdict is `flaky` if it is flaky, else the worst of its counted results
///   (error > failed > passed); a commit with only skipped results has none.
/// - Walking the results oldest first (skipped ones left out), a change point is a result
///   whose commit's verdict differs from the previous result's commit's verdict.
pub fn stats(results: &[Point<'_>]) -> HistoryStats {
    let mut counts = HistoryCounts::default();
    let mut by_commit: HashMap<&str, (bool, bool, bool, bool)> = HashMap::new();
    for r in results {
        match r.status {
            ResultStatus::Passed => counts.passed += 1,
            ResultStatus::Failed => counts.failed += 1,
            ResultStatus::Error => counts.error += 1,
            ResultStatus::Skipped => counts.skipped += 1,
            ResultStatus::Flaky => counts.flaky += 1,
            ResultStatus::Pending | ResultStatus::Running => {}
        }
        let seen = by_commit.entry(r.commit).or_default();
        match r.status {
            ResultStatus::Passed => seen.0 = true,
            ResultStatus::Failed => seen.1 = true,
            ResultStatus::Error => seen.2 = true,
            ResultStatus::Flaky => seen.3 = true,
            _ => {}
        }
    }
    let verdict = |commit: &str| -> Option<ResultStatus> {
        let (passed, failed, error, flaky) = by_commit.get(commit).copied().unwrap_or_default();
        if flaky || (passed && failed) {
            Some(ResultStatus::Flaky)
        } else if error {
            Some(ResultStatus::Error)
        } else if failed {
            Some(ResultStatus::Failed)
        } else if passed {
            Some(ResultStatus::Passed)
        } else {
            None
        }
    };
    let counted = counts.passed + counts.failed + counts.error + counts.flaky;
    let on_flaky = results
        .iter()
        .filter(|r| r.status.is_counted() && verdict(r.commit) == Some(ResultStatus::Flaky))
        .count() as u64;
    let rate = |n: u64| (counted > 0).then(|| n as f64 / counted as f64);
    let flaky_commits: BTreeSet<&str> = results
        .iter()
        .filter(|r| verdict(r.commit) == Some(ResultStatus::Flaky))
        .map(|r| r.commit)
        .collect();
    let mut change_points = Vec::new();
    let mut before: Option<ResultStatus> = None;
    for r in results.iter().rev().filter(|r| r.status.is_counted()) {
        let Some(now) = verdict(r.commit) else {
            continue;
        };
        if let Some(was) = before.filter(|was| *was != now) {
            change_points.push(ChangePoint {
                commit: r.commit.to_string(),
                from: was,
                to: now,
                queue: r.queue,
            });
        }
        before = Some(now);
    }
    HistoryStats {
        pass_rate: rate(counts.passed),
        flaky_rate: rate(on_flaky),
        counts,
        flaky_commits: flaky_commits.into_iter().map(str::to_string).collect(),
        change_points,
    }
}

/// A case of a queue as a comparison reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Compared {
    pub scenario: String,
    pub case: String,
    pub name: String,
    pub status: ResultStatus,
    pub message: Option<String>,
}

/// Compares the cases of `head` with those of `base` (each in run order; a scenario and case
/// id seen twice in one queue counts once, the first time). Lists are in head's order (removed
/// cases in base's) and cut at [`COMPARE_LIST_CAP`].
pub fn compare(
    base: ComparedQueue,
    head: ComparedQueue,
    base_cases: Vec<Compared>,
    head_cases: Vec<Compared>,
) -> Comparison {
    let key = |c: &Compared| (c.scenario.clone(), c.case.clone());
    let mut in_base: HashMap<(String, String), Compared> = HashMap::new();
    let mut base_order = Vec::new();
    for c in base_cases {
        if let std::collections::hash_map::Entry::Vacant(slot) = in_base.entry(key(&c)) {
            base_order.push(slot.key().clone());
            slot.insert(c);
        }
    }
    let mut out = Comparison {
        base,
        head,
        newly_failing: Vec::new(),
        newly_passing: Vec::new(),
        still_failing: Vec::new(),
        new: Vec::new(),
        removed: Vec::new(),
        counts: CompareCounts::default(),
    };
    let mut seen = BTreeSet::new();
    for h in head_cases {
        let k = key(&h);
        if !seen.insert(k.clone()) {
            continue;
        }
        let b = in_base.get(&k);
        let entry = ComparedCase {
            scenario: h.scenario.clone(),
            case: h.case.clone(),
            name: h.name.clone(),
            base_status: b.map(|b| b.status),
            head_status: Some(h.status),
            base_message: b.and_then(|b| b.message.clone()),
            head_message: h.message.clone(),
        };
        let (list, n) = match b.map(|b| b.status) {
            None => (&mut out.new, &mut out.counts.new),
            Some(was) if was.is_good() && h.status.is_bad() => {
                (&mut out.newly_failing, &mut out.counts.newly_failing)
            }
            Some(was) if was.is_bad() && h.status.is_good() => {
                (&mut out.newly_passing, &mut out.counts.newly_passing)
            }
            Some(was) if was.is_bad() && h.status.is_bad() => {
                (&mut out.still_failing, &mut out.counts.still_failing)
            }
            Some(_) => {
                out.counts.unchanged += 1;
                continue;
            }
        };
        *n += 1;
        if list.len() < COMPARE_LIST_CAP {
            list.push(entry);
        }
    }
    for k in base_order {
        if seen.contains(&k) {
            continue;
        }
        let Some(b) = in_base.remove(&k) else {
            continue;
        };
        out.counts.removed += 1;
        if out.removed.len() < COMPARE_LIST_CAP {
            out.removed.push(ComparedCase {
                scenario: b.scenario,
                case: b.case,
                name: b.name,
                base_status: Some(b.status),
                head_status: None,
                base_message: b.message,
                head_message: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResultStatus::*;

    fn p(queue: i64, commit: &str, status: ResultStatus) -> Point<'_> {
        Point {
            queue,
            commit,
            status,
        }
    }

    #[test]
    fn statuses_as_stored_parse_flaky_included() {
        for s in ResultStatus::ALL {
            assert_eq!(s.as_str().parse::<ResultStatus>().ok(), Some(*s));
        }
        for s in crate::CaseStatus::ALL {
            assert_eq!(
                s.as_str().parse::<ResultStatus>().unwrap().as_str(),
                s.as_str()
            );
        }
        assert!(Flaky.is_good() && Passed.is_good() && !Skipped.is_counted());
        assert!(Error.is_bad() && Failed.is_bad() && !Running.is_counted());
    }

    #[test]
    fn rates_and_change_points_follow_the_commits() {
        // Newest first: c3 passes, c2 failed twice, c1 passed twice (and was skipped once).
        let results = [
            p(6, "c3", Passed),
            p(5, "c2", Failed),
            p(4, "c2", Error),
            p(3, "c1", Skipped),
            p(2, "c1", Passed),
            p(1, "c1", Passed),
        ];
        let s = stats(&results);
        assert_eq!(
            s.counts,
            HistoryCounts {
                passed: 3,
                failed: 1,
                error: 1,
                skipped: 1,
                flaky: 0
            }
        );
        assert_eq!(s.pass_rate, Some(0.6));
        assert_eq!(s.flaky_rate, Some(0.0));
        assert!(s.flaky_commits.is_empty());
        assert_eq!(
            s.change_points,
            vec![
                ChangePoint {
                    commit: "c2".into(),
                    from: Passed,
                    to: Error,
                    queue: 4
                },
                ChangePoint {
                    commit: "c3".into(),
                    from: Error,
                    to: Passed,
                    queue: 6
                },
            ]
        );
    }

    #[test]
    fn a_commit_that_passed_and_failed_is_flaky() {
        let results = [
            p(5, "c2", Flaky),
            p(4, "c1", Failed),
            p(3, "c1", Passed),
            p(2, "c0", Passed),
        ];
        let s = stats(&results);
        assert_eq!(s.flaky_commits, vec!["c1".to_string(), "c2".to_string()]);
        assert_eq!(s.flaky_rate, Some(0.75));
        assert_eq!(s.pass_rate, Some(0.5));
        // c0 passed, c1 and c2 are flaky: one change (no flip-flop inside c1).
        assert_eq!(s.change_points.len(), 1);
        assert_eq!(s.change_points[0].commit, "c1");
        assert_eq!(s.change_points[0].queue, 3);
        assert_eq!(s.change_points[0].to, Flaky);
        let none = stats(&[p(1, "c", Skipped)]);
        assert_eq!((none.pass_rate, none.flaky_rate), (None, None));
    }

    fn case(scenario: &str, id: &str, status: ResultStatus) -> Compared {
        Compared {
            scenario: scenario.into(),
            case: id.into(),
            name: id.to_lowercase(),
            status,
            message: status.is_bad().then(|| format!("{id} broke")),
        }
    }

    fn queue(id: i64) -> ComparedQueue {
        ComparedQueue {
            id,
            branch: "main".into(),
            commit: None,
            status: crate::QueueStatus::Passed,
        }
    }

    #[test]
    fn comparing_sorts_cases_by_what_changed() {
        let base = vec![
            case("a.xml", "A", Passed),
            case("a.xml", "B", Failed),
            case("a.xml", "C", Error),
            case("a.xml", "D", Flaky),
            case("a.xml", "GONE", Passed),
            case("b.xml", "A", Passed),
            case("a.xml", "S", Skipped),
        ];
        let head = vec![
            case("a.xml", "A", Failed),
            case("a.xml", "B", Passed),
            case("a.xml", "C", Failed),
            case("a.xml", "D", Error),
            case("a.xml", "NEW", Passed),
            case("b.xml", "A", Passed),
            case("a.xml", "S", Passed),
            case("a.xml", "A", Passed),
        ];
        let c = compare(queue(1), queue(2), base, head);
        let ids = |l: &[ComparedCase]| l.iter().map(|c| c.case.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&c.newly_failing), ["A", "D"]);
        assert_eq!(ids(&c.newly_passing), ["B"]);
        assert_eq!(ids(&c.still_failing), ["C"]);
        assert_eq!(ids(&c.new), ["NEW"]);
        assert_eq!(ids(&c.removed), ["GONE"]);
        assert_eq!(c.counts.unchanged, 2);
        let a = &c.newly_failing[0];
        assert_eq!((a.base_status, a.head_status), (Some(Passed), Some(Failed)));
        assert_eq!(a.base_message, None);
        assert_eq!(a.head_message.as_deref(), Some("A broke"));
        assert_eq!(c.removed[0].head_status, None);
    }

    #[test]
    fn lists_are_capped_but_counted() {
        let many = |status| {
            (0..COMPARE_LIST_CAP + 3)
                .map(|i| case("s.xml", &format!("T{i}"), status))
                .collect::<Vec<_>>()
        };
        let c = compare(queue(1), queue(2), many(Passed), many(Failed));
        assert_eq!(c.newly_failing.len(), COMPARE_LIST_CAP);
        assert_eq!(c.counts.newly_failing, COMPARE_LIST_CAP as u64 + 3);
    }

    #[test]
    fn the_repo_key_hides_credentials_as_the_api_does() {
        assert_eq!(repo_key("https://u:p@h/r.git"), "https://***@h/r.git");
        assert_eq!(repo_key("/srv/git/fw"), "/srv/git/fw");
    }
}
