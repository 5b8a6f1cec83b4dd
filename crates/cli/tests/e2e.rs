//! End to end: a real git server on loopback, the example firmware built with the real Xtensa
//! cross-compiler, booted in real QEMU, driven through scenarios via the HTTP API of a running
//! `testarena up` (through the typed client; raw HTTP where a header or the stream's wire format
//! is the point). After every queue, no process of it may be left alive.

mod common;

use common::{free_port, git, processes_under};

use common::App;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testarena_client::{Case, CaseStatus, NewQueue, Queue, QueueStatus, Rerun};

const EXTRA_SCENARIOS: &[(&str, &str)] = &[
    (
        "checks/fail_expect.xml",
        r#"<scenario name="fail-expect" timeout="60">
  <testcase id="TC_WRONG" timeout="20"><send>ping</send><expect timeout="2">^pang$</expect></testcase>
  <testcase id="TC_AFTER" timeout="20"><send>echo still alive</send><expect timeout="5">^still alive$</expect></testcase>
</scenario>"#,
    ),
    (
        "checks/panic.xml",
        r#"<scenario name="panic" timeout="60">
  <fail-pattern>Guru Meditation Error</fail-pattern>
  <testcase id="TC_PANIC" timeout="20"><send>panic</send><expect timeout="10">^never printed$</expect></testcase>
</scenario>"#,
    ),
    (
        "checks/decode.xml",
        r#"<scenario name="decode" timeout="90" boot="per-case">
  <fail-pattern>Guru Meditation Error|Fatal exception</fail-pattern>
  <testcase id="TC_GURU" timeout="20"><send>panic</send><expect timeout="10">^never printed$</expect></testcase>
  <testcase id="TC_EPC" timeout="20"><send>exception</send><expect timeout="10">^never printed$</expect></testcase>
</scenario>"#,
    ),
    (
        "checks/hang.xml",
        r#"<scenario name="hang" timeout="60">
  <testcase id="TC_HANG" timeout="3"><send>hang</send><expect timeout="30">^never$</expect></testcase>
  <testcase id="TC_IDLE" timeout="20" idle-timeout="1"><send>hang</send><expect timeout="10">^never$</expect></testcase>
</scenario>"#,
    ),
    (
        "checks/forever.xml",
        r#"<scenario name="forever" timeout="600">
  <testcase id="TC_FOREVER" timeout="600"><send>hang</send><expect timeout="600">^never$</expect></testcase>
</scenario>"#,
    ),
    (
        "checks/slow.xml",
        r#"<scenario name="slow" timeout="60">
  <testcase id="TC_SLOW" timeout="30"><run timeout="20">sleep 4</run><send>ping</send><expect timeout="5">^pong$</expect></testcase>
</scenario>"#,
    ),
    (
        "checks/burst.xml",
        r#"<scenario name="burst" timeout="300">
  <testcase id="TC_BURST" timeout="240"><send>spam 1000000</send><expect timeout="240">^spam done$</expect></testcase>
</scenario>"#,
    ),
    (
        "checks/host.xml",
        r#"<scenario name="host" timeout="60" boot="per-case">
  <testcase id="TC_RUN" timeout="20">
    <run timeout="10">test -n "$TESTARENA_QUEUE_ID" &amp;&amp; test -d "$TESTARENA_LOG_DIR" &amp;&amp; echo "console at $TESTARENA_CONSOLE"</run>
    <run timeout="10" exit-code="3">exit 3</run>
    <send>ping</send><expect timeout="5">^pong$</expect>
  </testcase>
  <testcase id="TC_REBOOT" timeout="30">
    <reboot/><send>echo rebooted</send><expect timeout="5">^rebooted$</expect>
  </testcase>
  <testcase id="TC_BRIDGE" timeout="30">
    <run timeout="20">python3 tools/bridge.py</run>
    <expect timeout="5">^via bridge$</expect>
  </testcase>
</scenario>"#,
    ),
    (
        // A host command that talks to the console through TESTARENA_CONSOLE while the worker
        // keeps logging (and matching) the same output.
        "tools/bridge.py",
        r#"import os, socket
host, port = os.environ["TESTARENA_CONSOLE"].removeprefix("tcp://").rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
s.sendall(b"echo via bridge\n")
seen = b""
while b"via bridge\n" not in seen:
    seen += s.recv(4096)
print("bridge ok")
"#,
    ),
];

/// A bare repository served by `git daemon` on loopback, and a working clone to push from.
struct GitServer {
    daemon: Child,
    url: String,
    work: PathBuf,
}

