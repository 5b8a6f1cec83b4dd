use super::*;
use StepVerdict::*;

/// Runs a whole search over `n` commits (index 0 is `good`, `n - 1` is `bad`) where `oracle`
/// says what each queue on a commit shows (`run` counts from 0 per commit), with the re-run
/// rule of [`outcome`]. Returns the end, the commits tested in order, and how many queues ran.
fn bisect(
    n: usize,
    mut oracle: impl FnMut(usize, usize) -> StepVerdict,
) -> (Next, Vec<usize>, usize) {
    let mut verdicts = vec![None; n];
    let (mut tested, mut queues) = (Vec::new(), 0);
    loop {
        match next_step(&verdicts) {
            Next::Test(i) => {
                assert!(verdicts[i].is_none(), "commit {i} tested twice");
                assert!(tested.len() <= n, "the search does not end");
                tested.push(i);
                let first = oracle(i, 0);
                queues += 1;
                let verdict = match outcome(first, None) {
                    Outcome::Verdict(v, _) => v,
                    Outcome::Rerun => {
                        queues += 1;
                        match outcome(first, Some(oracle(i, 1))) {
                            Outcome::Verdict(v, _) => v,
                            Outcome::Rerun => panic!("a re-run is run once"),
                        }
                    }
                };
                verdicts[i] = Some(verdict);
            }
            end => return (end, tested, queues),
        }
    }
}

/// Commits numbered 1..=n as people count them: commit `c` is index `c - 1` (commit 1 is `good`).
fn commit(index: usize) -> usize {
    index + 1
}

/// The case: 16 commits, the first bad one is commit 11, commit 6 does not build.
#[test]
fn sixteen_commits_first_bad_eleven_six_skipped() {
    let (end, tested, _) = bisect(16, |i, _| match commit(i) {
        6 => Skip,
        c if c >= 11 => Bad,
        _ => Good,
    });
    assert_eq!(end, Next::Found(10), "commit 11");
    let tested_ok = tested.iter().filter(|&&i| commit(i) != 6).count();
    assert!(tested_ok <= 5, "at most 5 steps besides skips: {tested:?}");
    // Neither end was tested: the answer rests on commits 10 (passed) and 11 (failed).
    assert!(!tested.contains(&0) && !tested.contains(&15), "{tested:?}");
}

/// Six commits that do not build (4 to 9), the first bad one 11: the skipped ones are stepped
/// around and the answer is the same, in at most 5 tests besides the skips.
#[test]
fn six_unbuildable_commits_are_stepped_around() {
    let (end, tested, _) = bisect(16, |i, _| match commit(i) {
        4..=9 => Skip,
        c if c >= 11 => Bad,
        _ => Good,
    });
    assert_eq!(end, Next::Found(10));
    let ok = tested.iter().filter(|&&i| !(4..=9).contains(&commit(i)));
    assert!(ok.count() <= 5, "{tested:?}");
}

/// A skipped commit in the search's path: its neighbour is tested instead.
#[test]
fn a_skip_in_the_middle_tests_a_neighbour() {
    let verdicts = vec![None; 16];
    let Next::Test(first) = next_step(&verdicts) else {
        panic!("tests something")
    };
    let mut after_skip = verdicts.clone();
    after_skip[first] = Some(Skip);
    let Next::Test(second) = next_step(&after_skip) else {
        panic!("tests something")
    };
    assert_eq!(second.abs_diff(first), 1, "{first} then {second}");
}

/// Every commit between the ends skipped: undecided, naming them all.
#[test]
fn all_skipped_is_undecided() {
    let (end, tested, _) = bisect(16, |i, _| {
        if i == 0 {
            Good
        } else if i == 15 {
            Bad
        } else {
            Skip
        }
    });
    assert_eq!(
        end,
        Next::Undecided(Undecided::Skipped { first: 1, last: 15 })
    );
    // Both ends were tested before giving up: the answer rests on them.
    assert!(tested.contains(&0) && tested.contains(&15), "{tested:?}");
    assert_eq!(tested.len(), 16, "every commit once");
}

/// The first bad commit right after `good`: `good` itself is tested before it is named.
#[test]
fn bad_at_the_first_commit() {
    let (end, tested, _) = bisect(16, |i, _| if i >= 1 { Bad } else { Good });
    assert_eq!(end, Next::Found(1));
    assert_eq!(tested.last(), Some(&0), "good tested last: {tested:?}");
    assert!(tested.len() <= 6, "{tested:?}");
}

