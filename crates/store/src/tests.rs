use super::*;
use testarena_core::validate::ValidQueue;
use testarena_core::Phase;

async fn fresh() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    (Store::open(&url).await.unwrap(), dir)
}

fn vq(branch: &str, priority: i64, scenarios: Option<Vec<&str>>) -> ValidQueue {
    ValidQueue {
        repo: "https://example.com/r.git".into(),
        branch: branch.into(),
        scenarios: scenarios.map(|s| s.into_iter().map(String::from).collect()),
        name: branch.into(),
        priority,
        commit: None,
        case_filter: None,
        origin: None,
    }
}

#[tokio::test]
async fn create_get_list() {
    let (s, _d) = fresh().await;
    let a = s
        .create_queue(&vq("a", 5, Some(vec!["x.xml", "y.xml"])))
        .await
        .unwrap();
    assert_eq!(a.tasks.len(), 2);
    assert_eq!(a.queue.status, QueueStatus::Waiting);
    for i in 0..5 {
        s.create_queue(&vq(&format!("b{i}"), 5, None))
            .await
            .unwrap();
    }
    let (page, next) = s.list_queues(None, 4, None, CaseCaps::ALL).await.unwrap();
    assert_eq!(page.len(), 4);
    assert_eq!(page[0].queue.branch, "b4");
    let (rest, next2) = s.list_queues(None, 4, next, CaseCaps::ALL).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(next2, None);
    assert_eq!(rest[1].queue.id, a.queue.id);
    assert!(matches!(s.queue(999).await, Err(StoreError::NotFound(999))));
}

#[tokio::test]
async fn claim_by_priority_then_age_and_only_once() {
    let (s, _d) = fresh().await;
    let low = s.create_queue(&vq("low", 1, None)).await.unwrap().queue.id;
    let high1 = s
        .create_queue(&vq("high1", 9, None))
        .await
        .unwrap()
        .queue
        .id;
    let high2 = s
        .create_queue(&vq("high2", 9, None))
        .await
        .unwrap()
        .queue
        .id;
    let order: Vec<i64> = [
        s.claim("w1", 30_000).await.unwrap().unwrap().id,
        s.claim("w2", 30_000).await.unwrap().unwrap().id,
        s.claim("w1", 30_000).await.unwrap().unwrap().id,
    ]
    .into();
    assert_eq!(order, vec![high1, high2, low]);
    assert!(s.claim("w1", 30_000).await.unwrap().is_none());
}

