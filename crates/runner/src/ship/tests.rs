use super::*;
use testarena_core::validate::ValidQueue;

/// A store on a fresh SQLite file with one queue claimed by worker `w` (attempt 1) for
/// `lease_ms`.
async fn claimed(lease_ms: i64) -> (Store, tempfile::TempDir, i64, Holder) {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("db.sqlite").display());
    let store = Store::open(&url).await.unwrap();
    let q = ValidQueue {
        repo: "https://example.com/r.git".into(),
        branch: "main".into(),
        scenarios: None,
        name: "q".into(),
        priority: 0,
        commit: None,
        case_filter: None,
        labels: Vec::new(),
        origin: None,
        no_cache: false,
        retries: 0,
    };
    let id = store.create_queue(&q).await.unwrap().queue.id;
    let row = store.claim("w", lease_ms).await.unwrap().unwrap();
    (store, tmp, id, row.holder().unwrap())
}

async fn text(store: &Store, id: i64, name: &str) -> String {
    let data = store.read_file(id, name, 0, u64::MAX >> 1).await.unwrap();
    String::from_utf8(data).unwrap()
}

#[tokio::test]
async fn files_grow_in_the_database_as_they_grow_on_disk() {
    let (store, tmp, id, holder) = claimed(30_000).await;
    let dir = tmp.path().join("q");
    std::fs::create_dir_all(dir.join("01-smoke")).unwrap();
    let mut s = Shipper::start(store.clone(), id, holder, dir.clone(), 1 << 20)
        .await
        .unwrap();
    let log = dir.join(QUEUE_LOG);
    std::fs::write(&log, "one\n").unwrap();
    s.ship(std::slice::from_ref(&log)).await;
    assert_eq!(text(&store, id, QUEUE_LOG).await, "one\n");
    // Larger than a batch: several transactions, in order, nothing repeated.
    let big: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&log, format!("one\n{big}")).unwrap();
    s.ship(std::slice::from_ref(&log)).await;
    assert_eq!(text(&store, id, QUEUE_LOG).await, format!("one\n{big}"));
    // Nothing new: nothing shipped.
    s.ship(std::slice::from_ref(&log)).await;
    assert_eq!(
        store.file_len(id, QUEUE_LOG).await.unwrap() as usize,
        4 + big.len()
    );
    // A file written anew, shorter: the database's copy starts over.
    let case = dir.join("01-smoke/TC.log");
    std::fs::write(&case, "long first version\n").unwrap();
    s.ship(std::slice::from_ref(&case)).await;
    std::fs::write(&case, "short\n").unwrap();
    s.ship(std::slice::from_ref(&case)).await;
    assert_eq!(text(&store, id, "01-smoke/TC.log").await, "short\n");
}

#[tokio::test]
async fn the_sweep_ships_the_rest_within_its_budget_and_follows_no_link() {
    let (store, tmp, id, holder) = claimed(30_000).await;
    let dir = tmp.path().join("q");
    std::fs::create_dir_all(dir.join("files/deep")).unwrap();
    std::fs::create_dir_all(dir.join("work")).unwrap();
    std::fs::write(dir.join(QUEUE_LOG), "log\n").unwrap();
    std::fs::write(dir.join("junit.xml"), "<testsuites/>").unwrap();
    std::fs::write(dir.join("files/deep/out.bin"), vec![7u8; 100]).unwrap();
    std::fs::write(dir.join("files/huge.bin"), vec![1u8; 5000]).unwrap();
    std::fs::write(dir.join("work/source.c"), "int main;").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("files/passwd")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("files/etc")).unwrap();
    let mut s = Shipper::start(store.clone(), id, holder, dir.clone(), 1000)
        .await
        .unwrap();
    let sweep = s.sweep(&[dir.join(QUEUE_LOG)]).await;
    assert_eq!(sweep.over_budget, vec!["files/huge.bin".to_string()]);
    let names: Vec<String> = store
        .files(id)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(names, ["files/deep/out.bin", "junit.xml", "queue.log"]);
    assert_eq!(text(&store, id, "junit.xml").await, "<testsuites/>");
}

#[tokio::test]
async fn a_lost_claim_ships_nothing_more_and_a_new_attempt_continues_the_queue_log() {
    let (store, tmp, id, holder) = claimed(-1).await;
    let dir = tmp.path().join("q");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join(QUEUE_LOG);
    std::fs::write(&log, "attempt 1\n").unwrap();
    std::fs::write(dir.join("build.log"), "build 1\n").unwrap();
    let mut s = Shipper::start(store.clone(), id, holder, dir.clone(), 1 << 20)
        .await
        .unwrap();
    s.ship(&[log.clone(), dir.join("build.log")]).await;
    // The lease runs out and another attempt takes the queue over.
    store.reclaim_expired(3).await.unwrap();
    let row = store.claim("w2", 30_000).await.unwrap().unwrap();
    std::fs::write(&log, "attempt 1\nstale line\n").unwrap();
    s.ship(std::slice::from_ref(&log)).await;
    let dir2 = tmp.path().join("q2");
    std::fs::create_dir_all(&dir2).unwrap();
    std::fs::write(dir2.join(QUEUE_LOG), "attempt 2\n").unwrap();
    let mut s2 = Shipper::start(
        store.clone(),
        id,
        row.holder().unwrap(),
        dir2.clone(),
        1 << 20,
    )
    .await
    .unwrap();
    s2.ship(&[dir2.join(QUEUE_LOG)]).await;
    assert_eq!(text(&store, id, QUEUE_LOG).await, "attempt 1\nattempt 2\n");
    assert_eq!(text(&store, id, "build.log").await, "", "started over");
    s.ship(std::slice::from_ref(&log)).await;
    assert_eq!(text(&store, id, QUEUE_LOG).await, "attempt 1\nattempt 2\n");
}

#[tokio::test]
async fn the_files_of_an_older_version_are_imported_for_finished_queues_only() {
    let (store, tmp, id, holder) = claimed(30_000).await;
    let data = tmp.path().join("data");
    let old = data.join("queues").join(id.to_string());
    std::fs::create_dir_all(old.join("01-x")).unwrap();
    std::fs::write(old.join(QUEUE_LOG), "old log\n").unwrap();
    std::fs::write(old.join("01-x/TC.log"), "old case\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", old.join("passwd")).unwrap();
    // Still running: left alone.
    assert_eq!(import_old_files(&store, &data).await, 0);
    assert!(old.exists());
    store
        .finish_queue(id, &holder, testarena_core::QueueStatus::Passed, None)
        .await
        .unwrap();
    assert_eq!(import_old_files(&store, &data).await, 1);
    assert_eq!(text(&store, id, QUEUE_LOG).await, "old log\n");
    assert_eq!(text(&store, id, "01-x/TC.log").await, "old case\n");
    assert_eq!(store.files(id).await.unwrap().len(), 2, "no link followed");
    assert!(!old.exists(), "removed once imported");
    // A directory of an unknown queue, and a worker's scratch (attempt directories): kept.
    let unknown = data.join("queues/999");
    std::fs::create_dir_all(&unknown).unwrap();
    std::fs::write(unknown.join(QUEUE_LOG), "x\n").unwrap();
    let scratch = data.join("queues/5/1");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(scratch.join(QUEUE_LOG), "x\n").unwrap();
    assert_eq!(import_old_files(&store, &data).await, 0);
    assert!(unknown.exists() && scratch.exists());
}