impl GitServer {
    fn start(root: &Path) -> GitServer {
        let work = root.join("work");
        common::copy_demo_firmware(&work);
        for (path, text) in EXTRA_SCENARIOS {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-qm", "demo firmware"]);
        let served = root.join("served");
        std::fs::create_dir_all(&served).unwrap();
        git(
            &served,
            &["clone", "-q", "--bare", work.to_str().unwrap(), "fw.git"],
        );
        git(
            &work,
            &[
                "remote",
                "add",
                "origin",
                served.join("fw.git").to_str().unwrap(),
            ],
        );
        let port = free_port();
        let mut daemon = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
            ])
            .arg(format!("--base-path={}", served.display()))
            .arg(&served)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "git daemon did not start"
            );
            if let Ok(Some(s)) = daemon.try_wait() {
                panic!("git daemon exited: {s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        GitServer {
            daemon,
            url: format!("git://127.0.0.1:{port}/fw.git"),
            work,
        }
    }

    /// Commits a change on `branch` and pushes it.
    fn commit(&self, branch: &str, file: &str, text: &str, message: &str) -> String {
        git(&self.work, &["fetch", "-q", "origin"]);
        git(&self.work, &["checkout", "-q", "-B", branch, "origin/main"]);
        std::fs::write(self.work.join(file), text).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-qm", message]);
        git(
            &self.work,
            &["push", "-q", "-f", "origin", &format!("{branch}:{branch}")],
        );
        let out = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&self.work)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// A queue of `branch` of the served repository, with `scenarios` (none: the default set).
fn queue_of(server: &GitServer, branch: &str, scenarios: &[&str]) -> NewQueue {
    NewQueue {
        scenarios: (!scenarios.is_empty())
            .then(|| scenarios.iter().map(|s| s.to_string()).collect()),
        ..NewQueue::new(&server.url, branch)
    }
}

async fn submit(app: &App, new: NewQueue) -> i64 {
    app.submit(&new).await.id
}

async fn get_queue(app: &App, id: i64) -> Queue {
    app.api
        .queue(id)
        .await
        .unwrap_or_else(|e| panic!("queue {id}: {e}"))
}

async fn wait_until(app: &App, id: i64, within: Duration, done: impl Fn(&Queue) -> bool) -> Queue {
    app.wait_until(id, within, done).await
}

async fn wait_finished(app: &App, id: i64) -> Queue {
    let q = wait_until(app, id, Duration::from_secs(300), |q| {
        q.status.is_finished()
    })
    .await;
    assert_no_leftovers(app, id);
    q
}

fn assert_no_leftovers(app: &App, id: i64) {
    let work = app.data_dir.join("queues").join(id.to_string());
    let left = processes_under(&work);
    assert!(
        left.is_empty(),
        "processes of queue {id} still alive: {left:?}"
    );
}

fn case<'a>(q: &'a Queue, id: &str) -> &'a Case {
    q.tasks
        .iter()
        .flat_map(|t| &t.cases)
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("case {id} not in {q:#?}"))
}

/// Waits until the first case of the queue runs (its emulator is up).
async fn wait_first_case_running(app: &App, id: i64) -> Queue {
    wait_until(app, id, Duration::from_secs(120), |q| {
        q.tasks
            .first()
            .and_then(|t| t.cases.first())
            .is_some_and(|c| c.status == CaseStatus::Running)
    })
    .await
}

/// Asserts a case's status and that its message says `says`.
fn assert_case(q: &Queue, id: &str, status: CaseStatus, says: &str) {
    let c = case(q, id);
    assert_eq!(c.status, status, "{c:#?}");
    let message = c.message.as_deref().unwrap_or("");
    assert!(
        message.contains(says),
        "{id}'s message should say {says:?}: {message}"
    );
}

fn up(dir: &Path, extra: &[&str]) -> App {
    App::start("up", dir, extra)
}

