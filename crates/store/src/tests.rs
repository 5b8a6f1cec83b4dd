use super::*;
use crate::testdb::{on_both, TestDbRef};
use testarena_core::validate::ValidQueue;
use testarena_core::Phase;

/// Worker `w`'s claim number `attempt`.
fn h(w: &str, attempt: i64) -> Holder {
    Holder::new(w, attempt)
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
        labels: Vec::new(),
        origin: None,
        no_cache: false,
        retries: 0,
    }
}

async fn create_get_list(db: TestDbRef) {
    let s = db.store.clone();
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

async fn claim_by_priority_then_age_and_only_once(db: TestDbRef) {
    let s = db.store.clone();
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

async fn concurrent_claims_never_share_a_queue(db: TestDbRef) {
    let s = db.store.clone();
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

async fn writes_need_the_claim(db: TestDbRef) {
    let s = db.store.clone();
    let id = s
        .create_queue(&vq("a", 5, Some(vec!["x.xml"])))
        .await
        .unwrap()
        .queue
        .id;
    s.claim("w1", 30_000).await.unwrap().unwrap();
    s.set_phase(id, &h("w1", 1), Some(Phase::Cloning))
        .await
        .unwrap();
    assert!(matches!(
        s.set_phase(id, &h("w2", 1), Some(Phase::Building)).await,
        Err(StoreError::ClaimLost(_))
    ));
    let detail = s.queue(id).await.unwrap();
    let task = detail.tasks[0].0.id;
    let cases = s
        .create_cases(
            task,
            &h("w1", 1),
            &[NewCase {
                key: "TC1".into(),
                name: "one".into(),
            }],
        )
        .await
        .unwrap();
    assert!(s.start_case(cases[0], &h("w2", 1)).await.is_err());
    s.start_case(cases[0], &h("w1", 1)).await.unwrap();
    let r = CaseResult {
        status: CaseStatus::Passed,
        duration_ms: Some(12),
        message: None,
    };
    s.finish_case(cases[0], &h("w1", 1), &r).await.unwrap();
    s.finish_queue(id, &h("w1", 1), QueueStatus::Passed, None)
        .await
        .unwrap();
    // Finished: nobody holds it any more.
    assert!(s
        .finish_queue(id, &h("w1", 1), QueueStatus::Failed, None)
        .await
        .is_err());
    let detail = s.queue(id).await.unwrap();
    assert_eq!(detail.queue.status, QueueStatus::Passed);
    assert_eq!(detail.summary().passed, 1);
    assert_eq!(detail.tasks[0].1[0].duration_ms, Some(12));
}

async fn expired_leases_are_taken_back_then_given_up(db: TestDbRef) {
    let s = db.store.clone();
    let id = s.create_queue(&vq("a", 5, None)).await.unwrap().queue.id;
    s.claim("w1", -1).await.unwrap().unwrap();
    s.create_tasks(id, &h("w1", 1), &["a.xml".into()])
        .await
        .unwrap();
    let (back, gone) = s.reclaim_expired(2).await.unwrap();
    assert_eq!((back, gone), (vec![id], vec![]));
    let q = s.queue(id).await.unwrap();
    assert_eq!(q.queue.status, QueueStatus::Waiting);
    assert!(
        q.tasks.is_empty(),
        "default-set tasks are made again after the next checkout"
    );
    // The old worker's writes are refused now.
    assert!(s
        .set_phase(id, &h("w1", 1), Some(Phase::Building))
        .await
        .is_err());
    s.claim("w2", -1).await.unwrap().unwrap();
    let (back, gone) = s.reclaim_expired(2).await.unwrap();
    assert_eq!((back, gone), (vec![], vec![id]));
    let q = s.queue(id).await.unwrap();
    assert_eq!(q.queue.status, QueueStatus::Error);
    assert!(q.queue.error.unwrap().contains("2 times"));
    // A queue whose abort was asked for while its worker was lost is not run again: aborted.
    let id = s.create_queue(&vq("b", 5, None)).await.unwrap().queue.id;
    s.claim("w3", -1).await.unwrap().unwrap();
    s.abort_queue(id, CaseCaps::ALL).await.unwrap();
    let (back, gone) = s.reclaim_expired(2).await.unwrap();
    assert_eq!((back, gone), (vec![], vec![id]));
    let q = s.queue(id).await.unwrap();
    assert_eq!(q.queue.status, QueueStatus::Aborted);
    assert!(q.queue.error.unwrap().contains("aborted on request"));
}

async fn abort_and_delete(db: TestDbRef) {
    let s = db.store.clone();
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
    assert!(s.renew_lease(running, &h("w1", 1), 30_000).await.unwrap());
    s.delete_queue(running).await.unwrap();
    assert!(matches!(
        s.renew_lease(running, &h("w1", 1), 30_000).await,
        Err(StoreError::ClaimLost(_))
    ));
    assert!(matches!(
        s.delete_queue(running).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn stale_groups_of_dead_workers(db: TestDbRef) {
    let s = db.store.clone();
    let now = now_ms();
    let w = |id: &str, hb: i64| WorkerRow {
        id: id.into(),
        hostname: "h".into(),
        pid: 1,
        started_at: hb,
        heartbeat_at: hb,
        concurrency: 1,
        boot_id: "b".into(),
        version: "0.1.0".into(),
        labels: vec!["esp32".into()],
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
    let alive = s.workers(60_000).await.unwrap();
    assert_eq!(alive.len(), 1);
    assert_eq!(
        (alive[0].version.as_str(), &alive[0].labels[..]),
        ("0.1.0", &["esp32".to_string()][..])
    );
}

fn labelled(branch: &str, priority: i64, labels: &[&str]) -> ValidQueue {
    ValidQueue {
        labels: labels.iter().map(|l| l.to_string()).collect(),
        ..vq(branch, priority, None)
    }
}

async fn a_worker_claims_only_queues_whose_labels_it_all_has(db: TestDbRef) {
    let s = db.store.clone();
    let esp = s
        .create_queue(&labelled("esp", 9, &["esp32"]))
        .await
        .unwrap()
        .queue;
    assert_eq!(esp.labels, ["esp32"]);
    let both = s
        .create_queue(&labelled("both", 8, &["esp32", "sim"]))
        .await
        .unwrap()
        .queue
        .id;
    let plain = s
        .create_queue(&vq("plain", 1, None))
        .await
        .unwrap()
        .queue
        .id;
    let l = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // No labels: only the queue that asks for none, whatever its priority.
    let got = s.claim("bare", 30_000).await.unwrap().unwrap();
    assert_eq!((got.id, got.labels.len()), (plain, 0));
    assert!(s.claim("bare", 30_000).await.unwrap().is_none());
    // A worker with sim alone lacks esp32.
    assert!(s
        .claim_labelled("sim", &l(&["sim"]), 30_000)
        .await
        .unwrap()
        .is_none());
    // esp32 (and more): the esp32 queue, not the one that also asks for sim.
    let got = s
        .claim_labelled("esp", &l(&["esp32", "qemu-system-xtensa"]), 30_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, esp.id);
    assert!(s
        .claim_labelled("esp", &l(&["esp32"]), 30_000)
        .await
        .unwrap()
        .is_none());
    let got = s
        .claim_labelled("full", &l(&["sim", "esp32"]), 30_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.id, &got.labels[..]), (both, &l(&["esp32", "sim"])[..]));
}

async fn a_handed_back_queue_waits_again_and_starts_over(db: TestDbRef) {
    let s = db.store.clone();
    let id = s
        .create_queue(&vq("a", 5, Some(vec!["x.xml"])))
        .await
        .unwrap()
        .queue
        .id;
    let q = s.claim("w1", 30_000).await.unwrap().unwrap();
    assert_eq!(q.attempts, 1);
    let task = s.queue(id).await.unwrap().tasks[0].0.id;
    let cases = [NewCase {
        key: "T1".into(),
        name: "one".into(),
    }];
    let ids = s.create_cases(task, &h("w1", 1), &cases).await.unwrap();
    s.start_case(ids[0], &h("w1", 1)).await.unwrap();
    s.set_task(task, &h("w1", 1), CaseStatus::Running, None)
        .await
        .unwrap();
    assert!(
        !s.hand_back(id, &h("other", 1)).await.unwrap(),
        "only the holder hands back"
    );
    assert!(s.hand_back(id, &h("w1", 1)).await.unwrap());
    let d = s.queue(id).await.unwrap();
    assert_eq!(d.queue.status, QueueStatus::Waiting);
    assert_eq!(
        (
            d.queue.attempts,
            d.queue.worker_id.as_deref(),
            d.queue.error.as_deref()
        ),
        (1, None, None),
        "attempts counts claims (and fences them): it stays"
    );
    assert_eq!(d.tasks.len(), 1);
    assert_eq!(d.tasks[0].0.status, CaseStatus::Pending);
    assert!(
        d.tasks[0].1.is_empty(),
        "the cases of the attempt are dropped"
    );
    assert!(
        !s.hand_back(id, &h("w1", 1)).await.unwrap(),
        "not held any more"
    );
    assert!(matches!(
        s.renew_lease(id, &h("w1", 1), 30_000).await,
        Err(StoreError::ClaimLost(_))
    ));
    let again = s.claim("w2", 30_000).await.unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (id, 2));
}

#[test]
fn rfc3339_format() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(1_764_083_336_123), "2025-11-25T15:08:56.123Z");
}

async fn changes_are_tracked_by_rev(db: TestDbRef) {
    let s = db.store.clone();
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
    s.renew_lease(a, &h("w", 1), 30_000).await.unwrap();
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

async fn one_delivery_makes_one_queue(db: TestDbRef) {
    let s = db.store.clone();
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

fn key(caller: &str, key: &str, request: &str) -> SubmitKey {
    SubmitKey {
        caller: caller.into(),
        key: key.into(),
        request: request.into(),
    }
}

async fn one_idempotency_key_makes_one_queue(db: TestDbRef) {
    let s = db.store.clone();
    let q = vq("a", 5, Some(vec!["x.xml"]));
    let k = key("alice", "k-1", "req-1");
    let Keyed::Created(first) = s
        .create_queue_keyed(&q, &k, Some("alice-token"), CaseCaps::ALL)
        .await
        .unwrap()
    else {
        panic!("the first submit with a key makes a queue")
    };
    assert_eq!(first.tasks.len(), 1);
    assert_eq!(first.queue.submitted_by.as_deref(), Some("alice-token"));
    // The same key and request again: the same queue, nothing new.
    let again = s
        .create_queue_keyed(&q, &k, Some("alice-token"), CaseCaps::ALL)
        .await
        .unwrap();
    assert_eq!(again, Keyed::Replayed(first.clone()));
    assert_eq!(
        s.keyed_earlier(&k, CaseCaps::ALL).await.unwrap(),
        Some(Keyed::Replayed(first.clone()))
    );
    // The same key with another request is refused, and names the queue it made.
    let other = key("alice", "k-1", "req-2");
    let reused = s
        .create_queue_keyed(&q, &other, None, CaseCaps::ALL)
        .await
        .unwrap();
    assert_eq!(reused, Keyed::Reused(first.queue.id));
    // Keys are scoped by caller: another caller's (or an anonymous) "k-1" is another key.
    for caller in ["bob", ""] {
        let theirs = key(caller, "k-1", "req-1");
        match s
            .create_queue_keyed(&q, &theirs, None, CaseCaps::ALL)
            .await
            .unwrap()
        {
            Keyed::Created(d) => assert_ne!(d.queue.id, first.queue.id),
            other => panic!("{caller:?}: {other:?}"),
        }
    }
    assert_eq!(
        s.keyed_earlier(&key("carol", "k-1", "req-1"), CaseCaps::ALL)
            .await
            .unwrap(),
        None
    );
    // A key is no delivery, and a delivery no key.
    let (by_hook, created) = s.create_queue_once(&q, "k-1", CaseCaps::ALL).await.unwrap();
    assert!(created);
    assert_ne!(by_hook.queue.id, first.queue.id);
    let (page, _) = s.list_queues(None, 10, None, CaseCaps::ALL).await.unwrap();
    assert_eq!(page.len(), 4);
    // Concurrent tries with one key make one queue; every try gets it.
    let k = key("alice", "k-2", "req-1");
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (s, q, k) = (s.clone(), q.clone(), k.clone());
        handles.push(tokio::spawn(async move {
            s.create_queue_keyed(&q, &k, None, CaseCaps::ALL)
                .await
                .unwrap()
        }));
    }
    let (mut made, mut ids) = (0, Vec::new());
    for h in handles {
        match h.await.unwrap() {
            Keyed::Created(d) => {
                made += 1;
                ids.push(d.queue.id);
            }
            Keyed::Replayed(d) => ids.push(d.queue.id),
            Keyed::Reused(id) => panic!("same request refused as reused ({id})"),
        }
    }
    ids.dedup();
    assert_eq!((made, ids.len()), (1, 1));
    // A deleted queue frees its key: the next submit makes a new queue.
    s.delete_queue(ids[0]).await.unwrap();
    assert_eq!(s.keyed_earlier(&k, CaseCaps::ALL).await.unwrap(), None);
    match s
        .create_queue_keyed(&q, &k, None, CaseCaps::ALL)
        .await
        .unwrap()
    {
        Keyed::Created(d) => assert_ne!(d.queue.id, ids[0]),
        other => panic!("{other:?}"),
    }
}

async fn capped_reads_list_the_first_cases_and_count_them_all(db: TestDbRef) {
    let s = db.store.clone();
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
        let ids = s.create_cases(*t, &h("w", 1), &cases).await.unwrap();
        let failed = CaseResult {
            status: CaseStatus::Failed,
            duration_ms: None,
            message: None,
        };
        s.finish_case(ids[n - 1], &h("w", 1), &failed)
            .await
            .unwrap();
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
    let found = |f: Option<crate::FoundCase>| f.map(|f| (f.task_position, f.scenario, f.case.key));
    assert_eq!(
        found(s.case_task(id, "TC_20", None).await.unwrap()),
        Some((0, "x.xml".to_string(), "TC_20".to_string()))
    );
    assert_eq!(
        found(s.case_task(id, "TC_5", Some(tasks[2])).await.unwrap()),
        Some((2, "z.xml".to_string(), "TC_5".to_string()))
    );
    assert_eq!(s.case_task(id, "TC_99", None).await.unwrap(), None);
}

async fn only_verdicts_end_queues_and_cases(db: TestDbRef) {
    let s = db.store.clone();
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
            &h("w", 1),
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
        s.finish_case(case, &h("w", 1), &running).await,
        Err(StoreError::Conflict(_))
    ));
    for not_a_verdict in [QueueStatus::Waiting, QueueStatus::Running] {
        assert!(matches!(
            s.finish_queue(id, &h("w", 1), not_a_verdict, None).await,
            Err(StoreError::Conflict(_))
        ));
    }
    assert_eq!(s.queue_row(id).await.unwrap().status, QueueStatus::Running);
    let before = s.operations();
    s.finish_queue(id, &h("w", 1), QueueStatus::Passed, None)
        .await
        .unwrap();
    assert_eq!(s.operations(), before + 1, "one operation counted");
}

/// Fencing: a worker whose lease ran out and whose queue was claimed again, even by the same
/// worker id, changes nothing of the newer attempt; the newer attempt's writes all go through.
async fn a_lost_claim_changes_nothing_of_the_newer_attempt(db: TestDbRef) {
    let s = db.store.clone();
    let id = s
        .create_queue(&vq("a", 5, Some(vec!["x.xml"])))
        .await
        .unwrap()
        .queue
        .id;
    let first = s.claim("w1", -1).await.unwrap().unwrap();
    let old = first.holder().unwrap();
    assert_eq!(old, h("w1", 1));
    let task = s.queue(id).await.unwrap().tasks[0].0.id;
    let one = [NewCase {
        key: "TC1".into(),
        name: "one".into(),
    }];
    s.create_cases(task, &old, &one).await.unwrap();
    // The lease ran out; the same worker id claims the queue again (another slot of it).
    assert_eq!(s.reclaim_expired(3).await.unwrap().0, vec![id]);
    let second = s.claim("w1", 30_000).await.unwrap().unwrap();
    let new = second.holder().unwrap();
    assert_eq!(new, h("w1", 2));
    let cases = s.create_cases(task, &new, &one).await.unwrap();
    s.set_phase(id, &new, Some(Phase::Testing)).await.unwrap();
    s.start_case(cases[0], &new).await.unwrap();
    let before = s.queue(id).await.unwrap();
    // Every write of the old attempt is refused and changes nothing.
    let lost = |r: Result<()>| assert!(matches!(r, Err(StoreError::ClaimLost(_))), "{r:?}");
    let verdict = CaseResult {
        status: CaseStatus::Failed,
        duration_ms: Some(1),
        message: Some("stale".into()),
    };
    lost(s.set_phase(id, &old, Some(Phase::Reporting)).await);
    lost(s.set_commit(id, &old, &"b".repeat(40)).await);
    lost(
        s.set_task(task, &old, CaseStatus::Error, Some("stale"))
            .await,
    );
    lost(s.start_case(cases[0], &old).await);
    lost(s.finish_case(cases[0], &old, &verdict).await);
    lost(s.close_unfinished(id, &old, "stale").await);
    lost(
        s.finish_queue(id, &old, QueueStatus::Failed, Some("stale"))
            .await,
    );
    assert!(matches!(
        s.create_cases(task, &old, &one).await,
        Err(StoreError::ClaimLost(_))
    ));
    assert!(matches!(
        s.create_tasks(id, &old, &["y.xml".into()]).await,
        Err(StoreError::ClaimLost(_))
    ));
    assert!(matches!(
        s.renew_lease(id, &old, 30_000).await,
        Err(StoreError::ClaimLost(_))
    ));
    assert!(!s.hand_back(id, &old).await.unwrap());
    assert_eq!(s.queue(id).await.unwrap(), before, "nothing changed");
    // The newer attempt carries on to its verdict.
    assert!(!s.renew_lease(id, &new, 30_000).await.unwrap());
    let passed = CaseResult {
        status: CaseStatus::Passed,
        duration_ms: Some(2),
        message: None,
    };
    s.finish_case(cases[0], &new, &passed).await.unwrap();
    s.finish_queue(id, &new, QueueStatus::Passed, None)
        .await
        .unwrap();
    let after = s.queue(id).await.unwrap();
    assert_eq!(after.queue.status, QueueStatus::Passed);
    assert_eq!(after.summary().passed, 1);
}

/// Waiters wake when another process adds work or changes a queue: at once on PostgreSQL (its
/// NOTIFY), after the poll's timeout on SQLite (no signal between processes).
async fn another_process_wakes_the_waiters(db: TestDbRef) {
    use std::time::{Duration, Instant};
    let other = Store::open(&db.url).await.unwrap();
    let s = db.store.clone();
    // The first wait starts listening; give the listener time to connect.
    s.wait_for_work(Duration::from_millis(1)).await;
    s.wait_for_change(Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let timeout = Duration::from_secs(3);
    let (w, c) = (s.clone(), s.clone());
    let work = tokio::spawn(async move {
        let t = Instant::now();
        w.wait_for_work(timeout).await;
        t.elapsed()
    });
    let change = tokio::spawn(async move {
        let t = Instant::now();
        c.wait_for_change(timeout).await;
        t.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    other.create_queue(&vq("a", 5, None)).await.unwrap();
    let (work, change) = (work.await.unwrap(), change.await.unwrap());
    if db.kind == crate::testdb::Kind::Postgres {
        assert!(s.notifies());
        assert!(work < Duration::from_secs(2), "woken after {work:?}");
        assert!(change < Duration::from_secs(2), "woken after {change:?}");
    } else {
        assert!(!s.notifies());
        assert!(work >= timeout && change >= timeout, "{work:?} {change:?}");
    }
    other.close().await;
}

/// A queue's files: chunks in order, read by offset across chunks, fenced by the claim; a new
/// attempt starts every file over but the queue log, which goes on; deleting the queue
/// deletes them; another process's readers are woken (PostgreSQL's NOTIFY).
async fn files_are_chunks_fenced_by_the_claim(db: TestDbRef) {
    use std::time::{Duration, Instant};
    let s = db.store.clone();
    let id = s.create_queue(&vq("a", 5, None)).await.unwrap().queue.id;
    let first = s.claim("w1", -1).await.unwrap().unwrap().holder().unwrap();
    let chunk = |name: &str, start: i64, data: &str| Chunk {
        name: name.into(),
        start,
        data: data.as_bytes().to_vec(),
    };
    assert_eq!(s.restart_files(id, &first, "queue.log").await.unwrap(), 0);
    s.put_chunks(
        id,
        &first,
        &[
            chunk("queue.log", 0, "one\n"),
            chunk("01-x/TC.log", 0, "tc\n"),
        ],
    )
    .await
    .unwrap();
    // The same chunk again (an answer lost, the write tried again) changes nothing.
    s.put_chunks(
        id,
        &first,
        &[
            chunk("queue.log", 0, "one\n"),
            chunk("queue.log", 4, "two\n"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        s.read_file(id, "queue.log", 0, 100).await.unwrap(),
        b"one\ntwo\n"
    );
    assert_eq!(s.read_file(id, "queue.log", 2, 4).await.unwrap(), b"e\ntw");
    assert_eq!(s.read_file(id, "queue.log", 8, 4).await.unwrap(), b"");
    assert_eq!(s.read_file(id, "nothing", 0, 4).await.unwrap(), b"");
    assert_eq!(s.file_len(id, "queue.log").await.unwrap(), 8);
    assert_eq!(s.file_len(id, "nothing").await.unwrap(), 0);
    assert_eq!(
        s.files(id).await.unwrap(),
        vec![("01-x/TC.log".to_string(), 3), ("queue.log".to_string(), 8)]
    );
    // The lease ran out and the queue was claimed again: the old attempt writes nothing.
    assert_eq!(s.reclaim_expired(3).await.unwrap().0, vec![id]);
    let second = s
        .claim("w2", 30_000)
        .await
        .unwrap()
        .unwrap()
        .holder()
        .unwrap();
    let lost = s
        .put_chunks(id, &first, &[chunk("queue.log", 8, "stale\n")])
        .await;
    assert!(matches!(lost, Err(StoreError::ClaimLost(_))), "{lost:?}");
    assert!(matches!(
        s.restart_files(id, &first, "queue.log").await,
        Err(StoreError::ClaimLost(_))
    ));
    assert!(matches!(
        s.remove_file(id, &first, "queue.log").await,
        Err(StoreError::ClaimLost(_))
    ));
    assert_eq!(s.restart_files(id, &second, "queue.log").await.unwrap(), 8);
    assert_eq!(
        s.files(id).await.unwrap(),
        vec![("queue.log".to_string(), 8)]
    );
    // Another process's reader wakes on new chunks (PostgreSQL); SQLite's waits out its poll.
    let other = Store::open(&db.url).await.unwrap();
    other.wait_for_files(Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiter = other.clone();
    let woken = tokio::spawn(async move {
        let t = Instant::now();
        waiter.wait_for_files(Duration::from_secs(3)).await;
        t.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.put_chunks(id, &second, &[chunk("queue.log", 8, "three\n")])
        .await
        .unwrap();
    let woken = woken.await.unwrap();
    if db.kind == crate::testdb::Kind::Postgres {
        assert!(woken < Duration::from_secs(2), "woken after {woken:?}");
    }
    assert_eq!(
        other.read_file(id, "queue.log", 4, 100).await.unwrap(),
        b"two\nthree\n"
    );
    s.remove_file(id, &second, "queue.log").await.unwrap();
    assert_eq!(s.file_len(id, "queue.log").await.unwrap(), 0);
    s.put_chunks(id, &second, &[chunk("junit.xml", 0, "<x/>")])
        .await
        .unwrap();
    s.finish_queue(id, &second, QueueStatus::Passed, None)
        .await
        .unwrap();
    s.delete_queue(id).await.unwrap();
    assert!(
        other.files(id).await.unwrap().is_empty(),
        "deleted with the queue"
    );
    other.close().await;
}

/// A batch of case starts and verdicts is written whole, with each case's range of the queue
/// log; a batch with a case of a lost claim changes nothing.
async fn case_batches_record_log_ranges_all_or_nothing(db: TestDbRef) {
    let s = db.store.clone();
    let id = s
        .create_queue(&vq("b", 5, Some(vec!["x.xml"])))
        .await
        .unwrap()
        .queue
        .id;
    let w = s
        .claim("w", 30_000)
        .await
        .unwrap()
        .unwrap()
        .holder()
        .unwrap();
    let task = s.queue(id).await.unwrap().tasks[0].0.id;
    let new = |k: &str| NewCase {
        key: k.into(),
        name: k.into(),
    };
    let cases = s
        .create_cases(task, &w, &[new("A"), new("B")])
        .await
        .unwrap();
    let passed = CaseResult {
        status: CaseStatus::Passed,
        duration_ms: Some(3),
        message: None,
    };
    let batch = [
        CaseUpdate::Started {
            case_id: cases[0],
            at: 10,
            log_from: Some(100),
        },
        CaseUpdate::Finished {
            case_id: cases[0],
            at: 13,
            result: passed.clone(),
            log_to: Some(250),
        },
        CaseUpdate::Started {
            case_id: cases[1],
            at: 14,
            log_from: Some(250),
        },
    ];
    s.record_cases(&w, &batch).await.unwrap();
    let found = s.case_task(id, "A", None).await.unwrap().unwrap().case;
    assert_eq!(
        (found.status, found.log_from, found.log_to),
        (CaseStatus::Passed, Some(100), Some(250))
    );
    let found = s.case_task(id, "B", None).await.unwrap().unwrap().case;
    assert_eq!(
        (found.status, found.log_from, found.log_to),
        (CaseStatus::Running, Some(250), None)
    );
    // Another queue's case in the batch: nothing of it is written.
    let other = s
        .create_queue(&vq("o", 5, Some(vec!["y.xml"])))
        .await
        .unwrap()
        .queue
        .id;
    let w2 = s
        .claim("w2", 30_000)
        .await
        .unwrap()
        .unwrap()
        .holder()
        .unwrap();
    let otask = s.queue(other).await.unwrap().tasks[0].0.id;
    let ocase = s.create_cases(otask, &w2, &[new("C")]).await.unwrap()[0];
    let mixed = [
        CaseUpdate::Finished {
            case_id: cases[1],
            at: 20,
            result: passed,
            log_to: Some(300),
        },
        CaseUpdate::Started {
            case_id: ocase,
            at: 21,
            log_from: Some(0),
        },
    ];
    assert!(
        matches!(s.record_cases(&w, &mixed).await, Err(StoreError::ClaimLost(c)) if c == ocase)
    );
    let found = s.case_task(id, "B", None).await.unwrap().unwrap().case;
    assert_eq!(
        (found.status, found.log_to),
        (CaseStatus::Running, None),
        "rolled back"
    );
    // One case three times in a batch (a try failed and the next began): written as applying
    // the updates in order would leave it.
    let failed = CaseResult {
        status: CaseStatus::Failed,
        duration_ms: Some(7),
        message: Some("try 1 of 2 failed".into()),
    };
    let again = [
        CaseUpdate::Finished {
            case_id: cases[1],
            at: 31,
            result: failed,
            log_to: Some(450),
        },
        CaseUpdate::Started {
            case_id: cases[1],
            at: 32,
            log_from: Some(450),
        },
    ];
    s.record_cases(&w, &again).await.unwrap();
    let found = s.case_task(id, "B", None).await.unwrap().unwrap().case;
    assert_eq!(
        (
            found.status,
            found.log_from,
            found.log_to,
            found.duration_ms,
            found.message.as_deref()
        ),
        (
            CaseStatus::Running,
            Some(450),
            Some(450),
            Some(7),
            Some("try 1 of 2 failed")
        )
    );
}

/// The build cache's columns: `no_cache` as submitted, `build_cached_from` set by the holder
/// only (a lost claim changes nothing).
async fn no_cache_and_build_cached_from_round_trip(db: TestDbRef) {
    let s = db.store.clone();
    let plain = s.create_queue(&vq("a", 5, None)).await.unwrap().queue;
    assert!(!plain.no_cache);
    assert_eq!(plain.build_cached_from, None);
    let forced = ValidQueue {
        no_cache: true,
        ..vq("b", 9, None)
    };
    let id = s.create_queue(&forced).await.unwrap().queue.id;
    assert!(s.queue_row(id).await.unwrap().no_cache);
    let claimed = s.claim("w1", -1).await.unwrap().unwrap();
    assert_eq!(claimed.id, id, "the higher priority first");
    assert!(claimed.no_cache);
    let old = claimed.holder().unwrap();
    s.set_build_cached_from(id, &old, Some(plain.id))
        .await
        .unwrap();
    assert_eq!(
        s.queue_row(id).await.unwrap().build_cached_from,
        Some(plain.id)
    );
    assert_eq!(s.reclaim_expired(3).await.unwrap().0, vec![id]);
    let again = s.claim("w1", 30_000).await.unwrap().unwrap();
    assert_eq!(again.id, id);
    assert!(matches!(
        s.set_build_cached_from(id, &old, None).await,
        Err(StoreError::ClaimLost(_))
    ));
    assert_eq!(
        s.queue_row(id).await.unwrap().build_cached_from,
        Some(plain.id)
    );
}

/// Retries (issue 16): `retries` as submitted; a flaky case is a verdict of its own, counted
/// apart from `passed` by every read (whole, capped, and the answer built in SQL), and a
/// task may end flaky.
async fn retries_round_trip_and_flaky_cases_are_counted(db: TestDbRef) {
    let s = db.store.clone();
    let id = s
        .create_queue(&ValidQueue {
            retries: 4,
            ..vq("a", 5, Some(vec!["x.xml"]))
        })
        .await
        .unwrap()
        .queue
        .id;
    assert_eq!(s.queue_row(id).await.unwrap().retries, 4);
    let claimed = s.claim("w", 30_000).await.unwrap().unwrap();
    assert_eq!(claimed.retries, 4);
    let holder = claimed.holder().unwrap();
    let task = s.queue(id).await.unwrap().tasks[0].0.id;
    let cases: Vec<NewCase> = (0..3)
        .map(|i| NewCase {
            key: format!("TC_{i}"),
            name: String::new(),
        })
        .collect();
    let ids = s.create_cases(task, &holder, &cases).await.unwrap();
    for (c, status) in ids
        .iter()
        .zip([CaseStatus::Flaky, CaseStatus::Passed, CaseStatus::Flaky])
    {
        s.start_case(*c, &holder).await.unwrap();
        let result = CaseResult {
            status,
            duration_ms: Some(10),
            message: None,
        };
        s.finish_case(*c, &holder, &result).await.unwrap();
    }
    s.set_task(task, &holder, CaseStatus::Running, None)
        .await
        .unwrap();
    s.set_task(task, &holder, CaseStatus::Flaky, None)
        .await
        .unwrap();
    let full = s.queue(id).await.unwrap();
    let sum = full.summary();
    assert_eq!((sum.total, sum.passed, sum.flaky), (3, 1, 2));
    assert_eq!(full.tasks[0].0.status, CaseStatus::Flaky);
    let capped = s
        .queue_capped(
            id,
            CaseCaps {
                per_task: 1,
                per_queue: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(capped.summary(), sum);
    let json = s.queue_json(id, CaseCaps::ALL, 60_000).await.unwrap().json;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["retries"], 4);
    assert_eq!(v["summary"]["flaky"], 2);
    assert_eq!(v["summary"]["passed"], 1);
    assert_eq!(v["tasks"][0]["status"], "flaky");
}

on_both!(
    retries_round_trip_and_flaky_cases_are_counted,
    no_cache_and_build_cached_from_round_trip,
    case_batches_record_log_ranges_all_or_nothing,
    files_are_chunks_fenced_by_the_claim,
    another_process_wakes_the_waiters,
    a_lost_claim_changes_nothing_of_the_newer_attempt,
    create_get_list,
    claim_by_priority_then_age_and_only_once,
    concurrent_claims_never_share_a_queue,
    writes_need_the_claim,
    expired_leases_are_taken_back_then_given_up,
    abort_and_delete,
    stale_groups_of_dead_workers,
    a_worker_claims_only_queues_whose_labels_it_all_has,
    a_handed_back_queue_waits_again_and_starts_over,
    changes_are_tracked_by_rev,
    one_delivery_makes_one_queue,
    one_idempotency_key_makes_one_queue,
    capped_reads_list_the_first_cases_and_count_them_all,
    only_verdicts_end_queues_and_cases,
);

/// PostgreSQL: a claim skips a queue another transaction has locked (another worker claiming
/// it right now) instead of waiting for it, and takes the next one in order.
#[tokio::test]
async fn postgres_claims_skip_locked_queues() {
    crate::testdb::run(crate::testdb::Kind::Postgres, |db: TestDbRef| async move {
        use sqlx::Connection;
        let s = db.store.clone();
        let first = s.create_queue(&vq("a", 9, None)).await.unwrap().queue.id;
        let second = s.create_queue(&vq("b", 5, None)).await.unwrap().queue.id;
        let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let mut tx = other.begin().await.unwrap();
        sqlx::query("SELECT id FROM queues WHERE id = $1 FOR UPDATE")
            .bind(first)
            .execute(&mut *tx)
            .await
            .unwrap();
        let claimed = tokio::time::timeout(std::time::Duration::from_secs(5), s.claim("w", 30_000))
            .await
            .expect("the claim waited for the locked queue")
            .unwrap()
            .unwrap();
        assert_eq!(claimed.id, second);
        tx.rollback().await.unwrap();
        assert_eq!(s.claim("w", 30_000).await.unwrap().unwrap().id, first);
    })
    .await
}

/// PostgreSQL: the API's reads survive their connections being dropped by the server (as a
/// restart does): a lost kept read connection is forgotten and the read runs again through the
/// pool, which checks each connection before handing it out (`crate::reads`).
#[tokio::test]
async fn postgres_reads_survive_their_connections_being_dropped() {
    crate::testdb::run(crate::testdb::Kind::Postgres, |db: TestDbRef| async move {
        use sqlx::Connection;
        let s = db.store.clone();
        let id = s.create_queue(&vq("a", 5, None)).await.unwrap().queue.id;
        let caps = crate::CaseCaps::ALL;
        let before = s.queue_json(id, caps, 30_000).await.unwrap();
        s.list_queues_json(None, 10, None, caps, 30_000)
            .await
            .unwrap();
        let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let dropped: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert!(!dropped.is_empty(), "the store had connections open");
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        for _ in 0..3 {
            assert_eq!(s.queue_json(id, caps, 30_000).await.unwrap(), before);
            let (page, _) = s
                .list_queues_json(None, 10, None, caps, 30_000)
                .await
                .unwrap();
            assert_eq!(page.len(), 1);
        }
    })
    .await
}

// --- API tokens (crate::tokens) and who submitted or aborted a queue ---

mod tokens {
    use super::*;
    use testarena_core::auth::{self, Scope};

    async fn tokens_round_trip_and_only_hashes_are_stored(db: TestDbRef) {
        let s = db.store.clone();
        let ci = s.create_token("ci", Scope::Submit, None).await.unwrap();
        let (id, secret) = auth::parse_token(&ci.text).expect("well-formed");
        assert_eq!(id, ci.row.id);
        assert!(secret.len() >= 64, "at least 256 bits");
        let stored = db
            .row(&format!("SELECT hash FROM tokens WHERE id = {id}"))
            .await
            .unwrap();
        assert_eq!(stored[0].as_deref(), Some(secret_hash(secret).as_str()));
        assert!(
            !format!("{stored:?}").contains(secret),
            "the secret is never stored"
        );

        let found = s.verify_token(&ci.text).await.unwrap().expect("valid");
        assert_eq!(found.row.name, "ci");
        assert_eq!(found.row.scope, Scope::Submit);
        // Another secret, a wrong id, garbage: refused alike.
        let other = auth::format_token(id, &"0".repeat(64));
        let wrong_id = auth::format_token(id + 1, secret);
        for bad in [other.as_str(), wrong_id.as_str(), "ta_x", ""] {
            assert_eq!(s.verify_token(bad).await.unwrap(), None, "{bad}");
        }

        // Names are unique and checked.
        let dup = s.create_token("ci", Scope::Read, None).await.unwrap_err();
        assert!(
            matches!(dup, StoreError::Conflict(ref m) if m.contains("ci")),
            "{dup}"
        );
        let bad = s.create_token("12", Scope::Read, None).await.unwrap_err();
        assert!(matches!(bad, StoreError::Invalid(_)), "{bad}");

        let admin = s.create_token("root", Scope::Admin, None).await.unwrap();
        let names: Vec<String> = s
            .tokens()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["ci", "root"]);

        // last_used_at follows touches.
        assert_eq!(s.tokens().await.unwrap()[0].last_used_at, None);
        s.touch_token(id).await.unwrap();
        assert!(s.tokens().await.unwrap()[0].last_used_at.is_some());

        // Revoke by id and by name; then the texts are refused at once.
        assert_eq!(s.revoke_token(&id.to_string()).await.unwrap().name, "ci");
        assert_eq!(s.verify_token(&ci.text).await.unwrap(), None);
        assert_eq!(s.revoke_token("root").await.unwrap().id, admin.row.id);
        assert_eq!(s.verify_token(&admin.text).await.unwrap(), None);
        let gone = s.revoke_token("root").await.unwrap_err();
        assert!(
            matches!(gone, StoreError::TokenNotFound(ref w) if w == "root"),
            "{gone}"
        );
        assert!(s.tokens().await.unwrap().is_empty());
    }

    async fn expired_tokens_are_refused(db: TestDbRef) {
        let s = db.store.clone();
        let past = s
            .create_token("old", Scope::Admin, Some(now_ms() - 1))
            .await
            .unwrap();
        assert_eq!(s.verify_token(&past.text).await.unwrap(), None);
        let future = s
            .create_token("new", Scope::Read, Some(now_ms() + 60_000))
            .await
            .unwrap();
        assert!(s.verify_token(&future.text).await.unwrap().is_some());
    }

    async fn queues_record_who_submitted_and_aborted_them(db: TestDbRef) {
        let s = db.store.clone();
        let q = testarena_core::validate::ValidQueue {
            repo: "https://example.com/r.git".into(),
            branch: "main".into(),
            scenarios: None,
            name: "main".into(),
            priority: 5,
            commit: None,
            case_filter: None,
            labels: Vec::new(),
            origin: None,
            no_cache: false,
            retries: 0,
        };
        let by = s.create_queue_by(&q, Some("ci")).await.unwrap();
        assert_eq!(by.queue.submitted_by.as_deref(), Some("ci"));
        let anon = s.create_queue(&q).await.unwrap();
        assert_eq!(anon.queue.submitted_by, None);
        let aborted = s
            .abort_queue_by(by.queue.id, Some("alice"), crate::CaseCaps::ALL)
            .await
            .unwrap();
        assert_eq!(
            aborted.queue.error.as_deref(),
            Some("aborted before it started (by alice)")
        );
        assert_eq!(aborted.queue.submitted_by.as_deref(), Some("ci"));
    }

    on_both!(
        tokens_round_trip_and_only_hashes_are_stored,
        expired_tokens_are_refused,
        queues_record_who_submitted_and_aborted_them,
    );
}

// --- The case history across queues (crate::history, issue 16) ---

mod history {
    use super::*;
    use testarena_core::history::ResultStatus;

    /// Where the runs of these tests come from: credentials in the URL, hidden in the key.
    const REPO: &str = "https://ci:s3cret@example.com/fw.git";

    /// One case's verdict in a run: scenario, case id, status (`None`: stored as `flaky`, as
    /// a worker that re-runs failed cases records them).
    type Verdict<'a> = (&'a str, &'a str, Option<CaseStatus>);

    /// Submits, claims and finishes a queue of `branch` at `commit` with `cases` as their
    /// verdicts, ending as `end`; returns its id.
    async fn run(
        db: &TestDbRef,
        branch: &str,
        commit: &str,
        cases: &[Verdict<'_>],
        end: QueueStatus,
    ) -> i64 {
        let s = &db.store;
        let mut scenarios: Vec<&str> = cases.iter().map(|c| c.0).collect();
        scenarios.dedup();
        let q = ValidQueue {
            repo: REPO.into(),
            ..vq(branch, 5, Some(scenarios.clone()))
        };
        let detail = s.create_queue(&q).await.unwrap();
        let row = s.claim("w", 60_000).await.unwrap().unwrap();
        assert_eq!(row.id, detail.queue.id);
        let hd = row.holder().unwrap();
        s.set_commit(row.id, &hd, commit).await.unwrap();
        for (t, _) in &detail.tasks {
            let mine: Vec<&Verdict<'_>> = cases.iter().filter(|c| c.0 == t.scenario).collect();
            let new: Vec<NewCase> = mine
                .iter()
                .map(|c| NewCase {
                    key: c.1.into(),
                    name: c.1.to_lowercase(),
                })
                .collect();
            let ids = s.create_cases(t.id, &hd, &new).await.unwrap();
            for (id, c) in ids.iter().zip(&mine) {
                let status = c.2.unwrap_or(CaseStatus::Passed);
                let result = CaseResult {
                    status,
                    duration_ms: Some(7),
                    message: (status != CaseStatus::Passed).then(|| format!("{} {status}", c.1)),
                };
                s.finish_case(*id, &hd, &result).await.unwrap();
                if c.2.is_none() {
                    db.exec(&format!(
                        "UPDATE cases SET status = 'flaky' WHERE id = {id}"
                    ))
                    .await;
                }
            }
        }
        s.finish_queue(row.id, &hd, end, None).await.unwrap();
        row.id
    }

    fn queues(h: &[testarena_core::history::HistoryResult]) -> Vec<i64> {
        h.iter().map(|r| r.queue).collect()
    }

    async fn runs_keep_their_results_rates_and_change_points(db: TestDbRef) {
        use CaseStatus::{Error, Failed, Passed, Skipped};
        let (a, b) = ("a.xml", "b.xml");
        let s = db.store.clone();
        let q1 = run(
            &db,
            "main",
            "c1",
            &[(a, "A", Some(Passed)), (b, "B", Some(Failed))],
            QueueStatus::Failed,
        )
        .await;
        let q2 = run(
            &db,
            "main",
            "c1",
            &[(a, "A", Some(Passed)), (b, "B", Some(Passed))],
            QueueStatus::Passed,
        )
        .await;
        let q3 = run(
            &db,
            "main",
            "c2",
            &[(a, "A", Some(Failed)), (b, "B", Some(Passed))],
            QueueStatus::Failed,
        )
        .await;
        let q4 = run(
            &db,
            "dev",
            "c3",
            &[(a, "A", Some(Passed))],
            QueueStatus::Passed,
        )
        .await;
        let q5 = run(
            &db,
            "main",
            "c3",
            &[(a, "A", Some(Passed))],
            QueueStatus::Aborted,
        )
        .await;
        let q6 = run(
            &db,
            "main",
            "c4",
            &[(a, "A", Some(Skipped)), (b, "B", Some(Passed))],
            QueueStatus::Passed,
        )
        .await;
        let q7 = run(
            &db,
            "main",
            "c5",
            &[(a, "A", None), (b, "B", Some(Error))],
            QueueStatus::Error,
        )
        .await;

        // Every branch, newest first; the aborted queue is no run. The key hides credentials,
        // so the URL with others, or as the API shows it, finds the same history.
        let all = s
            .case_history("https://other:pw@example.com/fw.git", a, "A", None, 50)
            .await
            .unwrap();
        assert_eq!(all.repo, "https://***@example.com/fw.git");
        assert_eq!(queues(&all.results), [q7, q6, q4, q3, q2, q1]);
        let statuses: Vec<ResultStatus> = all.results.iter().map(|r| r.status).collect();
        use ResultStatus as R;
        assert_eq!(
            statuses,
            [
                R::Flaky,
                R::Skipped,
                R::Passed,
                R::Failed,
                R::Passed,
                R::Passed
            ]
        );
        assert_eq!(all.results[2].branch, "dev");
        assert_eq!(all.results[0].commit, "c5");
        assert_eq!(all.results[0].duration_ms, Some(7));
        assert_eq!(all.stats.pass_rate, Some(0.6));
        assert_eq!(all.stats.flaky_rate, Some(0.2));
        assert_eq!(all.stats.flaky_commits, ["c5"]);
        let changes: Vec<(String, R, R, i64)> = all
            .stats
            .change_points
            .iter()
            .map(|c| (c.commit.clone(), c.from, c.to, c.queue))
            .collect();
        assert_eq!(
            changes,
            [
                ("c2".to_string(), R::Passed, R::Failed, q3),
                ("c3".to_string(), R::Failed, R::Passed, q4),
                ("c5".to_string(), R::Passed, R::Flaky, q7),
            ]
        );
        let shown = s
            .case_history(&all.repo, a, "A", Some("main"), 50)
            .await
            .unwrap();
        assert_eq!(queues(&shown.results), [q7, q6, q3, q2, q1]);
        let two = s.case_history(REPO, a, "A", None, 2).await.unwrap();
        assert_eq!(queues(&two.results), [q7, q6]);
        // Case B passed and failed on c1: flaky there.
        let flaky = s
            .case_history(REPO, b, "B", Some("main"), 50)
            .await
            .unwrap();
        assert_eq!(queues(&flaky.results), [q7, q6, q3, q2, q1]);
        assert_eq!(flaky.stats.flaky_commits, ["c1"]);
        assert_eq!(flaky.stats.flaky_rate, Some(0.4));
        assert_eq!(flaky.stats.pass_rate, Some(0.6));
        assert_eq!(flaky.stats.change_points.len(), 2);
        assert_eq!(flaky.stats.change_points[1].to, R::Error);
        // Another scenario, case, repository or branch: nothing.
        for (repo, scenario, case, branch) in [
            (REPO, b, "A", None),
            (REPO, a, "B", None),
            ("https://example.com/other.git", a, "A", None),
            (REPO, a, "A", Some("nope")),
        ] {
            let none = s
                .case_history(repo, scenario, case, branch, 50)
                .await
                .unwrap();
            assert!(
                none.results.is_empty(),
                "{repo} {scenario} {case} {branch:?}"
            );
            assert_eq!(none.stats.pass_rate, None);
        }

        // Each run names the previous run of its branch and counts what got worse since.
        let row = |id| {
            let s = s.clone();
            async move { s.queue_row(id).await.unwrap() }
        };
        let expect = [
            (q1, None, None),
            (q2, Some(q1), Some(0)),
            (q3, Some(q2), Some(1)),
            (q4, None, None),
            (q5, None, None),
            (q6, Some(q3), Some(0)),
            (q7, Some(q6), Some(1)),
        ];
        for (id, previous, regressions) in expect {
            let r = row(id).await;
            assert_eq!(
                (r.previous_id, r.regressions),
                (previous, regressions),
                "queue {id}"
            );
        }
        let caps = CaseCaps {
            per_task: 50,
            per_queue: 100,
        };
        let (worse, _) = s
            .list_queues_json_where(None, true, 50, None, caps, 60_000)
            .await
            .unwrap();
        assert_eq!(worse.iter().map(|q| q.id).collect::<Vec<_>>(), [q7, q3]);
        let (older, next) = s
            .list_queues_json_where(Some(QueueStatus::Failed), true, 50, Some(q7), caps, 60_000)
            .await
            .unwrap();
        assert_eq!(
            (older.iter().map(|q| q.id).collect::<Vec<_>>(), next),
            (vec![q3], None)
        );
        let json: serde_json::Value = serde_json::from_str(&worse[1].json).unwrap();
        assert_eq!(json["previous_id"], q2);
        assert_eq!(json["regressions"], 1);
        let json: serde_json::Value =
            serde_json::from_str(&s.queue_json(q4, caps, 60_000).await.unwrap().json).unwrap();
        assert!(
            json["previous_id"].is_null() && json["regressions"].is_null(),
            "{json}"
        );
    }

    async fn a_queue_shows_each_case_with_its_history_up_to_it(db: TestDbRef) {
        use CaseStatus::{Failed, Passed};
        let (a, b) = ("a.xml", "b.xml");
        let s = db.store.clone();
        let q1 = run(
            &db,
            "main",
            "c1",
            &[(a, "A", Some(Passed)), (b, "B", Some(Failed))],
            QueueStatus::Failed,
        )
        .await;
        let q2 = run(
            &db,
            "main",
            "c1",
            &[(a, "A", Some(Passed)), (b, "B", Some(Passed))],
            QueueStatus::Passed,
        )
        .await;
        let q3 = run(
            &db,
            "main",
            "c2",
            &[(a, "A", Some(Failed)), (b, "B", Some(Passed))],
            QueueStatus::Failed,
        )
        .await;
        let q4 = run(
            &db,
            "main",
            "c3",
            &[(a, "A", Some(Passed)), (b, "B", Some(Passed))],
            QueueStatus::Passed,
        )
        .await;
        let other = run(
            &db,
            "dev",
            "c3",
            &[(a, "A", Some(Failed))],
            QueueStatus::Failed,
        )
        .await;

        let page = s.queue_history(q3, 30, None, 500).await.unwrap();
        assert_eq!(page.next, None);
        let strips: Vec<(&str, &str, Vec<i64>, bool)> = page
            .cases
            .iter()
            .map(|c| {
                (
                    c.scenario.as_str(),
                    c.case.as_str(),
                    queues(&c.results),
                    c.flaky,
                )
            })
            .collect();
        // Up to q3 (q4 is newer), of its branch only.
        assert_eq!(
            strips,
            [
                (a, "A", vec![q3, q2, q1], false),
                (b, "B", vec![q3, q2, q1], true)
            ]
        );
        assert_eq!(page.cases[0].results[0].status, ResultStatus::Failed);
        assert_eq!(page.cases[1].pass_rate, Some(2.0 / 3.0));
        let tasks = s.queue(q3).await.unwrap().tasks;
        assert_eq!(page.cases[1].task, tasks[1].0.id);
        // The newest queue sees everything of its branch; at most `limit` each.
        let last = s.queue_history(q4, 2, None, 500).await.unwrap();
        assert_eq!(queues(&last.cases[0].results), [q4, q3]);
        let dev = s.queue_history(other, 30, None, 500).await.unwrap();
        assert_eq!(queues(&dev.cases[0].results), [other]);
        // A page at a time: `next` is the last case's place, `after` goes on from it.
        let first = s.queue_history(q3, 30, None, 1).await.unwrap();
        assert_eq!((first.cases.len(), first.next), (1, Some(0)));
        assert_eq!(first.cases[0].case, "A");
        let second = s.queue_history(q3, 30, first.next, 1).await.unwrap();
        assert_eq!((second.cases.len(), second.next), (1, None));
        assert_eq!(second.cases[0].case, "B");
        // A queue still waiting shows the latest results; a missing one is not found.
        let waiting = s
            .create_queue(&ValidQueue {
                repo: REPO.into(),
                ..vq("main", 5, Some(vec![a]))
            })
            .await
            .unwrap();
        assert!(s
            .queue_history(waiting.queue.id, 30, None, 500)
            .await
            .unwrap()
            .cases
            .is_empty());
        assert!(matches!(
            s.queue_history(9999, 30, None, 500).await,
            Err(StoreError::NotFound(9999))
        ));

        // The previous run: recorded, else found; deleting a run removes its results.
        assert_eq!(s.previous_run(q3).await.unwrap(), Some(q2));
        assert_eq!(s.previous_run(waiting.queue.id).await.unwrap(), Some(q4));
        assert_eq!(s.previous_run(q1).await.unwrap(), None);
        s.delete_queue(q2).await.unwrap();
        assert_eq!(s.previous_run(q3).await.unwrap(), Some(q1));
        let after = s
            .case_history(REPO, a, "A", Some("main"), 50)
            .await
            .unwrap();
        assert_eq!(queues(&after.results), [q4, q3, q1]);
    }

    async fn comparing_two_queues_sorts_their_cases(db: TestDbRef) {
        use CaseStatus::{Error, Failed, Passed, Skipped};
        let (a, b) = ("a.xml", "b.xml");
        let s = db.store.clone();
        let base = run(
            &db,
            "main",
            "c1",
            &[
                (a, "WORSE", Some(Passed)),
                (a, "BETTER", Some(Failed)),
                (a, "STILL", Some(Error)),
                (a, "GONE", Some(Passed)),
                (b, "SAME", Some(Passed)),
                (b, "FLAKY", None),
            ],
            QueueStatus::Error,
        )
        .await;
        let head = run(
            &db,
            "main",
            "c2",
            &[
                (a, "WORSE", Some(Failed)),
                (a, "BETTER", Some(Passed)),
                (a, "STILL", Some(Failed)),
                (a, "NEW", Some(Skipped)),
                (b, "SAME", Some(Passed)),
                (b, "FLAKY", Some(Error)),
            ],
            QueueStatus::Error,
        )
        .await;
        let c = s.compare(base, head).await.unwrap();
        let ids = |l: &[testarena_core::history::ComparedCase]| {
            l.iter().map(|c| c.case.clone()).collect::<Vec<_>>()
        };
        assert_eq!(ids(&c.newly_failing), ["WORSE", "FLAKY"]);
        assert_eq!(ids(&c.newly_passing), ["BETTER"]);
        assert_eq!(ids(&c.still_failing), ["STILL"]);
        assert_eq!(ids(&c.new), ["NEW"]);
        assert_eq!(ids(&c.removed), ["GONE"]);
        assert_eq!(c.counts.unchanged, 1);
        assert_eq!((c.base.id, c.head.id), (base, head));
        assert_eq!(c.head.commit.as_deref(), Some("c2"));
        let worse = &c.newly_failing[0];
        assert_eq!(worse.scenario, a);
        assert_eq!(worse.base_status, Some(ResultStatus::Passed));
        assert_eq!(worse.head_status, Some(ResultStatus::Failed));
        assert_eq!(worse.head_message.as_deref(), Some("WORSE failed"));
        assert_eq!(c.newly_failing[1].base_status, Some(ResultStatus::Flaky));
        // The head's regressions agree with the comparison.
        assert_eq!(s.queue_row(head).await.unwrap().regressions, Some(2));
        assert!(matches!(
            s.compare(base, 9999).await,
            Err(StoreError::NotFound(9999))
        ));
    }

    on_both!(
        runs_keep_their_results_rates_and_change_points,
        a_queue_shows_each_case_with_its_history_up_to_it,
        comparing_two_queues_sorts_their_cases,
    );

    /// SQLite's plans: a case's history, a queue's strips and the "got worse" list read ranges
    /// of their indexes, never a whole table.
    #[tokio::test]
    async fn sqlite_reads_the_history_through_its_indexes() {
        use sqlx::{Connection, Row};
        let db = crate::testdb::TestDb::new(crate::testdb::Kind::Sqlite).await;
        let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        for (sql, index) in [
            (crate::history::case_results_sql(false), "case_results_case"),
            (
                crate::history::case_results_sql(true),
                "case_results_branch",
            ),
            (
                crate::history::strips_sql(crate::dialect::Dialect::Sqlite),
                "case_results_branch",
            ),
            (crate::history::regressions_sql(), "case_results_queue"),
            (crate::history::PREVIOUS_SQL.to_string(), "queues_runs"),
            (
                crate::page::stamps(
                    crate::dialect::Dialect::Sqlite,
                    &crate::page::list_filter(false, true, true),
                ),
                "queues_worse",
            ),
        ] {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let rows = sqlx::query(&explain).fetch_all(&mut c).await.unwrap();
            let detail: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
            let text = detail.join("\n");
            assert!(text.contains(index), "{explain}\n{text}");
            assert!(
                !detail.iter().any(|d| d.starts_with("SCAN case_results")
                    || d == "SCAN q"
                    || d == "SCAN queues"),
                "{explain}\n{text}"
            );
            eprintln!("{explain}\n{text}\n");
        }
        let _ = c.close().await;
        db.finish().await;
    }
}

/// The history at scale: 100,000 finished runs with 10 cases each (1,000,000 results) on
/// both backends. A case's history, a queue's strips, the "got worse" page and recording a
/// new run stay fast because each reads a range of an index; this prints the plans and the
/// times. Ignored (it fills a database for a minute or two): run it with
/// `cargo test -p testarena-store history_at_scale -- --ignored --nocapture`.
mod history_scale {
    use super::*;
    use crate::testdb::{run, Kind};
    use std::time::Instant;

    const QUEUES: i64 = 100_000;

    /// Fills the database with `QUEUES` runs of 5 repositories × 4 branches, one task and 10
    /// cases each (every 7th run fails TC_3, every 10th got worse), in a few statements.
    async fn fill(db: &TestDbRef) {
        // PostgreSQL's change triggers (a new `rev` and a NOTIFY per row, in one transaction)
        // would take most of an hour for a million rows: off while filling.
        let tables = ["queues", "tasks", "cases"];
        if db.kind == Kind::Postgres {
            for table in tables {
                db.exec(&format!("ALTER TABLE {table} DISABLE TRIGGER USER"))
                    .await;
            }
        }
        let series = match db.kind {
            Kind::Sqlite => format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {QUEUES}) SELECT i FROM n"
            ),
            Kind::Postgres => format!("SELECT i FROM generate_series(1, {QUEUES}) AS n(i)"),
        };
        let hex = match db.kind {
            Kind::Sqlite => "printf('%040x', i)",
            Kind::Postgres => "lpad(to_hex(i), 40, '0')",
        };
        db.exec(&format!(
            "INSERT INTO queues (id, name, repo, repo_key, branch, commit_sha, status, priority, created_at, started_at, finished_at, previous_id, regressions) \
             SELECT i, 'q', 'https://git.example.com/r' || (i % 5) || '.git', 'https://git.example.com/r' || (i % 5) || '.git', \
                    'b' || (i % 4), {hex}, CASE WHEN i % 7 = 0 THEN 'failed' ELSE 'passed' END, 5, i * 1000, i * 1000 + 1, i * 1000 + 500, \
                    CASE WHEN i > 20 THEN i - 20 END, CASE WHEN i > 20 THEN CASE WHEN i % 10 = 0 THEN 1 ELSE 0 END END \
             FROM ({series}) AS s"
        ))
        .await;
        db.exec(&format!(
            "INSERT INTO tasks (id, queue_id, position, scenario, status) SELECT i, i, 0, 'scenarios/s.xml', 'passed' FROM ({series}) AS s"
        ))
        .await;
        for k in 0..10 {
            db.exec(&format!(
                "INSERT INTO cases (id, task_id, queue_id, position, case_key, name, status, duration_ms) \
                 SELECT i * 10 + {k}, i, i, {k}, 'TC_{k}', 'case {k}', \
                        CASE WHEN {k} = 3 AND i % 7 = 0 THEN 'failed' ELSE 'passed' END, 5 FROM ({series}) AS s"
            ))
            .await;
            db.exec(&format!(
                "INSERT INTO case_results (case_id, queue_id, repo_key, branch, commit_sha, scenario, case_key, status, duration_ms, finished_at) \
                 SELECT i * 10 + {k}, i, 'https://git.example.com/r' || (i % 5) || '.git', 'b' || (i % 4), {hex}, 'scenarios/s.xml', 'TC_{k}', \
                        CASE WHEN {k} = 3 AND i % 7 = 0 THEN 'failed' ELSE 'passed' END, 5, i * 1000 + 500 FROM ({series}) AS s"
            ))
            .await;
        }
        if db.kind == Kind::Postgres {
            for table in tables {
                db.exec(&format!("ALTER TABLE {table} ENABLE TRIGGER USER"))
                    .await;
                db.exec(&format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
                ))
                .await;
            }
        }
        db.exec("ANALYZE").await;
    }

    /// The plan of `sql` with its parameters written in (`$N` → `values[N-1]`).
    async fn plan(db: &TestDbRef, sql: &str, values: &[&str]) -> String {
        use sqlx::{Connection, Row};
        let mut sql = sql.to_string();
        for (i, v) in values.iter().enumerate().rev() {
            sql = sql.replace(&format!("${}", i + 1), v);
        }
        match db.kind {
            Kind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
                let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .fetch_all(&mut c)
                    .await
                    .unwrap();
                rows.iter()
                    .map(|r| r.get::<String, _>("detail"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
                let rows = sqlx::query(&format!("EXPLAIN (ANALYZE, COSTS OFF) {sql}"))
                    .fetch_all(&mut c)
                    .await
                    .unwrap();
                rows.iter()
                    .map(|r| r.get::<String, _>(0))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
    }

    async fn measure(db: TestDbRef) {
        let s = db.store.clone();
        let started = Instant::now();
        fill(&db).await;
        eprintln!("{:?}: filled in {:?}", db.kind, started.elapsed());
        let repo = "https://git.example.com/r3.git";
        let timed = |what: &str, t: Instant| eprintln!("{:?}: {what}: {:?}", db.kind, t.elapsed());
        for _ in 0..2 {
            let t = Instant::now();
            let h = s
                .case_history(repo, "scenarios/s.xml", "TC_3", None, 50)
                .await
                .unwrap();
            timed("case history, every branch, 50 results", t);
            assert_eq!(h.results.len(), 50);
            assert_eq!(h.results[0].queue, 99_998);
            let t = Instant::now();
            let h = s
                .case_history(repo, "scenarios/s.xml", "TC_3", Some("b1"), 500)
                .await
                .unwrap();
            timed("case history, one branch, 500 results", t);
            assert_eq!(h.results.len(), 500);
            let t = Instant::now();
            let strips = s.queue_history(50_001, 30, None, 500).await.unwrap();
            timed("strips of a queue's 10 cases, 30 results each", t);
            assert_eq!(strips.cases.len(), 10);
            assert_eq!(strips.cases[0].results.len(), 30);
            assert_eq!(strips.cases[0].results[0].queue, 50_001);
            let caps = CaseCaps {
                per_task: 50,
                per_queue: 100,
            };
            let t = Instant::now();
            let (page, _) = s
                .list_queues_json_where(None, true, 50, None, caps, 60_000)
                .await
                .unwrap();
            timed("\"got worse\" page of 50 (answers built)", t);
            assert_eq!(page.len(), 50);
            let t = Instant::now();
            s.list_queues_json_where(None, true, 50, Some(20_000), caps, 60_000)
                .await
                .unwrap();
            timed("\"got worse\" page of 50, older", t);
        }
        for (what, sql, values) in [
            (
                "case history",
                crate::history::case_results_sql(false),
                vec![
                    "'https://git.example.com/r3.git'",
                    "'scenarios/s.xml'",
                    "'TC_3'",
                    "50",
                ],
            ),
            (
                "case history of a branch",
                crate::history::case_results_sql(true),
                vec![
                    "'https://git.example.com/r3.git'",
                    "'scenarios/s.xml'",
                    "'TC_3'",
                    "50",
                    "'b1'",
                ],
            ),
            (
                "regressions",
                crate::history::regressions_sql(),
                vec!["99990", "99970"],
            ),
            (
                "previous run",
                crate::history::PREVIOUS_SQL.to_string(),
                vec![
                    "'https://git.example.com/r3.git'",
                    "'b1'",
                    "99999999",
                    "100000",
                ],
            ),
            (
                "strips",
                crate::history::strips_sql(match db.kind {
                    Kind::Sqlite => crate::dialect::Dialect::Sqlite,
                    Kind::Postgres => crate::dialect::Dialect::Postgres,
                }),
                vec![
                    "'https://git.example.com/r1.git'",
                    "'b1'",
                    "50001500",
                    "50001",
                    "30",
                    "50001",
                    "501",
                    "0",
                ],
            ),
        ] {
            eprintln!(
                "--- {:?} {what}:\n{}\n",
                db.kind,
                plan(&db, &sql, &values).await
            );
        }
        // Recording a new run: its results, the previous run and its regressions.
        let q = s
            .create_queue(&ValidQueue {
                repo: repo.into(),
                ..vq("b1", 9, Some(vec!["scenarios/s.xml"]))
            })
            .await
            .unwrap();
        let row = s.claim("w", 60_000).await.unwrap().unwrap();
        let hd = row.holder().unwrap();
        s.set_commit(row.id, &hd, "f00d").await.unwrap();
        let new: Vec<NewCase> = (0..10)
            .map(|k| NewCase {
                key: format!("TC_{k}"),
                name: format!("case {k}"),
            })
            .collect();
        let ids = s.create_cases(q.tasks[0].0.id, &hd, &new).await.unwrap();
        for id in ids {
            let result = CaseResult {
                status: CaseStatus::Failed,
                duration_ms: Some(1),
                message: None,
            };
            s.finish_case(id, &hd, &result).await.unwrap();
        }
        let t = Instant::now();
        s.finish_queue(row.id, &hd, QueueStatus::Failed, None)
            .await
            .unwrap();
        timed("finish_queue recording a run of 10 cases", t);
        let r = s.queue_row(row.id).await.unwrap();
        assert_eq!(r.previous_id, Some(99_993));
        assert_eq!(r.regressions, Some(10));
    }

    #[tokio::test]
    #[ignore = "a measurement, not a check: fills 100,000 queues and 1,000,000 results (minutes); run by hand, see the comment above"]
    async fn history_at_scale_sqlite() {
        run(Kind::Sqlite, measure).await
    }

    #[tokio::test]
    #[ignore = "a measurement, not a check: fills 100,000 queues and 1,000,000 results (minutes); run by hand, see the comment above"]
    async fn history_at_scale_postgres() {
        run(Kind::Postgres, measure).await
    }
}

/// Runs finished before the history existed join it when the database is upgraded (the
/// migrations `sqlite/0015_history.sql`, `postgres/0012_history.sql`).
mod history_upgrade {
    use super::*;
    use crate::testdb::{blank, Kind};

    /// Applies the migrations of `kind` older than `before` to the database at `url`, as the
    /// version before the history did.
    async fn migrate_older(kind: Kind, url: &str, before: i64) {
        let dir = tempfile::tempdir().unwrap();
        let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(match kind {
            Kind::Sqlite => "migrations/sqlite",
            Kind::Postgres => "migrations/postgres",
        });
        for entry in std::fs::read_dir(&from).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let version: i64 = name.split('_').next().unwrap().parse().unwrap();
            if version < before {
                std::fs::copy(&path, dir.path().join(&name)).unwrap();
            }
        }
        let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
        match kind {
            Kind::Sqlite => {
                let pool = sqlx::SqlitePool::connect(url).await.unwrap();
                migrator.run(&pool).await.unwrap();
                pool.close().await;
            }
            Kind::Postgres => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                migrator.run(&pool).await.unwrap();
                pool.close().await;
            }
        }
    }

    /// Runs `sql` on the database at `url`.
    async fn exec(kind: Kind, url: &str, sql: &str) {
        use sqlx::Connection;
        match kind {
            Kind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
        }
    }

    async fn upgrade(kind: Kind) {
        let (url, guard) = blank(kind).await;
        let before = match kind {
            Kind::Sqlite => 15,
            Kind::Postgres => 12,
        };
        migrate_older(kind, &url, before).await;
        // Runs of the older version: two of one branch (A got worse on c2), one whose URL
        // holds credentials, and queues that are no runs.
        let queues = [
            (1, "/srv/git/fw", "main", Some("c1"), "failed", None),
            (2, "/srv/git/fw", "main", Some("c2"), "failed", None),
            (
                3,
                "https://tok@git.example.com/fw.git",
                "main",
                Some("c1"),
                "passed",
                None,
            ),
            (
                4,
                "/srv/git/fw",
                "main",
                Some("c3"),
                "aborted",
                Some("aborted on request"),
            ),
            (
                5,
                "/srv/git/fw",
                "main",
                Some("c3"),
                "error",
                Some("worker lost (lease expired) 3 times; giving up"),
            ),
            (
                6,
                "/srv/git/fw",
                "main",
                None,
                "error",
                Some("cloning failed"),
            ),
            (7, "/srv/git/fw", "dev", Some("c1"), "passed", None),
        ];
        for (id, repo, branch, commit, status, error) in queues {
            let commit = commit.map_or("NULL".to_string(), |c| format!("'{c}'"));
            let error = error.map_or("NULL".to_string(), |e| format!("'{e}'"));
            exec(kind, &url, &format!(
                "INSERT INTO queues (id, name, repo, branch, commit_sha, status, priority, created_at, started_at, finished_at, error) \
                 VALUES ({id}, 'q', '{repo}', '{branch}', {commit}, '{status}', 5, {id}, {id}, {}, {error})",
                id * 1000
            ))
            .await;
            exec(kind, &url, &format!(
                "INSERT INTO tasks (id, queue_id, position, scenario, status) VALUES ({id}, {id}, 0, 's.xml', '{status}')"
            ))
            .await;
            let (a, b) = if id == 2 {
                ("failed", "passed")
            } else {
                ("passed", "failed")
            };
            for (n, (key, verdict)) in [("A", a), ("B", b), ("C", "running")]
                .into_iter()
                .enumerate()
            {
                exec(
                    kind,
                    &url,
                    &format!(
                    "INSERT INTO cases (id, task_id, queue_id, position, case_key, name, status) \
                     VALUES ({}, {id}, {id}, {n}, '{key}', '{key}', '{verdict}')",
                    id * 10 + n as i64
                ),
                )
                .await;
            }
        }
        let s = Store::open(&url).await.unwrap();
        let a = s
            .case_history("/srv/git/fw", "s.xml", "A", None, 50)
            .await
            .unwrap();
        let got: Vec<(i64, ResultStatus)> = a.results.iter().map(|r| (r.queue, r.status)).collect();
        use testarena_core::history::ResultStatus;
        assert_eq!(
            got,
            [
                (7, ResultStatus::Passed),
                (2, ResultStatus::Failed),
                (1, ResultStatus::Passed)
            ],
            "runs only, newest first; a case never finished is no result"
        );
        assert!(s
            .case_history("/srv/git/fw", "s.xml", "C", None, 50)
            .await
            .unwrap()
            .results
            .is_empty());
        assert_eq!(a.results[1].commit, "c2");
        let hidden = s
            .case_history("https://tok@git.example.com/fw.git", "s.xml", "A", None, 50)
            .await
            .unwrap();
        assert!(
            hidden.results.is_empty(),
            "SQL cannot hide its credentials: left out"
        );
        let row = |id| {
            let s = s.clone();
            async move {
                let r = s.queue_row(id).await.unwrap();
                (r.previous_id, r.regressions)
            }
        };
        assert_eq!(row(1).await, (None, None));
        assert_eq!(row(2).await, (Some(1), Some(1)));
        assert_eq!(row(4).await, (None, None));
        assert_eq!(row(7).await, (None, None));
        let caps = CaseCaps {
            per_task: 50,
            per_queue: 100,
        };
        let (worse, _) = s
            .list_queues_json_where(None, true, 50, None, caps, 60_000)
            .await
            .unwrap();
        assert_eq!(worse.iter().map(|q| q.id).collect::<Vec<_>>(), [2]);
        // A run recorded after the upgrade finds the older ones.
        assert_eq!(s.previous_run(4).await.unwrap(), Some(2));
        s.close().await;
        guard.remove().await;
    }

    #[tokio::test]
    async fn older_runs_join_the_history_on_upgrade_sqlite() {
        upgrade(Kind::Sqlite).await
    }

    #[tokio::test]
    async fn older_runs_join_the_history_on_upgrade_postgres() {
        upgrade(Kind::Postgres).await
    }
}