#[tokio::test]
async fn concurrent_claims_never_share_a_queue() {
    let (s, _d) = fresh().await;
    for i in 0..20 {
        s.create_queue(&vq(&format!("q{i}"), 5, None))
            .await
            .unwrap();
    }
    let mut handles = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(q) = s.claim(&format!("w{w}"), 30_000).await.unwrap() {
                got.push(q.id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 20);
}

#[tokio::test]
async fn writes_need_the_claim() {
    let (s, _d) = fresh().await;
    let id = s
        .create_queue(&vq("a", 5, Some(vec!["x.xml"])))
        .await
        .unwrap()
        .queue
        .id;
    s.claim("w1", 30_000).await.unwrap().unwrap();
    s.set_phase(id, "w1", Some(Phase::Cloning)).await.unwrap();
    assert!(matches!(
        s.set_phase(id, "w2", Some(Phase::Building)).await,
        Err(StoreError::ClaimLost(_))
    ));
    let detail = s.queue(id).await.unwrap();
    let task = detail.tasks[0].0.id;
    let cases = s
        .create_cases(
            task,
            "w1",
            &[NewCase {
                key: "TC1".into(),
                name: "one".into(),
            }],
        )
        .await
        .unwrap();
    assert!(s.start_case(cases[0], "w2").await.is_err());
    s.start_case(cases[0], "w1").await.unwrap();
    let r = CaseResult {
        status: CaseStatus::Passed,
        duration_ms: Some(12),
        message: None,
    };
    s.finish_case(cases[0], "w1", &r).await.unwrap();
    s.finish_queue(id, "w1", QueueStatus::Passed, None)
        .await
        .unwrap();
    // Finished: nobody holds it any more.
    assert!(s
        .finish_queue(id, "w1", QueueStatus::Failed, None)
        .await
        .is_err());
    let detail = s.queue(id).await.unwrap();
    assert_eq!(detail.queue.status, QueueStatus::Passed);
    assert_eq!(detail.summary().passed, 1);
    assert_eq!(detail.tasks[0].1[0].duration_ms, Some(12));
}

#[tokio::test]
async fn expired_leases_are_taken_back_then_given_up() {
    let (s, _d) = fresh().await;
    let id = s.create_queue(&vq("a", 5, None)).await.unwrap().queue.id;
    s.claim("w1", -1).await.unwrap().unwrap();
    s.create_tasks(id, "w1", &["a.xml".into()]).await.unwrap();
    let (back, gone) = s.reclaim_expired(2).await.unwrap();
    assert_eq!((back, gone), (vec![id], vec![]));
    let q = s.queue(id).await.unwrap();
    assert_eq!(q.queue.status, QueueStatus::Waiting);
    assert!(
        q.tasks.is_empty(),
        "default-set tasks are made again after the next checkout"
    );
    // The old worker's writes are refused now.
    assert!(s.set_phase(id, "w1", Some(Phase::Building)).await.is_err());
    s.claim("w2", -1).await.unwrap().unwrap();
    let (back, gone) = s.reclaim_expired(2).await.unwrap();
    assert_eq!((back, gone), (vec![], vec![id]));
    let q = s.queue(id).await.unwrap();
    assert_eq!(q.queue.status, QueueStatus::Error);
    assert!(q.queue.error.unwrap().contains("2 times"));
}

#[tokio::test]
async fn abort_and_delete() {
    let (s, _d) = fresh().await;
    let waiting = s.create_queue(&vq("a", 5, None)).await.unwrap().queue.id;
    assert_eq!(
        s.abort_queue(waiting, CaseCaps::ALL)
            .await
            .unwrap()
            .queue
            .status,
        QueueStatus::Aborted
    );
    assert!(matches!(
        s.abort_queue(waiting, CaseCaps::ALL).await,
        Err(StoreError::Conflict(_))
    ));
    let running = s.create_queue(&vq("b", 5, None)).await.unwrap().queue.id;
    s.claim("w1", 30_000).await.unwrap().unwrap();
    let q = s.abort_queue(running, CaseCaps::ALL).await.unwrap();
    assert_eq!(q.queue.status, QueueStatus::Running);
    assert!(q.queue.abort_requested);
    assert!(s.renew_lease(running, "w1", 30_000).await.unwrap());
    s.delete_queue(running).await.unwrap();
    assert!(matches!(
        s.renew_lease(running, "w1", 30_000).await,
        Err(StoreError::ClaimLost(_))
    ));
    assert!(matches!(
        s.delete_queue(running).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn stale_groups_of_dead_workers() {
    let (s, _d) = fresh().await;
    let now = now_ms();
    let w = |id: &str, hb: i64| WorkerRow {
        id: id.into(),
        hostname: "h".into(),
        pid: 1,
        started_at: hb,
        heartbeat_at: hb,
        concurrency: 1,
        boot_id: "b".into(),
    };
    s.register_worker(&w("alive", now)).await.unwrap();
    s.register_worker(&w("dead", now - 600_000)).await.unwrap();
    for (pgid, worker) in [(10, "alive"), (11, "dead"), (12, "gone")] {
        let g = StaleGroup {
            pgid,
            worker_id: worker.into(),
            hostname: "h".into(),
            boot_id: "b".into(),
            queue_id: None,
            command: "qemu".into(),
        };
        s.record_group(&g).await.unwrap();
    }
    let mut stale: Vec<i32> = s
        .take_stale_groups("h", 60_000)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.pgid)
        .collect();
    stale.sort();
    assert_eq!(stale, vec![11, 12]);
    assert!(s.take_stale_groups("h", 60_000).await.unwrap().is_empty());
    assert_eq!(s.workers(60_000).await.unwrap().len(), 1);
}

#[test]
fn rfc3339_format() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(1_764_083_336_123), "2025-11-25T15:08:56.123Z");
}

#[tokio::test]
async fn changes_are_tracked_by_rev() {
    let (s, _d) = fresh().await;
    let r0 = s.current_rev().await.unwrap();
    let a = s
        .create_queue(&vq("a", 5, Some(vec!["x.xml"])))
        .await
        .unwrap()
        .queue
        .id;
    let b = s.create_queue(&vq("b", 5, None)).await.unwrap().queue.id;
    let (changed, deleted) = s.changes_since(r0, CaseCaps::ALL).await.unwrap();
    assert_eq!(
        changed.iter().map(|q| q.queue.id).collect::<Vec<_>>(),
        vec![a, b]
    );
    assert!(deleted.is_empty());
    let r1 = s.current_rev().await.unwrap();
    s.claim("w", 30_000).await.unwrap().unwrap();
    // A lease renewal is not a visible change.
    let r2 = s.current_rev().await.unwrap();
    s.renew_lease(a, "w", 30_000).await.unwrap();
    assert_eq!(s.current_rev().await.unwrap(), r2);
    let (changed, _) = s.changes_since(r1, CaseCaps::ALL).await.unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].queue.status, QueueStatus::Running);
    s.delete_queue(b).await.unwrap();
    let (_, deleted) = s.changes_since(r2, CaseCaps::ALL).await.unwrap();
    assert_eq!(deleted, vec![b]);
    assert_eq!(s.running_by_worker().await.unwrap()["w"], vec![a]);
}

