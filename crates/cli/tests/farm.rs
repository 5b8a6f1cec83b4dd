//! A farm on PostgreSQL (issue 12): several `worker` processes and `serve` replicas of the real
//! binary on one fresh database per test, each worker with a data directory of its own: they
//! share nothing but the database, where the logs go too. The "emulator" is `cat`, so no QEMU
//! is needed. PostgreSQL must be reachable
//! (`TESTARENA_TEST_POSTGRES` overrides the maintenance database): these fail, never skip.
//!
//! The lease is `runner::worker::LEASE` (30 s, not configurable), so the two tests of a lost
//! worker wait for it once each.

mod common;

use common::{App, Database};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testarena_client::{CaseStatus, NewQueue, QueueStatus};

/// A local git repository under `root/repos/r`: `cat` as the emulator, `scenarios/s.xml` with
/// the test case `case` (its body).
fn repo(root: &Path, case: &str) -> PathBuf {
    let dir = root.join("repos").join("r");
    let files = [
        (
            "testarena.toml",
            "[build]\ncommand = 'true'\n[emulator]\ncommand = \"cat\"\nconsole = \"stdio\"\n"
                .to_string(),
        ),
        (
            "scenarios/s.xml",
            format!("<scenario name=\"s\" timeout=\"120\">\n{case}\n</scenario>"),
        ),
    ];
    common::git_repo(&dir, &files);
    dir
}

const SHORT_CASE: &str = r#"<testcase id="TC" timeout="30"><send>hello</send><expect timeout="10">^hello$</expect></testcase>"#;

fn new_queue(repo: &Path) -> NewQueue {
    let mut new = NewQueue::new(repo.to_str().unwrap(), "main");
    new.scenarios = Some(vec!["scenarios/s.xml".into()]);
    new
}