/// The first bad commit is `bad` itself: `bad` is tested before it is named.
#[test]
fn bad_at_the_last_commit() {
    let (end, tested, _) = bisect(16, |i, _| if i == 15 { Bad } else { Good });
    assert_eq!(end, Next::Found(15));
    assert_eq!(tested.last(), Some(&15), "{tested:?}");
    assert!(tested.len() <= 6, "{tested:?}");
}

#[test]
fn good_that_fails_or_bad_that_passes_is_undecided() {
    // Everything fails: the search narrows to commit 1, then finds good failing too.
    let (end, _, _) = bisect(8, |_, _| Bad);
    assert_eq!(end, Next::Undecided(Undecided::GoodFails));
    // Everything passes: bad is tested at the end and passes.
    let (end, _, _) = bisect(8, |_, _| Good);
    assert_eq!(end, Next::Undecided(Undecided::BadPasses));
    // Ends that cannot be built.
    let (end, _, _) = bisect(8, |i, _| if i == 0 { Skip } else { Bad });
    assert_eq!(end, Next::Undecided(Undecided::GoodUntestable));
    let (end, _, _) = bisect(8, |i, _| if i == 7 { Skip } else { Good });
    assert_eq!(end, Next::Undecided(Undecided::BadUntestable));
}

#[test]
fn tiny_ranges() {
    assert_eq!(next_step(&[]), Next::Undecided(Undecided::Empty));
    assert_eq!(next_step(&[None]), Next::Undecided(Undecided::Empty));
    // good and bad only: both are tested, then bad is the answer.
    let (end, tested, _) = bisect(2, |i, _| if i == 0 { Good } else { Bad });
    assert_eq!((end, tested), (Next::Found(1), vec![1, 0]));
}

/// A skipped commit right before the first failing one leaves two candidates.
#[test]
fn a_skip_next_to_the_answer_is_undecided() {
    let (end, _, _) = bisect(16, |i, _| match commit(i) {
        10 => Skip,
        c if c >= 11 => Bad,
        _ => Good,
    });
    assert_eq!(
        end,
        Next::Undecided(Undecided::Skipped { first: 9, last: 10 })
    );
}

/// A failing step runs a second queue; only a second failure counts as bad. A flaky commit
/// (fails once, then passes) counts as good, so the answer is still commit 11.
#[test]
fn failures_are_run_again_and_flaky_ones_count_as_good() {
    assert_eq!(outcome(Good, None), Outcome::Verdict(Good, None));
    assert_eq!(outcome(Skip, None), Outcome::Verdict(Skip, None));
    assert_eq!(outcome(Bad, None), Outcome::Rerun);
    assert_eq!(outcome(Bad, Some(Bad)), Outcome::Verdict(Bad, None));
    assert!(
        matches!(outcome(Bad, Some(Good)), Outcome::Verdict(Good, Some(n)) if n.contains("flaky"))
    );
    assert!(matches!(
        outcome(Bad, Some(Skip)),
        Outcome::Verdict(Skip, Some(_))
    ));

    // Commit 8 fails on its first queue only; commits 11.. always.
    let (end, tested, queues) = bisect(16, |i, run| match (commit(i), run) {
        (8, 0) => Bad,
        (c, _) if c >= 11 => Bad,
        _ => Good,
    });
    assert_eq!(end, Next::Found(10));
    assert!(tested.contains(&7), "commit 8 was tested: {tested:?}");
    let failing_steps = tested.iter().filter(|&&i| commit(i) >= 11).count();
    // One queue per step, and one more per step whose first queue failed (commit 8's too).
    assert_eq!(queues, tested.len() + failing_steps + 1);
}

