//! The store's bisects on both backends: rows and steps, the driver's fenced claim, decisions
//! made with their step queue in one transaction, aborts, and the wake-up of other processes.

use super::*;
use crate::testdb::{on_both, TestDbRef};
use crate::CaseCaps;
use std::time::Duration;
use testarena_core::bisect::{step_queue, BisectCommit, StepVerdict};
use testarena_core::QueueStatus;

const LEASE: i64 = 60_000;

/// A bisect as the API would pass it (also used by the copy tests).
pub(crate) fn spec() -> ValidBisect {
    ValidBisect {
        repo: "https://example.com/fw.git".into(),
        good: "v1.0".into(),
        bad: "main".into(),
        scenarios: Some(vec!["s.xml".into()]),
        case: Some("TC_SUM".into()),
        priority: 2,
        labels: vec!["sim".into()],
    }
}

/// A range of `n` commits (`good` first).
fn range(n: usize) -> BisectRange {
    let commits: Vec<BisectCommit> = (0..n)
        .map(|i| BisectCommit {
            commit: format!("{i:0>40}"),
            subject: format!("commit {i}"),
            author: "A U Thor <a@example.com>".into(),
        })
        .collect();
    BisectRange {
        good_sha: commits[0].commit.clone(),
        bad_sha: commits[n - 1].commit.clone(),
        commits,
    }
}

/// The decision to test commit `index` of `range(16)` for bisect `id`.
fn step(id: i64, index: usize, rerun: bool) -> Move {
    let commit = range(16).commits[index].clone();
    let queue = step_queue(id, &spec(), &commit.commit, rerun);
    if rerun {
        Move::Rerun { queue }
    } else {
        Move::Step {
            index,
            commit,
            queue,
        }
    }
}

/// Runs queue `id` to `status` as a worker would (it must be the next one waiting).
async fn run_queue(s: &Store, id: i64, status: QueueStatus) {
    let q = s
        .claim_labelled("w", &["sim".into()], 30_000)
        .await
        .unwrap();
    let q = q.expect("the step queue waits");
    assert_eq!(q.id, id);
    s.finish_queue(id, &q.holder().unwrap(), status, None)
        .await
        .unwrap();
}

/// A bisect from creation to its answer: the range and the first step in one decision, a
/// failed step run again, the end; each decision waits for its step queue to end.
async fn a_bisect_is_decided_step_by_step(db: TestDbRef) {
    let s = db.store.clone();
    let created = s.create_bisect(&spec(), Some("ci")).await.unwrap();
    let id = created.bisect.id;
    assert_eq!(created.bisect.status, BisectStatus::Running);
    assert_eq!(created.bisect.submitted_by.as_deref(), Some("ci"));
    assert_eq!(created.bisect.spec(), spec());
    assert!(created.steps.is_empty());

    let claim = s.claim_bisect("d1", LEASE).await.unwrap().expect("new");
    assert_eq!(claim.detail.bisect.id, id);
    assert_eq!(claim.commits, None, "not listed yet");
    assert!(s.claim_bisect("d2", LEASE).await.unwrap().is_none(), "held");
    let first = Decision {
        range: Some(range(16)),
        verdict: None,
        next: step(id, 7, false),
    };
    let q1 = s
        .decide_bisect(id, &claim.holder, &first)
        .await
        .unwrap()
        .expect("a step queue");
    let queue = s.queue(q1).await.unwrap();
    assert_eq!(queue.queue.status, QueueStatus::Waiting);
    assert_eq!(queue.queue.name, format!("bisect #{id}: 0000000"));
    assert_eq!(
        queue.queue.requested_commit,
        Some(range(16).commits[7].commit.clone())
    );
    assert_eq!(queue.queue.priority, 2);
    assert_eq!(queue.queue.labels, ["sim"]);
    assert_eq!(queue.queue.submitted_by.as_deref(), Some("ci"));
    assert_eq!(queue.tasks.len(), 1);
    let d = s.bisect(id).await.unwrap().unwrap();
    assert_eq!(d.bisect.current_queue, Some(q1));
    assert_eq!(d.bisect.range_size, Some(15));
    assert_eq!(d.bisect.good_sha, Some(range(16).good_sha));
    assert_eq!(d.steps.len(), 1);
    assert_eq!((d.steps[0].commit_index, d.steps[0].queue_id), (7, q1));
    assert_eq!(d.steps[0].verdict, None);

    // Nothing to decide while the step queue waits or runs; once it ended, there is.
    assert!(s.claim_bisect("d1", LEASE).await.unwrap().is_none());
    run_queue(&s, q1, QueueStatus::Failed).await;
    let claim = s
        .claim_bisect("d2", LEASE)
        .await
        .unwrap()
        .expect("step ended");
    assert_eq!(claim.commits.as_ref().map(Vec::len), Some(16));
    assert_eq!(claim.detail.steps.len(), 1);
    assert_eq!(claim.holder, Holder::new("d2", 2));
    let again = Decision {
        range: None,
        verdict: None,
        next: step(id, 7, true),
    };
    let q2 = s
        .decide_bisect(id, &claim.holder, &again)
        .await
        .unwrap()
        .unwrap();
    assert!(s.queue(q2).await.unwrap().queue.name.ends_with("(re-run)"));
    run_queue(&s, q2, QueueStatus::Failed).await;

    let claim = s.claim_bisect("d1", LEASE).await.unwrap().unwrap();
    let end = Decision {
        range: None,
        verdict: Some((StepVerdict::Bad, None)),
        next: Move::Finish {
            status: BisectStatus::Found,
            message: None,
            result_index: Some(7),
        },
    };
    assert_eq!(
        s.decide_bisect(id, &claim.holder, &end).await.unwrap(),
        None
    );
    let d = s.bisect(id).await.unwrap().unwrap();
    assert_eq!(d.bisect.status, BisectStatus::Found);
    assert!(d.bisect.finished_at.is_some());
    assert_eq!(d.bisect.current_queue, None);
    assert_eq!(d.steps[0].rerun_queue_id, Some(q2));
    assert_eq!(d.steps[0].verdict, Some(StepVerdict::Bad));
    let result = d.result().expect("found");
    assert_eq!(result.commit.subject, "commit 7");
    assert!(
        s.claim_bisect("d1", LEASE).await.unwrap().is_none(),
        "ended"
    );

    // A bisect cannot end as running.
    let claim_free = Decision {
        range: None,
        verdict: None,
        next: Move::Finish {
            status: BisectStatus::Running,
            message: None,
            result_index: None,
        },
    };
    assert!(matches!(
        s.decide_bisect(id, &claim.holder, &claim_free).await,
        Err(StoreError::Conflict(_))
    ));
}

