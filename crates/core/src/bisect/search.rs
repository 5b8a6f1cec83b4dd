//! The binary search of a bisect, as pure functions: given the ordered range and the verdicts
//! so far, which commit is tested next, or what was found; and how a step's queues make its
//! verdict (the re-run of a failed step, in one place).
//!
//! The range is a list of commits, oldest first: index 0 is `good`, the last is `bad`, each
//! one an ancestor of the next (the first-parent line from `bad` back to `good`). `good` is
//! taken to pass and `bad` to fail without testing them, until the answer rests on one of
//! them: a first bad commit is only reported between a commit seen passing and one seen
//! failing, so an end is tested when the search narrows down to it (and a `good` that fails,
//! or a `bad` that passes, makes the bisect undecided).

use super::StepVerdict;

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Test the commit at this index.
    Test(usize),
    /// The commit at this index is the first bad one: it failed, and the commit before it
    /// passed.
    Found(usize),
    /// The verdicts cannot name a first bad commit.
    Undecided(Undecided),
}

/// Why a bisect cannot name the first bad commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undecided {
    /// The range has no commit besides `good`.
    Empty,
    /// `good` fails too.
    GoodFails,
    /// `good` could not be tested.
    GoodUntestable,
    /// `bad` passes.
    BadPasses,
    /// `bad` could not be tested.
    BadUntestable,
    /// The first bad commit is one of `first..=last`: every one of them but `last` (which
    /// failed) could not be tested, and the commit before `first` passed.
    Skipped { first: usize, last: usize },
}

/// The next step of a search over a range of `verdicts.len()` commits (index 0 is `good`, the
/// last `bad`), with the verdict of each commit tested so far.
///
/// Between the last commit that passed (`good` if none did) and the first failing one after it
/// (`bad` if none did), the untested commit nearest the middle is tested; a skipped one is
/// stepped around, to its nearest untested neighbour. When none is left, the ends are tested if
/// they were not, and the first failing commit is the answer unless commits before it were
/// skipped (then it could be any of them).
pub fn next_step(verdicts: &[Option<StepVerdict>]) -> Next {
    use StepVerdict::*;
    let n = verdicts.len();
    if n < 2 {
        return Next::Undecided(Undecided::Empty);
    }
    let last = n - 1;
    match verdicts[0] {
        Some(Bad) => return Next::Undecided(Undecided::GoodFails),
        Some(Skip) => return Next::Undecided(Undecided::GoodUntestable),
        _ => {}
    }
    match verdicts[last] {
        Some(Good) => return Next::Undecided(Undecided::BadPasses),
        Some(Skip) => return Next::Undecided(Undecided::BadUntestable),
        _ => {}
    }
    let lo = (0..n)
        .rev()
        .find(|&i| verdicts[i] == Some(Good))
        .unwrap_or(0);
    let hi = (lo + 1..n)
        .find(|&i| verdicts[i] == Some(Bad))
        .unwrap_or(last);
    let middle = lo + (hi - lo) / 2;
    let nearest = (lo + 1..hi)
        .filter(|&i| verdicts[i].is_none())
        .min_by_key(|&i| (i.abs_diff(middle), i));
    if let Some(i) = nearest {
        return Next::Test(i);
    }
    if verdicts[hi].is_none() {
        return Next::Test(hi);
    }
    if verdicts[lo].is_none() {
        return Next::Test(lo);
    }
    if hi - lo > 1 {
        return Next::Undecided(Undecided::Skipped {
            first: lo + 1,
            last: hi,
        });
    }
    Next::Found(hi)
}

/// What a step does after its queue: run again, or take a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Run a second queue on the same commit before the verdict counts.
    Rerun,
    /// The step's verdict, and a note when it is not what the first queue said.
    Verdict(StepVerdict, Option<&'static str>),
}

/// The step's outcome from its first queue's verdict and, if it ran, the re-run's. A flaky case
/// must not pass for the breaking change: a step that fails is run once more on the same
/// commit, and counts as bad only if it fails again. (The one place that decides re-runs: a
/// later change may hand them to the queue's own `retries` instead.)
pub fn outcome(first: StepVerdict, rerun: Option<StepVerdict>) -> Outcome {
    use StepVerdict::*;
    match (first, rerun) {
        (Bad, None) => Outcome::Rerun,
        (Bad, Some(Bad)) => Outcome::Verdict(Bad, None),
        (Bad, Some(Good)) => Outcome::Verdict(
            Good,
            Some("failed, then passed when run again: flaky, counted as good"),
        ),
        (Bad, Some(Skip)) => Outcome::Verdict(
            Skip,
            Some("failed, then could not be tested when run again"),
        ),
        (verdict, _) => Outcome::Verdict(verdict, None),
    }
}