#[test]
fn step_queues_are_judged_by_the_case_asked_for() {
    let cases = [("boot", CaseStatus::Passed), ("sum", CaseStatus::Failed)];
    let judge = |status, error, case| queue_verdict(status, error, cases, case).0;
    assert_eq!(judge(QueueStatus::Failed, None, None), Bad);
    assert_eq!(judge(QueueStatus::Failed, None, Some("sum")), Bad);
    assert_eq!(
        judge(QueueStatus::Failed, None, Some("boot")),
        Good,
        "other failures do not count"
    );
    assert_eq!(judge(QueueStatus::Passed, None, None), Good);
    let (verdict, note) = queue_verdict(
        QueueStatus::Error,
        Some("build failed with exit code 2 (see build.log); last lines:\nboom"),
        [] as [(&str, CaseStatus); 0],
        None,
    );
    assert_eq!(verdict, Skip);
    assert_eq!(
        note.as_deref(),
        Some("not testable: build failed with exit code 2 (see build.log)")
    );
    let (verdict, note) = queue_verdict(QueueStatus::Failed, None, cases, Some("nope"));
    assert_eq!(
        (verdict, note.as_deref()),
        (Skip, Some("case nope did not run"))
    );
    let (_, note) = queue_verdict(
        QueueStatus::Error,
        Some("emulator did not start: boom\nmore"),
        [] as [(&str, CaseStatus); 0],
        None,
    );
    assert_eq!(
        note.as_deref(),
        Some("not testable: emulator did not start: boom")
    );
    let flaky = [("sum", CaseStatus::Flaky)];
    assert_eq!(
        queue_verdict(QueueStatus::Passed, None, flaky, Some("sum")).0,
        Good,
        "a case that passed when tried again passed"
    );
    let errored = [("sum", CaseStatus::Error)];
    assert_eq!(
        queue_verdict(QueueStatus::Error, None, errored, Some("sum")).0,
        Skip
    );
}

#[test]
fn requests_are_checked_field_by_field() {
    let ok = NewBisect {
        repo: "https://git.example.com/fw.git".into(),
        good: "v1.0".into(),
        bad: "main".into(),
        ..NewBisect::default()
    };
    let valid = ok.clone().validate(&[]).unwrap();
    assert_eq!(valid.priority, DEFAULT_PRIORITY);
    const { assert!(DEFAULT_PRIORITY < crate::validate::DEFAULT_PRIORITY) };
    assert_eq!(valid.scenarios, None);
    let field = |b: NewBisect| b.validate(&[]).unwrap_err().field;
    assert_eq!(
        field(NewBisect {
            good: "".into(),
            ..ok.clone()
        }),
        "good"
    );
    assert_eq!(
        field(NewBisect {
            bad: "main~3".into(),
            ..ok.clone()
        }),
        "bad"
    );
    assert_eq!(
        field(NewBisect {
            bad: "--all".into(),
            ..ok.clone()
        }),
        "bad"
    );
    // The same end twice is the repository's to judge (undecided), not a malformed request.
    let same = NewBisect {
        bad: "v1.0".into(),
        ..ok.clone()
    };
    assert!(same.validate(&[]).is_ok());
    assert_eq!(
        field(NewBisect {
            case: Some("a b".into()),
            ..ok.clone()
        }),
        "case"
    );
    assert_eq!(
        field(NewBisect {
            case: Some("..".into()),
            ..ok.clone()
        }),
        "case"
    );
    assert_eq!(
        field(NewBisect {
            priority: Some(10),
            ..ok.clone()
        }),
        "priority"
    );
    assert_eq!(
        field(NewBisect {
            repo: "nope".into(),
            ..ok.clone()
        }),
        "repo"
    );
    let bad_scenario = NewBisect {
        scenarios: Some(vec!["../x.xml".into()]),
        ..ok.clone()
    };
    assert_eq!(field(bad_scenario), "scenarios[0]");
    let labels = NewBisect {
        labels: Some(vec!["sim".into(), "esp32".into(), "sim".into()]),
        case: Some("TC_1.a-b".into()),
        ..ok
    };
    let valid = labels.validate(&[]).unwrap();
    assert_eq!(valid.labels, ["esp32", "sim"]);
    let q = step_queue(3, &valid, &"ab".repeat(20), true);
    assert_eq!(q.name, "bisect #3: abababa (re-run)");
    assert_eq!(q.commit.as_deref(), Some("ab".repeat(20).as_str()));
    assert_eq!(q.labels, ["esp32", "sim"]);
    assert!(crate::validate::check_branch(&q.branch).is_ok());
}

#[test]
fn statuses_end_once() {
    use BisectStatus::*;
    for s in BisectStatus::ALL {
        assert_eq!(s.is_finished(), *s != Running);
        assert_eq!(Running.can_become(*s), *s != Running);
        assert!(!s.can_become(Running));
    }
    assert!(!Found.can_become(Aborted));
    assert_eq!(cut("abcdef", 3), "abc…");
    assert_eq!(cut("abc", 3), "abc");
}
