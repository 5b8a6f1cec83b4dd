//! The worker's build cache against a real `testarena up` (issue 15): a second queue of one
//! commit reuses the first one's build and says so; `no_cache` and another commit build; two
//! queues of one commit at once build once. The "emulator" prints what the build made, then
//! echoes (`cat`), so these need no QEMU.

mod common;

use common::App;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testarena_client::{NewQueue, Queue, QueueStatus};

/// Every build takes this long at least, so a reused one is told apart by its time.
const BUILD_SECS: u64 = 2;

/// A repository whose build makes `out/greeting` (kept by the cache: `outputs = ["out"]`) and
/// whose emulator prints it: the scenario passes only if the build's output is there.
fn repo(root: &Path) -> PathBuf {
    let dir = root.join("repos").join("r");
    let toml = format!(
        "[build]\ncommand = 'sleep {BUILD_SECS} && mkdir -p out && echo hello-from-build > out/greeting'\n\
         outputs = [\"out\"]\n\
         [emulator]\ncommand = 'cat out/greeting; cat'\nconsole = \"stdio\"\n"
    );
    let scenario = r#"<scenario name="s" timeout="60">
  <testcase id="TC" timeout="30"><expect timeout="10">^hello-from-build$</expect></testcase>
</scenario>"#;
    common::git_repo(
        &dir,
        &[
            ("testarena.toml", toml.as_str()),
            ("scenarios/s.xml", scenario),
        ],
    );
    dir
}

fn start(root: &Path, concurrency: &str) -> App {
    let repos = root.join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    App::start(
        "up",
        &root.join("data"),
        &[
            "--allow-local-repos",
            repos.to_str().unwrap(),
            "--concurrency",
            concurrency,
        ],
    )
}

async fn finished(app: &App, id: i64) -> Queue {
    app.wait_until(id, Duration::from_secs(120), |q| q.status.is_finished())
        .await
}

/// Milliseconds of the day of a log line's timestamp (`2026-12-01T10:09:44.153Z ...`).
fn millis(line: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| line[r].parse::<i64>().unwrap();
    ((n(11..13) * 60 + n(14..16)) * 60 + n(17..19)) * 1000 + n(20..23)
}

/// How long the queue's log says it spent in the build phase.
fn build_phase(log: &str) -> Duration {
    let at = |what: &str| {
        let line = log
            .lines()
            .find(|l| l.ends_with(what))
            .unwrap_or_else(|| panic!("no {what:?} in {log}"));
        millis(line)
    };
    let ms = at("# phase: testing") - at("# phase: building");
    Duration::from_millis(ms.rem_euclid(86_400_000) as u64)
}

fn built(log: &str) -> bool {
    log.contains("# build passed in")
}

fn new_commit(repo: &Path) {
    std::fs::write(repo.join("change.txt"), "changed").unwrap();
    for args in [&["add", "-A"][..], &["commit", "-qm", "change"]] {
        let out = Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

#[tokio::test]
async fn the_same_commit_reuses_its_build_and_no_cache_or_a_new_commit_builds() {
    let root = tempfile::tempdir().unwrap();
    let repo = repo(root.path());
    let app = start(root.path(), "1");
    let new = NewQueue::new(repo.to_str().unwrap(), "main");

    let first = app.submit(&new).await.id;
    let q1 = finished(&app, first).await;
    let log1 = app.log_text(first).await;
    assert_eq!(q1.status, QueueStatus::Passed, "{log1}");
    assert_eq!(q1.build.cached_from, None);
    assert!(built(&log1), "{log1}");
    assert!(
        build_phase(&log1) >= Duration::from_secs(BUILD_SECS),
        "{log1}"
    );

    let second = app.submit(&new).await.id;
    let q2 = finished(&app, second).await;
    let log2 = app.log_text(second).await;
    assert_eq!(q2.status, QueueStatus::Passed, "{log2}");
    assert_eq!(q2.commit, q1.commit);
    assert_eq!(q2.build.cached_from, Some(first));
    assert!(
        log2.contains(&format!("# build: cached from queue #{first}")),
        "{log2}"
    );
    assert!(!built(&log2), "{log2}");
    assert!(
        build_phase(&log2) < Duration::from_secs(1),
        "no time in the build phase: {log2}"
    );
    let (_, json) = app.get_json(&format!("/api/v1/queues/{second}")).await;
    assert_eq!(json["build"]["cached_from"], json!(first), "{json}");
    assert_eq!(json["no_cache"], json!(false), "{json}");

    // `no_cache` as the API's field: it builds.
    let (status, body) = app
        .post_queue(&json!({"repo": repo.to_str().unwrap(), "branch": "main", "no_cache": true}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["no_cache"], json!(true), "{body}");
    let forced = body["id"].as_i64().unwrap();
    let q3 = finished(&app, forced).await;
    let log3 = app.log_text(forced).await;
    assert_eq!(q3.status, QueueStatus::Passed, "{log3}");
    assert_eq!(q3.build.cached_from, None);
    assert!(built(&log3), "{log3}");

    // Another commit builds.
    new_commit(&repo);
    let other = app.submit(&new).await.id;
    let q4 = finished(&app, other).await;
    let log4 = app.log_text(other).await;
    assert_eq!(q4.status, QueueStatus::Passed, "{log4}");
    assert_ne!(q4.commit, q1.commit);
    assert_eq!(q4.build.cached_from, None);
    assert!(built(&log4), "{log4}");
}

#[tokio::test]
async fn two_queues_of_one_commit_at_once_build_once() {
    let root = tempfile::tempdir().unwrap();
    let repo = repo(root.path());
    let app = start(root.path(), "2");
    let new = NewQueue::new(repo.to_str().unwrap(), "main");
    let a = app.submit(&new).await.id;
    let b = app.submit(&new).await.id;
    // Both run at once (concurrency 2): the second waits for the first one's build.
    app.wait_until(b, Duration::from_secs(60), |q| q.started_at.is_some())
        .await;
    let (qa, qb) = (finished(&app, a).await, finished(&app, b).await);
    let (la, lb) = (app.log_text(a).await, app.log_text(b).await);
    assert_eq!(qa.status, QueueStatus::Passed, "{la}");
    assert_eq!(qb.status, QueueStatus::Passed, "{lb}");
    assert_eq!(
        [built(&la), built(&lb)].iter().filter(|b| **b).count(),
        1,
        "one build between them:\n{la}\n{lb}"
    );
    let from = [qa.build.cached_from, qb.build.cached_from];
    assert!(
        from == [None, Some(a)] || from == [Some(b), None],
        "the other reused it: {from:?}"
    );
    // They ran at once: the one that reused the build waited for it.
    let reused = if built(&la) { &lb } else { &la };
    assert!(reused.contains("build cache: waited"), "{reused}");
}