#[tokio::test]
async fn default_scenarios_pass_with_reports_and_live_log() {
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::start(tmp.path());
    let app = up(&tmp.path().join("data"), &[]);
    let id = submit(&app, queue_of(&server, "main", &[])).await;
    let q = wait_finished(&app, id).await;
    assert_eq!(q.status, QueueStatus::Passed, "{q:#?}");
    assert_eq!(q.commit.as_deref().unwrap().len(), 40);
    assert_eq!(q.tasks.len(), 1, "default set is scenarios/*.xml");
    assert_eq!(q.summary.passed, 5);
    let ping = case(&q, "TC_PING");
    let queue_log = app.log_text(id).await;
    assert!(
        queue_log.contains("| pong"),
        "console lines are in queue.log"
    );
    assert!(
        queue_log.contains("xtensa-lx106-elf-gcc"),
        "build lines too"
    );
    let case_log = app.api.fetch_text(&ping.log_url).await.unwrap();
    assert!(
        case_log.contains("# send: ping") && case_log.contains("| pong"),
        "{case_log}"
    );
    // A case's log is its own range of the queue log: from its start to its verdict.
    assert!(queue_log.contains(&case_log), "{case_log}");
    let first = case_log.lines().next().unwrap_or_default();
    let last = case_log.lines().last().unwrap_or_default();
    assert!(
        first.contains("# case TC_PING '") && first.contains("' started (timeout "),
        "{case_log}"
    );
    assert!(last.contains("# case TC_PING passed in "), "{case_log}");
    assert_eq!(
        case_log.matches("# case ").count(),
        2,
        "no other case: {case_log}"
    );
    let html = app.api.fetch_text(&ping.html_url).await.unwrap();
    assert!(html.contains("pong") && html.contains("passed"));
    let junit = app.api.junit(id).await.unwrap();
    assert!(
        junit.contains("tests=\"5\"") && junit.contains("TC_PING"),
        "{junit}"
    );
    assert!(
        !app.data_dir.join("queues").join(id.to_string()).exists(),
        "nothing of the queue is left on the worker's disk: the database holds it"
    );
    // The log endpoint serves the same bytes, resumable by offset.
    let chunk = app.api.queue_log(id, 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&chunk.data), queue_log[10..]);
    assert_eq!(chunk.next, queue_log.len() as u64);
    assert!(chunk.finished());

    // Reports over HTTP: the case page's content type, the archive.
    // Raw, for the page's content type.
    let page = app.http.get(app.url(&ping.html_url)).send().await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.text().await.unwrap(), html);
    let tgz = app.api.archive(id).await.unwrap();
    let listing = tmp.path().join("archive.tgz");
    std::fs::write(&listing, &tgz).unwrap();
    let out = Command::new("tar")
        .arg("tzf")
        .arg(&listing)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&out.stdout);
    for f in [
        format!("queue-{id}/queue.log"),
        format!("queue-{id}/junit.xml"),
        format!("queue-{id}/01-smoke/TC_PING.html"),
        format!("queue-{id}/01-smoke/TC_PING.log"),
        format!("queue-{id}/build.log"),
    ] {
        assert!(names.lines().any(|l| l == f), "{f} not in archive: {names}");
    }
    assert!(!names.contains("/work/"), "the checkout is not archived");

    // The live stream: everything, then `end`; resuming from an id gives the rest, no duplicates.
    let sse = app
        .http
        .get(app.url(&format!("/api/v1/queues/{id}/log/stream")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data: String = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").or(l.strip_prefix("data:")))
        .filter(|l| *l != "{}")
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(data, queue_log, "SSE carries the whole log");
    assert!(sse.contains("event: end"));
    let first_id: u64 = sse
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .parse()
        .unwrap();
    let rest = app
        .http
        .get(app.url(&format!("/api/v1/queues/{id}/log/stream")))
        .header("last-event-id", first_id.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rest_data: String = rest
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").or(l.strip_prefix("data:")))
        .filter(|l| *l != "{}")
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(rest_data, queue_log[first_id as usize..]);

    let workers = app.api.workers().await.unwrap();
    assert_eq!(workers.workers.len(), 1, "{workers:?}");
}

#[tokio::test]
async fn failures_are_reported_with_their_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::start(tmp.path());
    let app = up(&tmp.path().join("data"), &[]);
    let scenarios = [
        "checks/fail_expect.xml",
        "checks/panic.xml",
        "checks/hang.xml",
        "checks/missing.xml",
        "checks/host.xml",
    ];
    let id = submit(&app, queue_of(&server, "main", &scenarios)).await;
    let q = wait_finished(&app, id).await;
    assert_eq!(
        q.status,
        QueueStatus::Error,
        "a missing scenario file is an infrastructure error: {q:#?}"
    );

    let wrong = case(&q, "TC_WRONG");
    assert_eq!(wrong.status, CaseStatus::Failed);
    let msg = wrong.message.as_deref().unwrap();
    assert!(
        msg.contains("^pang$") && msg.contains("pong"),
        "names the pattern and the last lines: {msg}"
    );
    assert_eq!(
        case(&q, "TC_AFTER").status,
        CaseStatus::Passed,
        "unconsumed output does not leak into the next case"
    );

    assert_case(&q, "TC_PANIC", CaseStatus::Failed, "Guru Meditation Error");

    assert_case(&q, "TC_HANG", CaseStatus::Failed, "timed out after 3s");
    assert_case(&q, "TC_IDLE", CaseStatus::Failed, "silent");

    let missing = q
        .tasks
        .iter()
        .find(|t| t.scenario == "checks/missing.xml")
        .unwrap();
    assert_eq!(missing.status, CaseStatus::Error);
    assert!(missing
        .error
        .as_deref()
        .unwrap()
        .contains("checks/missing.xml"));

    assert_eq!(case(&q, "TC_RUN").status, CaseStatus::Passed, "{q:#?}");
    assert_eq!(case(&q, "TC_REBOOT").status, CaseStatus::Passed, "{q:#?}");
    assert_eq!(case(&q, "TC_BRIDGE").status, CaseStatus::Passed, "{q:#?}");
    let bridge_log = app
        .api
        .fetch_text(&case(&q, "TC_BRIDGE").log_url)
        .await
        .unwrap();
    assert!(
        bridge_log.contains("| [run] bridge ok") && bridge_log.contains("| via bridge"),
        "{bridge_log}"
    );
    let run_log = app
        .api
        .fetch_text(&case(&q, "TC_RUN").log_url)
        .await
        .unwrap();
    assert!(run_log.contains("console at tcp://127.0.0.1:"), "{run_log}");
    let junit = app.api.junit(id).await.unwrap();
    assert!(
        junit.contains("<failure") && junit.contains("<error"),
        "{junit}"
    );

    // Re-run only what failed: the failed cases of their scenarios, and the scenario that could not run.
    let rerun = app
        .api
        .rerun_answer(id, &Rerun { only_failed: true })
        .await
        .unwrap();
    assert_eq!(rerun.status, 201);
    let q2 = wait_finished(&app, rerun.value.id).await;
    let ids: Vec<&str> = q2
        .tasks
        .iter()
        .flat_map(|t| &t.cases)
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(
        ids,
        vec!["TC_WRONG", "TC_PANIC", "TC_HANG", "TC_IDLE"],
        "{q2:#?}"
    );
    assert!(q2
        .scenarios
        .as_ref()
        .unwrap()
        .contains(&"checks/missing.xml".to_string()));
}

/// `text` says `function at src/main.c:N` (as the innermost frame, or the one a helper at the
/// address was inlined into), N on or just after the line where the example firmware defines
/// `function` (the compiler puts a function's entry on its opening brace or first statement).
fn assert_decoded(what: &str, text: &str, function: &str) {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo-firmware/src/main.c"),
    )
    .unwrap();
    let defined = source
        .lines()
        .position(|l| l.contains(&format!(" {function}(void)")) && !l.ends_with(';'))
        .unwrap_or_else(|| panic!("{function} not in main.c"))
        + 1;
    let said = format!(" {function} at src/main.c:");
    let line: usize = text
        .split(&said)
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{what} does not say {said:?}: {text}"));
    assert!(
        (defined..=defined + 3).contains(&line),
        "{what}: {function} is defined on line {defined}, decoded to line {line}: {text}"
    );
}