/// A driver whose claim ran out (and was taken over) changes nothing: its decision, renewal
/// and release fail with `ClaimLost`, and no step queue is made.
async fn a_lost_claim_decides_nothing(db: TestDbRef) {
    let s = db.store.clone();
    let id = s.create_bisect(&spec(), None).await.unwrap().bisect.id;
    let old = s.claim_bisect("d1", -1).await.unwrap().unwrap().holder;
    let new = s.claim_bisect("d2", LEASE).await.unwrap().expect("ran out");
    assert_eq!(new.holder, Holder::new("d2", 2));
    let decision = Decision {
        range: Some(range(16)),
        verdict: None,
        next: step(id, 7, false),
    };
    assert!(matches!(
        s.decide_bisect(id, &old, &decision).await,
        Err(StoreError::ClaimLost(_))
    ));
    assert!(matches!(
        s.renew_bisect(id, &old, LEASE).await,
        Err(StoreError::ClaimLost(_))
    ));
    let (queues, _) = s.list_queues(None, 10, None, CaseCaps::ALL).await.unwrap();
    assert!(queues.is_empty(), "no step queue from the lost claim");
    assert_eq!(s.bisect(id).await.unwrap().unwrap().bisect.range_size, None);
    // The same driver id with an older claim number is refused too.
    let stale = Holder::new("d2", 1);
    assert!(s.decide_bisect(id, &stale, &decision).await.is_err());
    s.renew_bisect(id, &new.holder, LEASE).await.unwrap();
    // Released for later: nobody (not even its driver) claims it before then.
    s.release_bisect(id, &new.holder, 60_000).await.unwrap();
    assert!(s.claim_bisect("d3", LEASE).await.unwrap().is_none());
    s.release_bisect(id, &new.holder, -1).await.unwrap();
    assert!(s.claim_bisect("d3", LEASE).await.unwrap().is_some());
}