/// A store whose SQLite gives up on a lock after 50 ms, and its URL.
async fn impatient() -> (Store, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let opts = StoreOptions {
        busy_timeout: std::time::Duration::from_millis(50),
        ..StoreOptions::default()
    };
    (Store::open_with(&url, &opts).await.unwrap(), dir, url)
}

/// Another connection that takes the write lock and holds it.
async fn lock_writes(url: &str) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut c)
        .await
        .unwrap();
    c
}

#[tokio::test]
async fn busy_writes_are_retried_with_a_backoff() {
    let (s, _d, url) = impatient().await;
    let mut locker = lock_writes(&url).await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    });
    // The lock outlasts SQLite's busy timeout, not the store's retries.
    let q = s.create_queue(&vq("a", 5, None)).await.unwrap();
    release.await.unwrap();
    assert_eq!(q.queue.status, QueueStatus::Waiting);
}

#[tokio::test]
async fn a_lock_held_for_good_is_reported_as_busy() {
    let (s, _d, url) = impatient().await;
    let id = s.create_queue(&vq("a", 5, None)).await.unwrap().queue.id;
    let _locker = lock_writes(&url).await;
    let started = std::time::Instant::now();
    let err = s.create_queue(&vq("b", 5, None)).await.unwrap_err();
    assert!(matches!(err, StoreError::Busy(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("database is busy"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let err = s.abort_queue(id, CaseCaps::ALL).await.unwrap_err();
    assert!(matches!(err, StoreError::Busy(_)), "{err:?}");
    // Reads still work in WAL mode.
    assert_eq!(s.queue(id).await.unwrap().queue.id, id);
}

#[tokio::test]
async fn a_full_database_is_reported_as_no_space_left() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    // SQLite's own size limit answers SQLITE_FULL, as a full disk does.
    let backend = sqlite::Sqlite::open(
        &url,
        &StoreOptions::default(),
        &[("max_page_count", "64".into())],
    )
    .await
    .unwrap();
    let s = Store::on(std::sync::Arc::new(backend));
    let mut q = vq("a", 5, None);
    q.name = "n".repeat(20_000);
    let mut err = None;
    for _ in 0..200 {
        if let Err(e) = s.create_queue(&q).await {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("the database never filled up");
    assert!(matches!(err, StoreError::DiskFull(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(
        err.to_string().starts_with("no space left on device"),
        "{err}"
    );
    let io = StoreError::from(sqlx::Error::Io(std::io::Error::from_raw_os_error(
        libc::ENOSPC,
    )));
    assert!(matches!(io, StoreError::DiskFull(_)), "{io:?}");
    assert!(matches!(
        StoreError::from(sqlx::Error::PoolTimedOut),
        StoreError::Overloaded(_)
    ));
}

#[tokio::test]
async fn one_delivery_makes_one_queue() {
    let (s, _d) = fresh().await;
    let q = vq("a", 5, Some(vec!["x.xml"]));
    let (first, created) = s.create_queue_once(&q, "d-1", CaseCaps::ALL).await.unwrap();
    assert!(created);
    let (again, created) = s.create_queue_once(&q, "d-1", CaseCaps::ALL).await.unwrap();
    assert!(!created);
    assert_eq!(again, first);
    let (other, created) = s.create_queue_once(&q, "d-2", CaseCaps::ALL).await.unwrap();
    assert!(created);
    assert_ne!(other.queue.id, first.queue.id);
    let (page, _) = s.list_queues(None, 10, None, CaseCaps::ALL).await.unwrap();
    assert_eq!(page.len(), 2);
    // Concurrent replays still make one queue.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (s, q) = (s.clone(), q.clone());
        handles.push(tokio::spawn(async move {
            s.create_queue_once(&q, "d-3", CaseCaps::ALL).await.unwrap()
        }));
    }
    let mut made = 0;
    let mut ids = Vec::new();
    for h in handles {
        let (d, created) = h.await.unwrap();
        made += usize::from(created);
        ids.push(d.queue.id);
    }
    ids.dedup();
    assert_eq!((made, ids.len()), (1, 1));
}

#[tokio::test]
async fn capped_reads_list_the_first_cases_and_count_them_all() {
    let (s, _d) = fresh().await;
    let id = s
        .create_queue(&vq("a", 5, Some(vec!["x.xml", "y.xml", "z.xml"])))
        .await
        .unwrap()
        .queue
        .id;
    s.claim("w", 30_000).await.unwrap().unwrap();
    let tasks: Vec<i64> = s
        .queue(id)
        .await
        .unwrap()
        .tasks
        .iter()
        .map(|t| t.0.id)
        .collect();
    for (t, n) in tasks.iter().zip([25, 3, 10]) {
        let cases: Vec<NewCase> = (0..n)
            .map(|i| NewCase {
                key: format!("TC_{i}"),
                name: format!("case {i}"),
            })
            .collect();
        let ids = s.create_cases(*t, "w", &cases).await.unwrap();
        let failed = CaseResult {
            status: CaseStatus::Failed,
            duration_ms: None,
            message: None,
        };
        s.finish_case(ids[n - 1], "w", &failed).await.unwrap();
    }
    let caps = CaseCaps {
        per_task: 10,
        per_queue: 12,
    };
    let full = s.queue(id).await.unwrap();
    let capped = s.queue_capped(id, caps).await.unwrap();
    assert_eq!(capped.summary(), full.summary());
    assert_eq!(capped.summary().total, 38);
    assert_eq!(capped.summary().failed, 3);
    let listed: Vec<usize> = capped.tasks.iter().map(|t| t.1.len()).collect();
    assert_eq!(listed, vec![10, 2, 0]);
    let totals: Vec<u64> = capped
        .tasks
        .iter()
        .map(|(t, cases)| capped.task_counts(t, cases).total)
        .collect();
    assert_eq!(totals, vec![25, 3, 10]);
    assert_eq!(capped.tasks[0].1[..], full.tasks[0].1[..10]);
    // A complete read lists every case.
    assert!(full
        .tasks
        .iter()
        .all(|(t, cases)| full.task_counts(t, cases).total == cases.len() as u64));
    let uncapped = s.queue_capped(id, CaseCaps::ALL).await.unwrap();
    assert_eq!(uncapped.tasks, full.tasks);
    assert_eq!(uncapped.summary(), full.summary());
    // Pages of one task.
    let (page, total) = s.task_cases(id, tasks[0], Some(9), 10).await.unwrap();
    assert_eq!(total, 25);
    assert_eq!(page.first().map(|c| c.key.as_str()), Some("TC_10"));
    assert_eq!(page.len(), 10);
    let (last, _) = s.task_cases(id, tasks[0], Some(19), 10).await.unwrap();
    assert_eq!(last.len(), 5);
    assert!(matches!(
        s.task_cases(id + 1, tasks[0], None, 10).await,
        Err(StoreError::NotFound(_))
    ));
    // Lists and change feeds are capped too.
    let (page, _) = s.list_queues(None, 5, None, caps).await.unwrap();
    assert_eq!(page[0], capped);
    let (changed, _) = s.changes_since(0, caps).await.unwrap();
    assert_eq!(changed[0], capped);
    assert_eq!(
        s.case_task(id, "TC_20", None).await.unwrap(),
        Some((0, "x.xml".to_string()))
    );
    assert_eq!(
        s.case_task(id, "TC_5", Some(tasks[2])).await.unwrap(),
        Some((2, "z.xml".to_string()))
    );
    assert_eq!(s.case_task(id, "TC_99", None).await.unwrap(), None);
}

#[tokio::test]
async fn only_verdicts_end_queues_and_cases() {
    let (s, _d) = fresh().await;
    let id = s
        .create_queue(&vq("a", 5, Some(vec!["x.xml"])))
        .await
        .unwrap()
        .queue
        .id;
    s.claim("w", 30_000).await.unwrap().unwrap();
    let task = s.queue(id).await.unwrap().tasks[0].0.id;
    let case = s
        .create_cases(
            task,
            "w",
            &[NewCase {
                key: "TC".into(),
                name: "tc".into(),
            }],
        )
        .await
        .unwrap()[0];
    let running = CaseResult {
        status: CaseStatus::Running,
        duration_ms: None,
        message: None,
    };
    assert!(matches!(
        s.finish_case(case, "w", &running).await,
        Err(StoreError::Conflict(_))
    ));
    for not_a_verdict in [QueueStatus::Waiting, QueueStatus::Running] {
        assert!(matches!(
            s.finish_queue(id, "w", not_a_verdict, None).await,
            Err(StoreError::Conflict(_))
        ));
    }
    assert_eq!(s.queue_row(id).await.unwrap().status, QueueStatus::Running);
    let before = s.operations();
    s.finish_queue(id, "w", QueueStatus::Passed, None)
        .await
        .unwrap();
    assert_eq!(s.operations(), before + 1, "one operation counted");
}