#[tokio::test]
async fn crash_addresses_are_decoded_against_the_elf() {
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::start(tmp.path());
    let app = up(&tmp.path().join("data"), &[]);
    let id = submit(&app, queue_of(&server, "main", &["checks/decode.xml"])).await;
    let q = wait_finished(&app, id).await;
    assert_eq!(q.status, QueueStatus::Failed, "{q:#?}");
    let junit = app.api.junit(id).await.unwrap();
    let queue_log = app.log_text(id).await;
    for (id, function) in [("TC_GURU", "cmd_panic"), ("TC_EPC", "cmd_exception")] {
        let c = case(&q, id);
        assert_eq!(c.status, CaseStatus::Failed, "{c:#?}");
        let message = c.message.as_deref().unwrap_or_default();
        assert!(
            message.contains("decoded addresses (build/fw.elf):"),
            "{message}"
        );
        assert_decoded("the API's message", message, function);
        // Under the crash in the case log, as event lines (so on its page and the live console).
        let log = app.api.fetch_text(&c.log_url).await.unwrap();
        let event = log
            .lines()
            .find(|l| l.contains(" → ") && l.contains(&format!(" {function} at")))
            .unwrap_or_else(|| panic!("no decoded line in the case log: {log}"));
        assert!(event.contains(" #   0x"), "an event line: {event}");
        assert_decoded("the case log", event, function);
        assert_decoded("the queue log", &queue_log, function);
        let html = app.api.fetch_text(&c.html_url).await.unwrap();
        assert_decoded("the HTML page", &html, function);
    }
    // JUnit: the failure message of each case.
    assert_decoded("JUnit", &junit, "cmd_panic");
    assert_decoded("JUnit", &junit, "cmd_exception");
    // The panic's backtrace has a second frame: the caller, inside the firmware's main loop.
    let guru = case(&q, "TC_GURU").message.as_deref().unwrap_or_default();
    assert!(guru.contains("fw_main at src/main.c:"), "{guru}");
}

#[tokio::test]
async fn per_case_boot_runs_teardown_and_reboot_keeps_fail_pattern() {
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::start(tmp.path());
    server.commit(
        "main",
        "checks/lifecycle.xml",
        r#"<scenario name="lifecycle" timeout="60" boot="per-case">
  <fail-pattern>Guru Meditation Error</fail-pattern>
  <setup><send>echo setup ran</send><expect timeout="5">^setup ran$</expect></setup>
  <testcase id="TC_A" timeout="20"><send>ping</send><expect timeout="5">^pong$</expect></testcase>
  <testcase id="TC_CRASH_AFTER_REBOOT" timeout="20"><reboot/><send>panic</send><expect timeout="10">^never$</expect></testcase>
  <teardown><send>echo teardown ran</send><expect timeout="5">^teardown ran$</expect></teardown>
</scenario>"#,
        "lifecycle scenario",
    );
    let app = up(&tmp.path().join("data"), &[]);
    let id = submit(&app, queue_of(&server, "main", &["checks/lifecycle.xml"])).await;
    let q = wait_finished(&app, id).await;
    assert_eq!(case(&q, "TC_A").status, CaseStatus::Passed, "{q:#?}");
    let crash = case(&q, "TC_CRASH_AFTER_REBOOT");
    assert_eq!(crash.status, CaseStatus::Failed);
    assert!(
        crash
            .message
            .as_deref()
            .unwrap()
            .contains("Guru Meditation"),
        "fail pattern still armed after reboot: {crash:#?}"
    );
    let log = app.log_text(id).await;
    // The crashed firmware answers nothing, so only the first teardown's echo comes back.
    assert_eq!(
        log.matches("# teardown\n").count(),
        2,
        "teardown after each per-case boot"
    );
    assert_eq!(log.matches("| teardown ran").count(), 1);
    assert_eq!(
        log.matches("| setup ran").count(),
        2,
        "setup after each per-case boot"
    );
}

