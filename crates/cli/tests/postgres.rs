//! The real binary on PostgreSQL (`--database postgres://…`), each test on a fresh database made
//! through the `postgres` maintenance database (`TESTARENA_TEST_POSTGRES` overrides it) and
//! dropped after it. PostgreSQL must be reachable: these tests fail, never skip, without it
//! (`make test` starts it). The "emulator" is `cat`, so no QEMU is needed.
//!
//! The separate `serve` and `worker` have data directories of their own: the logs reach the
//! server through PostgreSQL.

mod common;

use common::{App, Database};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use testarena_client::{CaseStatus, NewQueue, QueueStatus};

/// A local git repository under `root/repos/r`: `cat` as the emulator, two scenarios.
fn repo(root: &Path) -> PathBuf {
    let dir = root.join("repos").join("r");
    let scenario = |id: &str| {
        format!(
            r#"<scenario name="s">
  <testcase id="{id}" timeout="30"><send>hello</send><expect timeout="5">^hello$</expect></testcase>
</scenario>"#
        )
    };
    let files = [
        (
            "testarena.toml",
            "[build]\ncommand = 'true'\n[emulator]\ncommand = \"cat\"\nconsole = \"stdio\"\n"
                .to_string(),
        ),
        ("scenarios/a.xml", scenario("TC_A")),
        ("scenarios/b.xml", scenario("TC_B")),
    ];
    common::git_repo(&dir, &files);
    dir
}

/// Submits a queue of both scenarios and waits for its verdict: passed, every case passed.
async fn run_a_queue(app: &App, repo: &Path) {
    let mut new = NewQueue::new(repo.to_str().unwrap(), "main");
    new.scenarios = Some(vec!["scenarios/a.xml".into(), "scenarios/b.xml".into()]);
    let id = app.submit(&new).await.id;
    let q = app
        .wait_until(id, Duration::from_secs(120), |q| q.status.is_finished())
        .await;
    assert_eq!(q.status, QueueStatus::Passed, "{q:#?}");
    let cases: Vec<_> = q.tasks.iter().flat_map(|t| t.cases.iter()).collect();
    assert_eq!(cases.len(), 2, "{q:#?}");
    assert!(
        cases.iter().all(|c| c.status == CaseStatus::Passed),
        "{q:#?}"
    );
}

#[tokio::test]
async fn up_runs_a_queue_on_postgres() {
    let db = Database::new("e2e").await;
    let root = tempfile::tempdir().unwrap();
    let repo = repo(root.path());
    let repos = root.path().join("repos");
    let app = App::start(
        "up",
        &root.path().join("data"),
        &[
            "--database",
            &db.url,
            "--allow-local-repos",
            repos.to_str().unwrap(),
        ],
    );
    run_a_queue(&app, &repo).await;
    assert!(app.stop().success());
    db.drop_now().await;
}

/// `testarena worker` on its own: it announces nothing, so it is started here, not by `App`.
struct WorkerProcess(Child);

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        // SAFETY: kill(2) on our own child's process group has no memory effects.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_and_a_separate_worker_complete_a_queue_on_postgres() {
    let db = Database::new("e2e").await;
    let root = tempfile::tempdir().unwrap();
    let repo = repo(root.path());
    let repos = root.path().join("repos");
    // A data directory each: they share nothing but the database.
    let data = root.path().join("data");
    let worker_data = root.path().join("worker-data");
    let server = App::start(
        "serve",
        &data,
        &[
            "--database",
            &db.url,
            "--allow-local-repos",
            repos.to_str().unwrap(),
        ],
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testarena"));
    cmd.arg("worker")
        .arg("--data-dir")
        .arg(&worker_data)
        .args(["--database", &db.url, "--allow-local-repos"])
        .arg(&repos)
        .env_remove("TESTARENA_DATABASE_URL")
        .env("TESTARENA_CONFIG", "/dev/null")
        .env("TESTARENA_LOG", "info,sqlx=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let worker = WorkerProcess(cmd.spawn().expect("start the worker"));
    run_a_queue(&server, &repo).await;
    // The worker is another process on the same database: the server lists it.
    let workers = server.api.workers().await.unwrap();
    assert_eq!(workers.workers.len(), 1, "{workers:?}");
    // A second queue, created while the worker idles, is woken by NOTIFY and runs too.
    run_a_queue(&server, &repo).await;
    drop(worker);
    assert!(server.stop().success());
    db.drop_now().await;
}

/// Reads the SSE stream until `needle` appears; panics after 10 s.
async fn read_sse_until(resp: &mut reqwest::Response, seen: &mut String, needle: &str) {
    while !seen.contains(needle) {
        match tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("SSE stream ended: {other:?}; seen {seen}"),
        }
    }
}

/// Two `serve` replicas on one database: a change made through one reaches the live view of
/// the other at once (NOTIFY), well before its fallback poll (2 s).
#[tokio::test]
async fn live_views_on_every_replica_update_at_once() {
    let db = Database::new("e2e").await;
    let root = tempfile::tempdir().unwrap();
    let a = App::start("serve", &root.path().join("a"), &["--database", &db.url]);
    let b = App::start("serve", &root.path().join("b"), &["--database", &db.url]);
    let mut events = b.http.get(b.url("/api/v1/events")).send().await.unwrap();
    assert_eq!(events.status(), 200);
    // Let b's listener connect.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen = String::new();
    let started = std::time::Instant::now();
    let id = a
        .submit(&NewQueue::new("https://example.com/r.git", "main"))
        .await
        .id;
    read_sse_until(&mut events, &mut seen, &format!("\"id\":{id},")).await;
    let created = started.elapsed();
    let started = std::time::Instant::now();
    a.api.abort(id).await.unwrap();
    read_sse_until(&mut events, &mut seen, "\"status\":\"aborted\"").await;
    let aborted = started.elapsed();
    assert!(
        created < Duration::from_millis(1500) && aborted < Duration::from_millis(1500),
        "replica b saw the changes after {created:?} and {aborted:?}"
    );
    drop(events);
    assert!(a.stop().success());
    assert!(b.stop().success());
    db.drop_now().await;
}