fn serve(db: &Database, data: &Path, repos: &Path, extra: &[&str]) -> App {
    let mut args = vec![
        "--database",
        &db.url,
        "--allow-local-repos",
        repos.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    App::start("serve", data, &args)
}

/// A `testarena worker` process (concurrency 1), its log in a file; SIGKILLed with its
/// process group when dropped.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(db: &Database, data: &Path, repos: &Path, log: PathBuf) -> Worker {
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_testarena"));
        cmd.arg("worker")
            .arg("--data-dir")
            .arg(data)
            .args(["--database", &db.url, "--concurrency", "1"])
            .arg("--allow-local-repos")
            .arg(repos)
            .env_remove("TESTARENA_DATABASE_URL")
            .env("TESTARENA_CONFIG", "/dev/null")
            .env("TESTARENA_LOG", "info,sqlx=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::from(file));
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("start the worker");
        Worker { child, log }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Its id as the store knows it (`hostname-pid`).
    fn id(&self) -> String {
        format!("{}-{}", hostname(), self.pid())
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child has no memory effects.
        unsafe { libc::kill(self.pid(), sig) };
    }

    fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The ids of the queues it logged as claimed.
    fn claimed(&self) -> Vec<i64> {
        self.log()
            .lines()
            .filter(|l| l.contains(" claimed"))
            .filter_map(|l| {
                let rest = &l[l.find("queue=")? + "queue=".len()..];
                let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                digits.parse().ok()
            })
            .collect()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let pid = self.pid();
        // SAFETY: kill(2) on our own child's process group has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGCONT);
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Pids of the processes whose environment says they work for queue `id` under `root` (what
/// the runner gives builds and emulators: `TESTARENA_WORKSPACE` inside the queue's scratch
/// directory, in the data directory of whichever worker runs it).
fn processes_of(root: &Path, id: i64) -> Vec<i32> {
    let (prefix, part) = (
        format!("TESTARENA_WORKSPACE={}", root.display()),
        format!("/queues/{id}/"),
    );
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(env) = std::fs::read(e.path().join("environ")) {
            if String::from_utf8_lossy(&env)
                .split('\0')
                .any(|v| v.starts_with(&prefix) && v.contains(&part))
            {
                found.push(pid);
            }
        }
    }
    found
}

fn alive(pid: i32) -> bool {
    // A zombie is gone for our purpose.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// One queue row as the store has it.
#[derive(Debug)]
struct StoredQueue {
    id: i64,
    status: String,
    attempts: i64,
    priority: i64,
    worker: Option<String>,
    started_at: Option<i64>,
}

async fn queue_rows(conn: &mut sqlx::PgConnection) -> Vec<StoredQueue> {
    sqlx::query(
        "SELECT id, status, attempts, priority, worker_id, started_at FROM queues ORDER BY id",
    )
    .fetch_all(conn)
    .await
    .unwrap()
    .iter()
    .map(|r| StoredQueue {
        id: r.get(0),
        status: r.get(1),
        attempts: r.get(2),
        priority: r.get(3),
        worker: r.get(4),
        started_at: r.get(5),
    })
    .collect()
}

/// Polls the store until every queue is finished; panics after `within`.
async fn wait_all_finished(conn: &mut sqlx::PgConnection, n: usize, within: Duration) {
    let start = Instant::now();
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM queues WHERE status NOT IN ('waiting', 'running')",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if done as usize >= n {
            return;
        }
        assert!(
            start.elapsed() < within,
            "only {done} of {n} queues finished in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How many queues the drain test submits (about 2.5 minutes on a 2-core machine).
const DRAIN: usize = 2_000;

#[tokio::test]
async fn four_workers_drain_many_queues_each_once_in_priority_order() {
    let db = Database::new("farm").await;
    let root = tempfile::tempdir().unwrap();
    let repo = repo(root.path(), SHORT_CASE);
    let repos = root.path().join("repos");
    let data = root.path().join("data");
    let server = serve(&db, &data, &repos, &[]);
    // Every queue is waiting before any worker starts: priorities 0, 4, 8 in turn, so the
    // higher ones are submitted after lower ones that still wait.
    let submitting = Instant::now();
    let mut submitted = HashMap::new();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..DRAIN {
        let mut new = new_queue(&repo);
        new.priority = Some((i % 3) as i64 * 4);
        let api = server.api.clone();
        set.spawn(async move {
            let answer = api.create_queue_answer(&new).await.unwrap();
            assert_eq!(answer.status, 201, "{}", answer.text);
            answer.value
        });
        // Eight in flight at a time.
        if set.len() >= 8 {
            let q = set.join_next().await.unwrap().unwrap();
            submitted.insert(q.id, q.priority);
        }
    }
    while let Some(q) = set.join_next().await {
        let q = q.unwrap();
        submitted.insert(q.id, q.priority);
    }
    assert_eq!(submitted.len(), DRAIN);
    eprintln!("{DRAIN} queues submitted in {:?}", submitting.elapsed());
    let started = Instant::now();
    let workers: Vec<Worker> = (0..4)
        .map(|i| {
            Worker::start(
                &db,
                &data.join(format!("w{i}")),
                &repos,
                root.path().join(format!("w{i}.log")),
            )
        })
        .collect();
    let mut conn = db.connect().await;
    wait_all_finished(&mut conn, DRAIN, Duration::from_secs(900)).await;
    let took = started.elapsed();
    let rows = queue_rows(&mut conn).await;
    assert_eq!(rows.len(), DRAIN, "queues appeared or vanished");
    // Each passed, on its first and only claim.
    for r in &rows {
        assert_eq!(submitted.get(&r.id), Some(&r.priority), "{r:?}");
        assert_eq!((r.status.as_str(), r.attempts), ("passed", 1), "{r:?}");
    }
    let passed_cases: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cases WHERE status = 'passed' AND case_key = 'TC'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(passed_cases as usize, DRAIN);
    // Per worker: what the store says ran where, and what each worker logged as claimed.
    let ids: HashSet<String> = workers.iter().map(Worker::id).collect();
    let mut by_worker: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        let w = r.worker.clone().expect("a finished queue keeps its worker");
        assert!(ids.contains(&w), "{r:?} ran on an unknown worker");
        *by_worker.entry(w).or_default() += 1;
    }
    let mut claimed_total = 0;
    let mut claimed_ids = HashSet::new();
    for w in &workers {
        let claimed = w.claimed();
        assert_eq!(
            claimed.len(),
            by_worker.get(&w.id()).copied().unwrap_or(0),
            "worker {} logged other claims than the store has:\n{}",
            w.id(),
            w.log()
        );
        claimed_total += claimed.len();
        claimed_ids.extend(claimed);
    }
    assert_eq!(by_worker.values().sum::<usize>(), DRAIN, "{by_worker:?}");
    assert_eq!(claimed_total, DRAIN, "{by_worker:?}");
    assert_eq!(claimed_ids.len(), DRAIN, "a queue was claimed twice");
    assert!(
        by_worker.len() >= 2,
        "the work was not shared: {by_worker:?}"
    );
    // Priorities: every queue of a higher priority started no later than any queue of a lower
    // one (all were waiting together). Each claim stamps its start just before taking the next
    // queue in order, so concurrent claims on a loaded machine may be a little apart: 1 s of
    // slack (each priority group takes several seconds to run).
    let mut first_start: BTreeMap<i64, i64> = BTreeMap::new();
    let mut last_start: BTreeMap<i64, i64> = BTreeMap::new();
    for r in &rows {
        let s = r.started_at.unwrap();
        let f = first_start.entry(r.priority).or_insert(s);
        *f = (*f).min(s);
        let l = last_start.entry(r.priority).or_insert(s);
        *l = (*l).max(s);
    }
    for (high, low) in [(8, 4), (4, 0)] {
        assert!(
            last_start[&high] <= first_start[&low] + 1_000,
            "priority {high} queues started until {}, priority {low} ones from {}",
            last_start[&high],
            first_start[&low]
        );
    }
    eprintln!("{DRAIN} queues drained in {took:?} by {by_worker:?}");
    drop(workers);
    assert!(server.stop().success());
    db.drop_now().await;
}

/// A case that echoes once, then sleeps `ms` (the time to catch its worker mid-run), then
/// echoes again.
fn sleeping_case(ms: u64, timeout_s: u64) -> String {
    format!(
        r#"<testcase id="TC" timeout="{timeout_s}"><send>one</send><expect timeout="10">^one$</expect><sleep ms="{ms}"/><send>two</send><expect timeout="10">^two$</expect></testcase>"#
    )
}

/// Waits until queue `id`'s case runs and its emulator is up; returns the queue as the API
/// shows it then and the pids of its processes.
async fn wait_for_emulator(
    server: &App,
    root: &Path,
    id: i64,
) -> (testarena_client::Queue, Vec<i32>) {
    let start = Instant::now();
    loop {
        let q = server.api.queue(id).await.unwrap();
        let running = q
            .tasks
            .first()
            .and_then(|t| t.cases.first())
            .is_some_and(|c| c.status == CaseStatus::Running);
        let pids = processes_of(root, id);
        if running && !pids.is_empty() && q.worker.is_some() {
            return (q, pids);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the case never ran: {q:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to `within` until `done` holds.
async fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_worker_killed_mid_run_leaves_no_emulator_and_its_queue_completes_elsewhere() {
    let db = Database::new("farm").await;
    let root = tempfile::tempdir().unwrap();
    let repo = repo(root.path(), &sleeping_case(4_000, 60));
    let repos = root.path().join("repos");
    let data = root.path().join("data");
    let server = serve(&db, &data, &repos, &[]);
    let mut workers: Vec<Worker> = (0..2)
        .map(|i| {
            Worker::start(
                &db,
                &data.join(format!("w{i}")),
                &repos,
                root.path().join(format!("w{i}.log")),
            )
        })
        .collect();
    let id = server.submit(&new_queue(&repo)).await.id;
    let (q, pids) = wait_for_emulator(&server, root.path(), id).await;
    assert_eq!(q.attempts, 1, "{q:#?}");
    let holder = q.worker.clone().unwrap();
    let victim = workers
        .iter()
        .position(|w| w.id() == holder)
        .unwrap_or_else(|| panic!("{holder} is none of ours"));
    let killed_at = Instant::now();
    workers[victim].signal(libc::SIGKILL);
    let _ = workers[victim].child.wait();
    // Its emulator (and sandbox) die with it, long before the lease runs out.
    eventually(
        Duration::from_secs(5),
        "the killed worker's processes end",
        || pids.iter().all(|p| !alive(*p)),
    )
    .await;
    // After the lease, the other worker takes the queue over and completes it.
    let q = server
        .wait_until(id, Duration::from_secs(75), |q| q.status.is_finished())
        .await;
    let reclaimed_after = killed_at.elapsed();
    let survivor = workers.remove(1 - victim);
    assert_eq!(q.status, QueueStatus::Passed, "{q:#?}");
    assert_eq!(q.attempts, 2, "{q:#?}");
    let cases: Vec<_> = q.tasks.iter().flat_map(|t| t.cases.iter()).collect();
    assert_eq!(cases.len(), 1, "{q:#?}");
    assert_eq!(cases[0].status, CaseStatus::Passed, "{q:#?}");
    assert_eq!(survivor.claimed(), vec![id], "{}", survivor.log());
    let mut conn = db.connect().await;
    let rows = queue_rows(&mut conn).await;
    assert_eq!(rows[0].worker.as_deref(), Some(survivor.id().as_str()));
    assert!(
        reclaimed_after >= Duration::from_secs(25),
        "taken over before the lease ran out: {reclaimed_after:?}"
    );
    // Nothing of either attempt is left running.
    eventually(Duration::from_secs(5), "the queue's processes end", || {
        processes_of(root.path(), id).is_empty()
    })
    .await;
    drop(survivor);
    drop(workers);
    assert!(server.stop().success());
    db.drop_now().await;
}

#[tokio::test]
async fn a_worker_paused_past_its_lease_cannot_overwrite_the_attempt_that_took_over() {
    let db = Database::new("farm").await;
    let root = tempfile::tempdir().unwrap();
    // A case timeout shorter than the pause: resumed, the first attempt would time the case
    // out and fail the queue, if its writes still counted.
    let repo = repo(root.path(), &sleeping_case(4_000, 20));
    let repos = root.path().join("repos");
    let data = root.path().join("data");
    let server = serve(&db, &data, &repos, &[]);
    let workers: Vec<Worker> = (0..2)
        .map(|i| {
            Worker::start(
                &db,
                &data.join(format!("w{i}")),
                &repos,
                root.path().join(format!("w{i}.log")),
            )
        })
        .collect();
    let id = server.submit(&new_queue(&repo)).await.id;
    let (q, _) = wait_for_emulator(&server, root.path(), id).await;
    let holder = q.worker.clone().unwrap();
    let paused = workers
        .iter()
        .position(|w| w.id() == holder)
        .unwrap_or_else(|| panic!("{holder} is none of ours"));
    let other = &workers[1 - paused];
    workers[paused].signal(libc::SIGSTOP);
    let paused_at = Instant::now();
    // The other worker takes the queue over once the lease has run out.
    let q = server
        .wait_until(id, Duration::from_secs(60), |q| {
            q.attempts == 2 && q.worker.as_deref() == Some(other.id().as_str())
        })
        .await;
    assert!(paused_at.elapsed() >= Duration::from_secs(25), "{q:#?}");
    // Resumed while the second attempt runs: its lease renewal finds the claim lost.
    workers[paused].signal(libc::SIGCONT);
    let q = server
        .wait_until(id, Duration::from_secs(60), |q| q.status.is_finished())
        .await;
    assert_eq!(q.status, QueueStatus::Passed, "{q:#?}");
    assert_eq!(q.attempts, 2, "{q:#?}");
    assert_eq!(q.error, None, "{q:#?}");
    let cases: Vec<_> = q.tasks.iter().flat_map(|t| t.cases.iter()).collect();
    assert_eq!(cases.len(), 1, "{q:#?}");
    assert_eq!(cases[0].status, CaseStatus::Passed, "{q:#?}");
    assert!(cases[0].message.is_none(), "{q:#?}");
    // The old worker said why it stopped (in its own log: the queue's is fenced against it),
    // and nothing later changed, the queue log included.
    eventually(Duration::from_secs(10), "the lost claim is logged", || {
        workers[paused]
            .log()
            .contains("lost the claim on the queue")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = server.api.queue(id).await.unwrap();
    assert_eq!(again.status, QueueStatus::Passed, "{again:#?}");
    assert_eq!(again.tasks, q.tasks, "the old attempt changed the cases");
    let log = server.log_text(id).await;
    assert!(log.contains("(attempt 2)"), "{log}");
    assert!(
        !log.contains("this worker lost its claim"),
        "the old attempt wrote into the queue log: {log}"
    );
    let mut conn = db.connect().await;
    let rows = queue_rows(&mut conn).await;
    assert_eq!(rows[0].worker.as_deref(), Some(other.id().as_str()));
    assert_eq!(rows[0].attempts, 2);
    // The paused worker lives on and claims nothing more.
    assert!(alive(workers[paused].pid()), "{}", workers[paused].log());
    assert_eq!(workers[paused].claimed(), vec![id]);
    drop(workers);
    assert!(server.stop().success());
    db.drop_now().await;
}

/// Submits `new` with the Idempotency-Key `key` to the first of `targets` that answers,
/// trying them in turn (with a short timeout each, the same key every time) until one
/// acknowledges it; returns the id acknowledged with 201, and whether it was a replay.
async fn submit_anywhere(
    targets: &[testarena_client::Client],
    first: usize,
    new: &NewQueue,
    key: &str,
) -> (i64, bool) {
    let start = Instant::now();
    for round in 0.. {
        let api = &targets[(first + round) % targets.len()];
        match api.create_queue_keyed(new, key).await {
            Ok(answer) => {
                assert_eq!(answer.status, 201, "{}", answer.text);
                return (answer.value.id, answer.replayed);
            }
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "no replica took {new:?}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    unreachable!()
}

#[tokio::test]
async fn every_acknowledged_submit_survives_a_replica_killed_and_restarted() {
    let db = Database::new("farm").await;
    let root = tempfile::tempdir().unwrap();
    let repos = root.path().join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    let data = root.path().join("data");
    // Replica a (the one killed; restarted on a new address) and b beside it.
    let start_a = || App::start("serve", &data, &["--database", &db.url]);
    let a = start_a();
    let b = serve(&db, &data, &repos, &[]);
    // The test does the retrying (to the other replica), with the same key each time.
    let client = |base: &str| {
        testarena_client::Client::builder(base)
            .timeout(Some(Duration::from_secs(2)))
            .retries(0)
            .build()
            .unwrap()
    };
    let mut targets = vec![client(&a.base), client(&b.base)];
    let total = 500;
    let mut acked: HashMap<i64, String> = HashMap::new();
    let mut replayed = 0;
    let mut set = tokio::task::JoinSet::new();
    let mut a = Some(a);
    let mut restarted = None;
    for i in 0..total {
        if i == 150 {
            // SIGKILL replica a with submits in flight; restart it on its address later.
            let app = a.take().unwrap();
            // SAFETY: kill(2) on our own child has no memory effects.
            unsafe { libc::kill(app.child.id() as i32, libc::SIGKILL) };
            drop(app);
        }
        if i == 300 {
            let app = start_a();
            targets[0] = client(&app.base);
            restarted = Some(app);
        }
        let mut new = NewQueue::new("https://example.com/r.git", "main");
        let name = format!("submit-{i}");
        new.name = Some(name.clone());
        let targets = targets.clone();
        // Mostly replica a (the one killed): every 4th goes to b first.
        let first = usize::from(i % 4 == 3);
        let key = testarena_client::new_idempotency_key();
        set.spawn(async move { (submit_anywhere(&targets, first, &new, &key).await, name) });
        if set.len() >= 8 {
            let ((id, replay), name) = set.join_next().await.unwrap().unwrap();
            replayed += usize::from(replay);
            assert!(
                acked.insert(id, name).is_none(),
                "id {id} acknowledged twice"
            );
        }
    }
    while let Some(r) = set.join_next().await {
        let ((id, replay), name) = r.unwrap();
        replayed += usize::from(replay);
        assert!(
            acked.insert(id, name).is_none(),
            "id {id} acknowledged twice"
        );
    }
    assert_eq!(acked.len(), total);
    let restarted = restarted.unwrap();
    // Every acknowledged queue is there, through both replicas, as it was submitted.
    for (id, name) in &acked {
        for api in [&b.api, &restarted.api] {
            let q = api.queue(*id).await.unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(&q.name, name);
            assert_eq!(q.status, QueueStatus::Waiting);
        }
    }
    let mut conn = db.connect().await;
    let rows = queue_rows(&mut conn).await;
    // A submit cut off by the kill may have been stored without an answer: it was sent again
    // with the same Idempotency-Key, which found that queue. One queue per submit, exactly.
    eprintln!(
        "{} acknowledged ({replayed} as replays), {} stored",
        acked.len(),
        rows.len()
    );
    assert_eq!(rows.len(), total, "queues stored for {total} submits");
    let stored: HashSet<i64> = rows.iter().map(|r| r.id).collect();
    assert!(acked.keys().all(|id| stored.contains(id)));
    assert!(restarted.stop().success());
    assert!(b.stop().success());
    db.drop_now().await;
}

/// The crash of issue 13: `serve` SIGKILLed (twice) and restarted on its address while clients
/// submit, each submit with a key of its own that the typed client sends again (its built-in
/// retry) until the server answers. A submit stored just before a kill, whose answer never
/// left, is found again by its key: one queue per submit, every acknowledged id stored.
#[tokio::test]
async fn a_server_killed_under_keyed_submits_stores_each_submit_exactly_once() {
    let db = Database::new("farm").await;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let listen = format!("127.0.0.1:{}", common::free_port());
    let start = || App::start_on("serve", &listen, &data, &["--database", &db.url]);
    let mut server = Some(start());
    let api = testarena_client::Client::builder(&server.as_ref().unwrap().base)
        .timeout(Some(Duration::from_secs(5)))
        .retries(8)
        .build()
        .unwrap();
    let total = 300;
    let mut acked: HashMap<i64, String> = HashMap::new();
    let mut replayed = 0;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..total {
        if i == 100 || i == 200 {
            // SIGKILL with submits in flight; back on the same address a moment later.
            let app = server.take().unwrap();
            // SAFETY: kill(2) on our own child has no memory effects.
            unsafe { libc::kill(app.child.id() as i32, libc::SIGKILL) };
            drop(app);
            tokio::time::sleep(Duration::from_millis(300)).await;
            server = Some(start());
        }
        let mut new = NewQueue::new("https://example.com/r.git", "main");
        let name = format!("submit-{i}");
        new.name = Some(name.clone());
        let api = api.clone();
        set.spawn(async move {
            let answer = api
                .create_queue_answer(&new)
                .await
                .unwrap_or_else(|e| panic!("{name} never acknowledged: {e}"));
            assert_eq!(answer.status, 201, "{}", answer.text);
            (answer.value.id, answer.replayed, name)
        });
        if set.len() >= 16 {
            let (id, replay, name) = set.join_next().await.unwrap().unwrap();
            replayed += usize::from(replay);
            assert!(
                acked.insert(id, name).is_none(),
                "id {id} acknowledged twice"
            );
        }
    }
    while let Some(r) = set.join_next().await {
        let (id, replay, name) = r.unwrap();
        replayed += usize::from(replay);
        assert!(
            acked.insert(id, name).is_none(),
            "id {id} acknowledged twice"
        );
    }
    let mut conn = db.connect().await;
    let rows = queue_rows(&mut conn).await;
    eprintln!(
        "{} acknowledged ({replayed} as replays), {} stored",
        acked.len(),
        rows.len()
    );
    assert_eq!(acked.len(), total);
    assert_eq!(rows.len(), total, "queues stored for {total} submits");
    let server = server.unwrap();
    for (id, name) in &acked {
        let q = server
            .api
            .queue(*id)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(&q.name, name);
    }
    assert!(server.stop().success());
    db.drop_now().await;
}