#[tokio::test]
async fn build_failure_is_an_error_and_new_commits_are_fetched() {
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::start(tmp.path());
    let app = up(&tmp.path().join("data"), &[]);
    let smoke = ["scenarios/smoke.xml"];
    let first = submit(&app, queue_of(&server, "main", &smoke)).await;
    let q1 = wait_finished(&app, first).await;
    assert_eq!(q1.status, QueueStatus::Passed, "{q1:#?}");
    let mirrors: Vec<_> = std::fs::read_dir(app.data_dir.join("git"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(mirrors.len(), 1);
    let mirror = mirrors[0].path();
    let marker = mirror.join("testarena-marker");
    std::fs::write(&marker, "kept").unwrap();

    let broken = server.commit("broken", "src/main.c", "this is not C\n", "break the build");
    let bad = submit(&app, queue_of(&server, "broken", &[])).await;
    let qb = wait_finished(&app, bad).await;
    assert_eq!(qb.status, QueueStatus::Error, "{qb:#?}");
    assert_eq!(qb.commit.as_deref(), Some(broken.as_str()));
    assert!(
        qb.error.as_deref().unwrap().contains("build failed"),
        "{qb:#?}"
    );

    let newer = server.commit("main", "NEWS", "a new commit\n", "news");
    let second = submit(&app, queue_of(&server, "main", &smoke)).await;
    let q2 = wait_finished(&app, second).await;
    assert_eq!(q2.status, QueueStatus::Passed);
    assert_eq!(
        q2.commit.as_deref(),
        Some(newer.as_str()),
        "the next queue tests the new head"
    );
    assert_ne!(q2.commit, q1.commit);
    assert!(
        marker.exists(),
        "the mirror was fetched into, not cloned again"
    );

    let exact = NewQueue {
        commit: q1.commit.clone(),
        ..queue_of(&server, "main", &smoke)
    };
    let exact = submit(&app, exact).await;
    let q3 = wait_finished(&app, exact).await;
    assert_eq!(
        q3.commit, q1.commit,
        "an explicit commit wins over the branch head"
    );
}

#[tokio::test]
async fn abort_stops_a_running_queue_within_two_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::start(tmp.path());
    let app = up(&tmp.path().join("data"), &[]);
    let scenarios = ["checks/forever.xml", "scenarios/smoke.xml"];
    let id = submit(&app, queue_of(&server, "main", &scenarios)).await;
    wait_first_case_running(&app, id).await;
    let work = app.data_dir.join("queues").join(id.to_string());
    assert!(
        !processes_under(&work).is_empty(),
        "qemu runs while the case runs"
    );
    let asked = Instant::now();
    assert_eq!(app.api.abort_answer(id).await.unwrap().status, 200);
    let q = wait_until(&app, id, Duration::from_secs(10), |q| {
        q.status == QueueStatus::Aborted
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(2) + Duration::from_secs(3),
        "abort took {:?}",
        asked.elapsed()
    );
    assert_no_leftovers(&app, id);
    assert_eq!(case(&q, "TC_FOREVER").status, CaseStatus::Error);
    assert_eq!(q.tasks[1].status, CaseStatus::Skipped, "{q:#?}");
    // Raw, for its status: the typed call only says it succeeded.
    let r = app
        .http
        .delete(app.url(&format!("/api/v1/queues/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // The worker removes its scratch directory once the queue ended.
    let start = Instant::now();
    while work.exists() && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!work.exists());
}

#[tokio::test]
async fn a_killed_worker_leaves_no_qemu_and_its_queue_is_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::start(tmp.path());
    let data = tmp.path().join("data");
    let app = up(&data, &[]);
    let id = submit(&app, queue_of(&server, "main", &["checks/forever.xml"])).await;
    wait_first_case_running(&app, id).await;
    let work = data.join("queues").join(id.to_string());
    let before = processes_under(&work);
    assert!(!before.is_empty());
    // The task's sandbox (bubblewrap and the spawner in it) must go as well as the emulator.
    assert!(
        before.iter().any(|(_, c)| c.contains("__sandbox-spawner")),
        "{before:?}"
    );
    // SIGKILL the worker process only; its emulator lives in its own process group.
    let pid = app.child.id() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // Reap it without App's Drop, which would also kill the orphans this test is about.
    let mut app = app;
    let _ = app.child.wait();
    std::mem::forget(app);
    let app = up(&data, &[]);
    // The new worker kills what the dead one left, and takes the queue back.
    let q = wait_until(&app, id, Duration::from_secs(60), |q| q.attempts == 2).await;
    for (old, cmd) in &before {
        let alive = std::fs::read(format!("/proc/{old}/cmdline"))
            .map(|c| !c.is_empty())
            .unwrap_or(false);
        assert!(
            !alive,
            "process {old} ({cmd}) of the killed worker still runs"
        );
    }
    assert_ne!(q.status, QueueStatus::Waiting);
    assert_eq!(app.api.abort_answer(id).await.unwrap().status, 200);
    let q = wait_finished(&app, id).await;
    assert_eq!(q.status, QueueStatus::Aborted);
}

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_50mb_burst_streams_without_memory_growing_and_logs_are_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::start(tmp.path());
    let app = up(&tmp.path().join("data"), &["--log-cap", "20000000"]);
    let id = submit(&app, queue_of(&server, "main", &["checks/burst.xml"])).await;
    let q = wait_finished(&app, id).await;
    assert_eq!(q.status, QueueStatus::Passed, "{q:#?}");
    let peak = peak_rss_kb(app.child.id());
    // ~55 MB of console output (plus timestamps) went through; the worker must not hold it.
    assert!(peak > 0 && peak < 120 * 1024, "peak RSS {peak} kB");
    let log = case(&q, "TC_BURST").log_url.clone();
    let text = app
        .http
        .get(app.url(&log))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let size = text.len();
    assert!(size <= 20_000_000 + 1000, "case log capped: {size}");
    assert!(
        String::from_utf8_lossy(&text[text.len().saturating_sub(2000)..]).contains("log truncated")
    );
}

/// What the stand-in Gitea server received.
#[derive(Debug, Clone)]
struct StatusCall {
    path: String,
    auth: String,
    body: Value,
}

/// A stand-in for Gitea's `POST /api/v1/repos/{owner}/{repo}/statuses/{sha}` (API as documented
/// for Gitea 1.20–1.22): records each call; the first call is answered 500 to exercise retries.
async fn fake_gitea() -> (String, std::sync::Arc<std::sync::Mutex<Vec<StatusCall>>>) {
    use axum::extract::{Path as AxPath, State};
    use axum::http::HeaderMap;
    let calls: std::sync::Arc<std::sync::Mutex<Vec<StatusCall>>> = Default::default();
    async fn status(
        State(calls): State<std::sync::Arc<std::sync::Mutex<Vec<StatusCall>>>>,
        AxPath((owner, repo, sha)): AxPath<(String, String, String)>,
        headers: HeaderMap,
        body: axum::Json<Value>,
    ) -> axum::http::StatusCode {
        let mut c = calls.lock().unwrap();
        let first = c.is_empty();
        c.push(StatusCall {
            path: format!("/api/v1/repos/{owner}/{repo}/statuses/{sha}"),
            auth: headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
            body: body.0,
        });
        if first {
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        } else {
            axum::http::StatusCode::CREATED
        }
    }
    let app = axum::Router::new()
        .route(
            "/api/v1/repos/{owner}/{repo}/statuses/{sha}",
            axum::routing::post(status),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn gitea_push_creates_a_queue_and_its_verdict_becomes_a_commit_status() {
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::start(tmp.path());
    let (gitea_url, calls) = fake_gitea().await;
    let cfg = tmp.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gitea]\nsecret = \"s3cret\"\nurl = \"{gitea_url}\"\ntoken = \"tok123\"\npublic_url = \"http://arena.example\"\n\
             [[gitea.rules]]\nrepo = \"acme/fw\"\nbranches = [\"main\", \"release/*\"]\nset = \"smoke\"\n"
        ),
    )
    .unwrap();
    let app = up(
        &tmp.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let sha = {
        let out = Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&server.work)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let push = |branch: &str, repo: &str| {
        json!({"ref": format!("refs/heads/{branch}"), "before": "0".repeat(40), "after": sha,
               "repository": {"full_name": repo, "clone_url": server.url, "html_url": "http://gitea/acme/fw"}})
        .to_string()
    };
    let hook = app.url("/api/v1/hooks/gitea");
    let send = |body: String, sig: Option<String>| {
        let mut r = app
            .http
            .post(&hook)
            .header("content-type", "application/json")
            .header("x-gitea-event", "push")
            .body(body);
        if let Some(sig) = sig {
            r = r.header("x-gitea-signature", sig);
        }
        r.send()
    };
    // Bad or missing signatures: 401, nothing queued.
    let body = push("main", "acme/fw");
    assert_eq!(send(body.clone(), None).await.unwrap().status(), 401);
    assert_eq!(
        send(body.clone(), Some(sign("wrong", body.as_bytes())))
            .await
            .unwrap()
            .status(),
        401
    );
    let list = app.api.queues(&Default::default()).await.unwrap();
    assert_eq!(list.queues, vec![]);
    // Unknown repository or branch: 202 with the reason.
    for (branch, repo) in [("main", "other/repo"), ("feature/x", "acme/fw")] {
        let b = push(branch, repo);
        let r = send(b.clone(), Some(sign("s3cret", b.as_bytes())))
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert!(r.json::<Value>().await.unwrap()["ignored"]
            .as_str()
            .unwrap()
            .contains("no rule"));
    }
    // A matching push: a queue of the default scenarios at the pushed commit.
    let r = send(body.clone(), Some(sign("s3cret", body.as_bytes())))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Queue>().await.unwrap().id;
    let q = wait_finished(&app, id).await;
    assert_eq!(q.status, QueueStatus::Passed, "{q:#?}");
    assert_eq!(q.commit.as_deref(), Some(sha.as_str()));
    // pending at the start, success at the end (the first call got a 500 and was retried).
    let start = Instant::now();
    while !calls
        .lock()
        .unwrap()
        .iter()
        .any(|c| c.body["state"] == "success")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no success status: {:?}",
            calls.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = calls.lock().unwrap().clone();
    assert!(calls.len() >= 3, "{calls:?}");
    for c in &calls {
        assert_eq!(c.path, format!("/api/v1/repos/acme/fw/statuses/{sha}"));
        assert_eq!(c.auth, "token tok123");
        assert_eq!(c.body["context"], "testarena/smoke");
        assert_eq!(
            c.body["target_url"],
            format!("http://arena.example/#/queues/{id}")
        );
        assert!(c.body["description"].is_string());
    }
    assert_eq!(calls[0].body["state"], "pending");
    assert_eq!(calls[1].body["state"], "pending", "retried after the 500");
    assert_eq!(calls.last().unwrap().body["state"], "success");
}

#[tokio::test]
async fn concurrency_runs_queues_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::start(tmp.path());
    let app = up(&tmp.path().join("data"), &["--concurrency", "2"]);
    let new = queue_of(&server, "main", &["checks/forever.xml"]);
    let a = submit(&app, new.clone()).await;
    let b = submit(&app, new.clone()).await;
    let c = submit(&app, new).await;
    for id in [a, b] {
        wait_first_case_running(&app, id).await;
    }
    assert_eq!(
        get_queue(&app, c).await.status,
        QueueStatus::Waiting,
        "a third waits for a free slot"
    );
    let workers = app.api.workers().await.unwrap();
    let mut running = workers.workers[0].running.clone();
    running.sort();
    assert_eq!(running, vec![a, b]);
    for id in [a, b, c] {
        app.api.abort(id).await.unwrap();
    }
    for id in [a, b, c] {
        assert_eq!(wait_finished(&app, id).await.status, QueueStatus::Aborted);
    }
}

#[tokio::test]
async fn sigterm_hands_running_queues_back_and_leaves_no_emulator() {
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::start(tmp.path());
    let data = tmp.path().join("data");
    let app = up(&data, &["--grace", "1s"]);
    let id = submit(&app, queue_of(&server, "main", &["checks/forever.xml"])).await;
    wait_first_case_running(&app, id).await;
    let work = data.join("queues").join(id.to_string());
    assert!(!processes_under(&work).is_empty());
    let asked = Instant::now();
    let status = app.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "the queue had its grace period, then was stopped: took {took:?}"
    );
    assert!(
        processes_under(&work).is_empty(),
        "the emulator died with the worker"
    );
    // Handed back before exit, not failed: a new server shows it waiting for another worker.
    let app = App::start("serve", &data, &[]);
    let q = get_queue(&app, id).await;
    assert_eq!(q.status, QueueStatus::Waiting, "{q:#?}");
    assert_eq!(
        (q.error.as_deref(), q.worker.as_deref()),
        (None, None),
        "{q:#?}"
    );
    assert_eq!(q.attempts, 1, "{q:#?}");
    assert!(
        q.tasks
            .iter()
            .all(|t| t.status == CaseStatus::Pending && t.cases.is_empty()),
        "it starts over: {q:#?}"
    );
    let log = app.log_text(id).await;
    assert!(log.contains("handed back"), "{log}");
    drop(app);
    // Another worker takes it and starts it over.
    let app = up(&data, &["--grace", "0s"]);
    wait_first_case_running(&app, id).await;
    assert_eq!(get_queue(&app, id).await.attempts, 2);
    let status = app.stop();
    assert!(status.success(), "{status}");
    assert!(
        processes_under(&work).is_empty(),
        "--grace 0s stops at once"
    );
}

