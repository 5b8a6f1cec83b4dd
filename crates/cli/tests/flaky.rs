//! Retries and flaky verdicts (issue 16) against a real `testarena up`: a case whose `<run>`
//! step fails on its first try and passes on its second is `flaky` in the API, its queue passes
//! and counts it (`summary.flaky`), its log holds every try, `testarena show` says "passed, 1
//! flaky", and the JUnit report, read by `junitparser` (PyPI) as Maven Surefire's is, shows a
//! passed testcase with a `<flakyFailure>`; a case that fails every try stays `failed` with
//! `<rerunFailure>`s. The "emulator" is a shell script (`cat`-like), so these need no QEMU.

mod common;

use common::App;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testarena_client::{CaseStatus, NewQueue, Queue, QueueStatus};

/// The firmware stand-in: `ready`, then `ping` → `pong`, anything else echoed.
const FIRMWARE: &str = "echo ready\nwhile read line; do\n  case \"$line\" in\n    ping) echo pong ;;\n    *) echo \"$line\" ;;\n  esac\ndone\n";

/// FLAKY fails on its first try (its `<run>` leaves `flag` in the checkout) and passes on the
/// second; SOLID passes; BAD fails every one of its 3 tries (its own `retries`).
const SCENARIO: &str = r#"<scenario name="flaky" timeout="120">
  <testcase id="FLAKY" timeout="30">
    <run>test -f flag &amp;&amp; echo second-try-passes &amp;&amp; exit 0; touch flag; echo first-try-fails; exit 1</run>
    <send>ping</send>
    <expect timeout="10">^pong$</expect>
  </testcase>
  <testcase id="SOLID" timeout="30"><send>ping</send><expect timeout="10">^pong$</expect></testcase>
</scenario>"#;

const FAILING: &str = r#"<scenario name="failing" timeout="120">
  <testcase id="BAD" timeout="30" retries="2"><send>ping</send><expect timeout="0.3">^never$</expect></testcase>
</scenario>"#;

/// Reads a JUnit file with `junitparser.xunit2` (the Surefire flavour) and prints what it
/// found as JSON: each suite's counts, each case's final results and flaky and re-run failures.
const READER: &str = r#"
import json, sys
from junitparser.xunit2 import JUnitXml
xml = JUnitXml.fromfile(sys.argv[1])
out = {"suites": [], "cases": {}}
for suite in xml:
    out["suites"].append({"name": suite.name, "tests": suite.tests, "failures": suite.failures,
                          "errors": suite.errors, "skipped": suite.skipped})
    for case in suite:
        out["cases"][case.name] = {
            "passed": case.is_passed,
            "flaky": case.is_flaky,
            "results": [r._tag for r in case.result],
            "failure": [r.message for r in case.result],
            "flaky_failures": [[f.message, f.type, f.stack_trace, f.system_out] for f in case.flaky_failures()],
            "rerun_failures": [[f.message, f.type, f.stack_trace] for f in case.rerun_failures()],
        }
print(json.dumps(out))
"#;

fn repo(root: &Path) -> PathBuf {
    let dir = root.join("repos").join("r");
    let toml = "[emulator]\ncommand = 'sh fw.sh'\nconsole = \"stdio\"\nready = \"^ready$\"\nboot_timeout = \"20s\"\n";
    common::git_repo(
        &dir,
        &[
            ("testarena.toml", toml),
            ("fw.sh", FIRMWARE),
            ("scenarios/flaky.xml", SCENARIO),
            ("scenarios/failing.xml", FAILING),
        ],
    );
    dir
}

fn start(root: &Path) -> App {
    let repos = root.join("repos");
    std::fs::create_dir_all(&repos).unwrap();
    App::start(
        "up",
        &root.join("data"),
        &["--allow-local-repos", repos.to_str().unwrap()],
    )
}

async fn finished(app: &App, id: i64) -> Queue {
    app.wait_until(id, Duration::from_secs(120), |q| q.status.is_finished())
        .await
}

