use super::*;
use testarena_core::validate::ValidQueue;

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
    let (page, next) = s.list_queues(None, 4, None).await.unwrap();
    assert_eq!(page.len(), 4);
    assert_eq!(page[0].queue.branch, "b4");
    let (rest, next2) = s.list_queues(None, 4, next).await.unwrap();
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
    let api = s.queue(id).await.unwrap().to_api();
    assert_eq!(api.status, QueueStatus::Passed);
    assert_eq!(api.summary.passed, 1);
    assert_eq!(api.tasks[0].cases[0].duration_ms, Some(12));
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
        s.abort_queue(waiting).await.unwrap().queue.status,
        QueueStatus::Aborted
    );
    assert!(matches!(
        s.abort_queue(waiting).await,
        Err(StoreError::Conflict(_))
    ));
    let running = s.create_queue(&vq("b", 5, None)).await.unwrap().queue.id;
    s.claim("w1", 30_000).await.unwrap().unwrap();
    let q = s.abort_queue(running).await.unwrap();
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
    let (changed, deleted) = s.changes_since(r0).await.unwrap();
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
    let (changed, _) = s.changes_since(r1).await.unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].queue.status, QueueStatus::Running);
    s.delete_queue(b).await.unwrap();
    let (_, deleted) = s.changes_since(r2).await.unwrap();
    assert_eq!(deleted, vec![b]);
    assert_eq!(s.running_by_worker().await.unwrap()["w"], vec![a]);
}