#[tokio::test]
async fn sigterm_lets_a_short_queue_finish_within_the_grace_period() {
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::start(tmp.path());
    let data = tmp.path().join("data");
    let app = up(&data, &["--grace", "2m"]);
    let id = submit(&app, queue_of(&server, "main", &["checks/slow.xml"])).await;
    wait_first_case_running(&app, id).await;
    let asked = Instant::now();
    let status = app.stop();
    assert!(
        asked.elapsed() < Duration::from_secs(60),
        "it stopped once the queue ended, not at the end of the grace period"
    );
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let work = data.join("queues").join(id.to_string());
    assert!(processes_under(&work).is_empty(), "nothing is left behind");
    let app = App::start("serve", &data, &[]);
    let q = get_queue(&app, id).await;
    assert_eq!(q.status, QueueStatus::Passed, "it finished: {q:#?}");
    assert_eq!(q.attempts, 1);
}

/// The files of a tar.gz, by name.
fn untar(data: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Read;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(data));
    let mut files = std::collections::BTreeMap::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        files.insert(name, bytes);
    }
    files
}

#[tokio::test]
async fn a_failed_case_has_a_repro_bundle_that_replays_to_the_same_failure_without_building() {
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::start(tmp.path());
    let app = up(&tmp.path().join("data"), &[]);
    let id = submit(&app, queue_of(&server, "main", &["checks/fail_expect.xml"])).await;
    let q = wait_finished(&app, id).await;
    assert_eq!(q.status, QueueStatus::Failed, "{q:#?}");
    assert_case(&q, "TC_WRONG", CaseStatus::Failed, "^pang$");
    let commit = q.commit.clone().expect("the queue's commit");

    // A passed case has no bundle; nor has a case that does not exist.
    for (case, says) in [
        ("TC_AFTER", "only a failed or errored case"),
        ("TC_NONE", "no case"),
    ] {
        let (status, body) = app
            .get_json(&format!("/api/v1/queues/{id}/cases/{case}/repro"))
            .await;
        assert_eq!(status, 404, "{case}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{case}: {message}");
    }

    let bundle = app.api.repro(id, "TC_WRONG", None).await.unwrap();
    let files = untar(&bundle);
    let top = format!("repro-{id}-TC_WRONG");
    let file = |name: &str| {
        files
            .get(&format!("{top}/{name}"))
            .unwrap_or_else(|| panic!("{name} not in {:?}", files.keys()))
    };
    let elf = file("files/build/fw.elf");
    assert!(
        elf.starts_with(b"\x7fELF"),
        "the booted image is in the bundle"
    );
    let manifest: Value = serde_json::from_slice(file("manifest.json")).unwrap();
    assert_eq!(manifest["commit"], commit.as_str(), "{manifest}");
    assert_eq!(manifest["repo"], server.url.as_str(), "{manifest}");
    let command = manifest["emulator_command"].as_str().unwrap();
    assert!(
        command.starts_with("qemu-system-xtensa") && command.contains("-kernel build/fw.elf"),
        "{manifest}"
    );
    assert_eq!(manifest["images"], json!(["build/fw.elf"]), "{manifest}");
    assert_eq!(manifest["left_out"], json!([]), "{manifest}");
    let toml = String::from_utf8_lossy(file("files/testarena.toml")).into_owned();
    assert!(toml.contains("qemu-system-xtensa"), "{toml}");
    let scenario = String::from_utf8_lossy(file("files/checks/fail_expect.xml")).into_owned();
    assert!(scenario.contains("TC_WRONG"), "{scenario}");
    let case_json: Value = serde_json::from_slice(file("case.json")).unwrap();
    assert_eq!(case_json["case"], "TC_WRONG");
    assert_eq!(case_json["scenario"], "checks/fail_expect.xml");
    let transcript = String::from_utf8_lossy(file("transcript.log")).into_owned();
    assert!(
        transcript.contains("| pong") && transcript.contains("^pang$"),
        "the case's own transcript: {transcript}"
    );
    assert!(
        !transcript.contains("still alive"),
        "not the next case's: {transcript}"
    );

    // Replayed here from the bundle alone: the same failure, no build.
    let desk = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(desk.path().join("tmp")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_testarena"))
        .args(["repro", &id.to_string(), "TC_WRONG", "--server", &app.base])
        .current_dir(desk.path())
        .env("TMPDIR", desk.path().join("tmp"))
        .env("TESTARENA_CONFIG", "/dev/null")
        .env_remove("TESTARENA_DATA_DIR")
        .env_remove("TESTARENA_DATABASE_URL")
        .output()
        .expect("testarena repro");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains(&commit), "{stdout}");
    assert!(
        stdout.contains("no build: the firmware images are the repro bundle's")
            && !stdout.contains("build: make"),
        "nothing is built: {stdout}"
    );
    assert!(
        stdout.contains("| pong") && stdout.contains("expected /^pang$/"),
        "the console live, and the same failure: {stdout}"
    );
    assert!(!stdout.contains("TC_AFTER"), "only that case: {stdout}");
    let replayed = desk.path().join("testarena-repro");
    assert!(replayed.join("junit.xml").is_file());
    assert!(replayed.join("original-transcript.log").is_file());
    assert!(replayed.join("repro.tar.gz").is_file());
    let left: Vec<_> = std::fs::read_dir(desk.path().join("tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}