/// What `junitparser` makes of queue `id`'s JUnit report.
async fn junitparser(app: &App, id: i64, dir: &Path) -> Value {
    let xml = app.api.junit(id).await.unwrap();
    let file = dir.join(format!("junit-{id}.xml"));
    std::fs::write(&file, &xml).unwrap();
    let out = Command::new("python3")
        .args(["-c", READER])
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "junitparser (PyPI) must be installed (make test installs it): {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_case_that_fails_then_passes_is_flaky_everywhere_and_its_queue_passes() {
    let root = tempfile::tempdir().unwrap();
    let repo = repo(root.path());
    let app = start(root.path());
    let new = NewQueue {
        scenarios: Some(vec!["scenarios/flaky.xml".into()]),
        // No retries in the scenario: the queue's default.
        retries: Some(1),
        ..NewQueue::new(repo.to_str().unwrap(), "main")
    };
    let id = app.submit(&new).await.id;
    let q = finished(&app, id).await;
    assert_eq!(q.status, QueueStatus::Passed, "{q:#?}");
    assert_eq!(q.retries, 1);
    assert_eq!(
        (
            q.summary.total,
            q.summary.passed,
            q.summary.flaky,
            q.summary.failed
        ),
        (2, 1, 1, 0)
    );
    let cases = &q.tasks[0].cases;
    assert_eq!(cases[0].status, CaseStatus::Flaky);
    let message = cases[0].message.as_deref().unwrap();
    assert!(
        message.starts_with("flaky: failed on try 1 (step <run>")
            && message.ends_with("command exited with code 1, expected 0), passed on try 2"),
        "{message}"
    );
    assert_eq!(cases[1].status, CaseStatus::Passed);
    let (_, raw) = app.get_json(&format!("/api/v1/queues/{id}")).await;
    assert_eq!(raw["summary"]["flaky"], 1);
    assert_eq!(raw["tasks"][0]["cases"][0]["status"], "flaky");

    // Every try's output is in the case's log, each try marked.
    let log = app.api.case_log(id, "FLAKY", None).await.unwrap();
    let log = String::from_utf8_lossy(&log);
    for want in [
        "# case FLAKY try 1 of 2\n",
        "| [run] first-try-fails\n",
        "# case FLAKY try 1 of 2 failed in ",
        "# case FLAKY try 2 of 2 (same boot)\n",
        "| [run] second-try-passes\n",
        "# case FLAKY flaky in ",
    ] {
        assert!(log.contains(want), "{want:?} not in\n{log}");
    }

    // The CLI says so.
    let show = Command::new(env!("CARGO_BIN_EXE_testarena"))
        .args(["show", &id.to_string(), "--server", &app.base])
        .env_remove("TESTARENA_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("status    passed, 1 flaky"), "{text}");
    assert!(text.contains("FLAKY") && text.contains("flaky  "), "{text}");

    // JUnit as Surefire writes a flaky test, read by junitparser.
    let dir = root.path();
    let j = junitparser(&app, id, dir).await;
    assert_eq!(
        j["suites"],
        serde_json::json!([{"name": "flaky", "tests": 2, "failures": 0, "errors": 0, "skipped": 0}]),
        "{j}"
    );
    let flaky = &j["cases"]["FLAKY"];
    assert_eq!(flaky["passed"], true, "{j}");
    assert_eq!(flaky["flaky"], true, "{j}");
    assert_eq!(flaky["results"], serde_json::json!([]), "{j}");
    let ff = flaky["flaky_failures"].as_array().unwrap();
    assert_eq!(ff.len(), 1, "{j}");
    assert!(
        ff[0][0].as_str().unwrap().starts_with("try 1: step <run>"),
        "{j}"
    );
    assert_eq!(ff[0][1], "exit-code");
    assert!(ff[0][2]
        .as_str()
        .unwrap()
        .contains("command exited with code 1, expected 0"));
    assert!(
        ff[0][3].as_str().unwrap().contains("first-try-fails"),
        "{j}"
    );
    assert_eq!(j["cases"]["SOLID"]["flaky"], false, "{j}");

    // A case failing every try stays failed, with a re-run failure for each later try.
    let new = NewQueue {
        scenarios: Some(vec!["scenarios/failing.xml".into()]),
        ..NewQueue::new(repo.to_str().unwrap(), "main")
    };
    let id = app.submit(&new).await.id;
    let q = finished(&app, id).await;
    assert_eq!(q.status, QueueStatus::Failed, "{q:#?}");
    assert_eq!((q.summary.failed, q.summary.flaky), (1, 0));
    let bad = &q.tasks[0].cases[0];
    assert_eq!(bad.status, CaseStatus::Failed);
    assert!(
        bad.message
            .as_deref()
            .unwrap()
            .starts_with("failed on all 3 tries: try 1 (step <expect>"),
        "{bad:?}"
    );
    let j = junitparser(&app, id, dir).await;
    assert_eq!(j["suites"][0]["failures"], 1, "{j}");
    let bad = &j["cases"]["BAD"];
    assert_eq!(bad["results"], serde_json::json!(["failure"]), "{j}");
    let reruns = bad["rerun_failures"].as_array().unwrap();
    let messages: Vec<&str> = reruns.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(messages.len(), 2, "{j}");
    assert!(
        messages[0].starts_with("try 2: step <expect>") && messages[1].starts_with("try 3: "),
        "{j}"
    );
    assert_eq!(reruns[0][1], "expect-timeout");
}