/// Drivers claiming at once never hold one bisect together.
async fn concurrent_claims_never_share_a_bisect(db: TestDbRef) {
    let s = db.store.clone();
    for _ in 0..10 {
        s.create_bisect(&spec(), None).await.unwrap();
    }
    let mut handles = Vec::new();
    for d in 0..4 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(c) = s.claim_bisect(&format!("d{d}"), LEASE).await.unwrap() {
                got.push(c.detail.bisect.id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (10, 10));
}

/// An abort ends a running bisect once, says which step queue to stop, and fences out its
/// driver.
async fn an_abort_ends_the_bisect_and_fences_its_driver(db: TestDbRef) {
    let s = db.store.clone();
    let id = s.create_bisect(&spec(), None).await.unwrap().bisect.id;
    let claim = s.claim_bisect("d1", LEASE).await.unwrap().unwrap();
    let first = Decision {
        range: Some(range(16)),
        verdict: None,
        next: step(id, 7, false),
    };
    let q = s
        .decide_bisect(id, &claim.holder, &first)
        .await
        .unwrap()
        .unwrap();
    let aborted = s.abort_bisect(id, "aborted on request").await.unwrap();
    let aborted = aborted.expect("it was running");
    assert_eq!(aborted.status, BisectStatus::Aborted);
    assert_eq!(aborted.current_queue, Some(q));
    assert_eq!(aborted.message.as_deref(), Some("aborted on request"));
    assert!(s.abort_bisect(id, "again").await.unwrap().is_none());
    assert!(s.abort_bisect(999, "none").await.unwrap().is_none());
    // Its step queue ends: nothing to decide.
    run_queue(&s, q, QueueStatus::Passed).await;
    assert!(s.claim_bisect("d1", LEASE).await.unwrap().is_none());
    let late = Decision {
        range: None,
        verdict: Some((StepVerdict::Good, None)),
        next: step(id, 11, false),
    };
    assert!(matches!(
        s.decide_bisect(id, &claim.holder, &late).await,
        Err(StoreError::ClaimLost(_))
    ));
}

/// A deleted step queue leaves its step, and the bisect needs a decision.
async fn a_deleted_step_queue_needs_a_decision(db: TestDbRef) {
    let s = db.store.clone();
    let id = s.create_bisect(&spec(), None).await.unwrap().bisect.id;
    let claim = s.claim_bisect("d1", LEASE).await.unwrap().unwrap();
    let first = Decision {
        range: Some(range(16)),
        verdict: None,
        next: step(id, 7, false),
    };
    let q = s
        .decide_bisect(id, &claim.holder, &first)
        .await
        .unwrap()
        .unwrap();
    assert!(s.claim_bisect("d1", LEASE).await.unwrap().is_none());
    s.delete_queue(q).await.unwrap();
    let claim = s
        .claim_bisect("d1", LEASE)
        .await
        .unwrap()
        .expect("its queue is gone");
    assert_eq!(claim.detail.steps[0].queue_id, q);
}

/// Newest first, a page at a time, each with its own steps.
async fn bisects_are_listed_newest_first(db: TestDbRef) {
    let s = db.store.clone();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(s.create_bisect(&spec(), None).await.unwrap().bisect.id);
    }
    // Bisect ids[1] gets a step.
    while let Some(c) = s.claim_bisect("d", LEASE).await.unwrap() {
        let id = c.detail.bisect.id;
        let next = if id == ids[1] {
            step(id, 3, false)
        } else {
            Move::Finish {
                status: BisectStatus::Undecided,
                message: Some("no".into()),
                result_index: None,
            }
        };
        let d = Decision {
            range: Some(range(16)),
            verdict: None,
            next,
        };
        s.decide_bisect(id, &c.holder, &d).await.unwrap();
    }
    let (page, next) = s.list_bisects(3, None).await.unwrap();
    let got: Vec<i64> = page.iter().map(|d| d.bisect.id).collect();
    assert_eq!(got, [ids[4], ids[3], ids[2]]);
    assert_eq!(next, Some(ids[2]));
    let (rest, next) = s.list_bisects(3, Some(ids[2])).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(next, None);
    assert_eq!(rest[0].steps.len(), 1, "ids[1] has its step");
    assert!(rest[1].steps.is_empty());
    assert!(s.bisect(999).await.unwrap().is_none());
}

/// Another process's new bisect, and its step queue's end, wake the drivers at once on
/// PostgreSQL (NOTIFY); on SQLite only the slow poll sees them.
async fn another_process_wakes_the_drivers(db: TestDbRef) {
    use std::time::Instant;
    let other = Store::open(&db.url).await.unwrap();
    let s = db.store.clone();
    s.wait_for_bisects(Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let timeout = Duration::from_secs(3);
    let waiter = |s: Store| {
        tokio::spawn(async move {
            let t = Instant::now();
            s.wait_for_bisects(timeout).await;
            t.elapsed()
        })
    };
    let created = waiter(s.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = other.create_bisect(&spec(), None).await.unwrap().bisect.id;
    let created = created.await.unwrap();

    let claim = s.claim_bisect("d", LEASE).await.unwrap().unwrap();
    let first = Decision {
        range: Some(range(16)),
        verdict: None,
        next: step(id, 7, false),
    };
    let q = s
        .decide_bisect(id, &claim.holder, &first)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A wake-up kept from before (no waiter at the time) is used up first.
    s.wait_for_bisects(Duration::from_millis(1)).await;
    let ended = waiter(s.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    run_queue(&other, q, QueueStatus::Passed).await;
    let ended = ended.await.unwrap();
    if db.kind == crate::testdb::Kind::Postgres {
        assert!(created < Duration::from_secs(2), "woken after {created:?}");
        assert!(ended < Duration::from_secs(2), "woken after {ended:?}");
    } else {
        assert!(
            created >= timeout && ended >= timeout,
            "{created:?} {ended:?}"
        );
    }
    other.close().await;
}

on_both!(
    a_bisect_is_decided_step_by_step,
    a_lost_claim_decides_nothing,
    concurrent_claims_never_share_a_bisect,
    an_abort_ends_the_bisect_and_fences_its_driver,
    a_deleted_step_queue_needs_a_decision,
    bisects_are_listed_newest_first,
    another_process_wakes_the_drivers,
);
