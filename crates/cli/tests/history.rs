//! A case's history and the comparison of two queues against a real `testarena up` (issue 16):
//! a local git repository with three commits and five queues on them, whose "emulator" (a
//! shell script, no QEMU) answers `a` and `b` as the commit's `passing.txt` says, so the
//! verdicts of TC_A and TC_B change from commit to commit. Checked through the HTTP API and
//! the `history` and `compare` commands.

mod common;

use common::App;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testarena_client::{HistoryQuery, NewQueue, QueueListQuery, QueueStatus, ResultStatus};

/// The emulator: answers each command with `<cmd>-ok` if the commit's `passing.txt` lists
/// it, `<cmd>-bad` otherwise.
const EMULATOR: &str = r#"while read -r cmd; do
  if grep -qx "$cmd" passing.txt; then echo "$cmd-ok"; else echo "$cmd-bad"; fi
done
"#;

const SCENARIO: &str = r#"<scenario name="ab" timeout="60">
  <fail-pattern>-bad$</fail-pattern>
  <testcase id="TC_A" timeout="20"><send>a</send><expect timeout="10">^a-ok$</expect></testcase>
  <testcase id="TC_B" timeout="20"><send>b</send><expect timeout="10">^b-ok$</expect></testcase>
</scenario>
"#;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The repository at its first commit: `a` passes, `b` fails.
fn repo(root: &Path) -> PathBuf {
    let dir = root.join("repos").join("fw");
    common::git_repo(
        &dir,
        &[
            (
                "testarena.toml",
                "[emulator]\ncommand = \"sh emu.sh\"\nconsole = \"stdio\"\n",
            ),
            ("emu.sh", EMULATOR),
            ("scenarios/ab.xml", SCENARIO),
            ("passing.txt", "a\n"),
        ],
    );
    dir
}

/// Commits `passing` as `passing.txt`; returns the new commit.
fn commit(dir: &Path, passing: &str) -> String {
    std::fs::write(dir.join("passing.txt"), passing).unwrap();
    git(dir, &["commit", "-qam", passing.trim()]);
    git(dir, &["rev-parse", "HEAD"])
}

/// Submits a queue of `main` and waits for its verdict.
async fn run(app: &App, repo: &Path, expect: QueueStatus) -> i64 {
    let id = app
        .submit(&NewQueue::new(repo.to_str().unwrap(), "main"))
        .await
        .id;
    let q = app
        .wait_until(id, Duration::from_secs(120), |q| q.status.is_finished())
        .await;
    assert_eq!(q.status, expect, "{}", app.log_text(id).await);
    id
}

/// The statuses and queues of a history, newest first.
fn trail(h: &Value) -> Vec<(String, i64)> {
    h["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap().to_string(),
                r["queue"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Runs the `testarena` client command `args` against `app`; its stdout.
fn cli(app: &App, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_testarena"))
        .args(args)
        .args(["--server", &app.base])
        .env("TESTARENA_CONFIG", "/dev/null")
        .env_remove("TESTARENA_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn history_rates_change_points_and_compare_over_three_commits() {
    let root = tempfile::tempdir().unwrap();
    let repo = repo(root.path());
    let c1 = git(&repo, &["rev-parse", "HEAD"]);
    let repos = root.path().join("repos");
    let app = App::start(
        "up",
        &root.path().join("data"),
        &["--allow-local-repos", repos.to_str().unwrap()],
    );

    let q1 = run(&app, &repo, QueueStatus::Failed).await;
    let q2 = run(&app, &repo, QueueStatus::Failed).await;
    let c2 = commit(&repo, "b\n");
    let q3 = run(&app, &repo, QueueStatus::Failed).await;
    let q4 = run(&app, &repo, QueueStatus::Failed).await;
    let c3 = commit(&repo, "a\nb\n");
    let q5 = run(&app, &repo, QueueStatus::Passed).await;

    // TC_A: passed on c1, failed on c2, passed on c3.
    let path = |case: &str| {
        format!(
            "/api/v1/history?repo={}&scenario=scenarios/ab.xml&case={case}&branch=main",
            repo.display()
        )
    };
    let (status, a) = app.get_json(&path("TC_A")).await;
    assert_eq!(status, 200, "{a}");
    let s = |v: &str| v.to_string();
    assert_eq!(
        trail(&a),
        [
            (s("passed"), q5),
            (s("failed"), q4),
            (s("failed"), q3),
            (s("passed"), q2),
            (s("passed"), q1)
        ]
    );
    assert_eq!(a["results"][0]["commit"], json!(c3));
    assert_eq!(a["results"][0]["branch"], "main");
    assert!(a["results"][0]["finished_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(a["results"][0]["duration_ms"].is_u64(), "{a}");
    assert_eq!(a["pass_rate"], json!(0.6));
    assert_eq!(a["flaky_rate"], json!(0.0));
    assert_eq!(a["flaky_commits"], json!([]));
    assert_eq!(
        a["change_points"],
        json!([
            {"commit": c2, "from": "passed", "to": "failed", "queue": q3},
            {"commit": c3, "from": "failed", "to": "passed", "queue": q5},
        ])
    );
    assert_eq!(
        a["counts"],
        json!({"passed": 3, "failed": 2, "error": 0, "skipped": 0, "flaky": 0})
    );
    // TC_B: failed on c1, passed since; the typed client reads the same.
    let b = app
        .api
        .case_history(&HistoryQuery {
            repo: repo.display().to_string(),
            scenario: "scenarios/ab.xml".into(),
            case: "TC_B".into(),
            branch: None,
            limit: Some(3),
        })
        .await
        .unwrap();
    let statuses: Vec<ResultStatus> = b.results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [ResultStatus::Passed; 3]);
    assert_eq!(b.stats.pass_rate, Some(1.0));
    let full = app.get_json(&path("TC_B")).await.1;
    assert_eq!(full["pass_rate"], json!(0.6));
    assert_eq!(
        full["change_points"],
        json!([{"commit": c2, "from": "failed", "to": "passed", "queue": q3}])
    );

    // Each run names the previous one and counts what got worse: only q3 (TC_A).
    let regressions: Vec<(Value, Value)> = {
        let mut out = Vec::new();
        for id in [q1, q2, q3, q4, q5] {
            let q = app.get_json(&format!("/api/v1/queues/{id}")).await.1;
            out.push((q["previous_id"].clone(), q["regressions"].clone()));
        }
        out
    };
    assert_eq!(
        regressions,
        [
            (Value::Null, Value::Null),
            (json!(q1), json!(0)),
            (json!(q2), json!(1)),
            (json!(q3), json!(0)),
            (json!(q4), json!(0)),
        ]
    );
    let worse = app
        .api
        .queues(&QueueListQuery::default().with_worse())
        .await
        .unwrap();
    assert_eq!(worse.queues.iter().map(|q| q.id).collect::<Vec<_>>(), [q3]);

    // Compare q2 (c1) with q3 (c2): TC_A newly failing, TC_B newly passing.
    let (status, cmp) = app
        .get_json(&format!("/api/v1/queues/{q2}/compare/{q3}"))
        .await;
    assert_eq!(status, 200, "{cmp}");
    let ids = |list: &str| -> Vec<String> {
        cmp[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["case"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("newly_failing"), ["TC_A"]);
    assert_eq!(ids("newly_passing"), ["TC_B"]);
    for list in ["still_failing", "new", "removed"] {
        assert!(ids(list).is_empty(), "{list}: {cmp}");
    }
    let worse_case = &cmp["newly_failing"][0];
    assert_eq!(worse_case["scenario"], "scenarios/ab.xml");
    assert_eq!(
        (&worse_case["base_status"], &worse_case["head_status"]),
        (&json!("passed"), &json!("failed"))
    );
    assert!(
        worse_case["head_message"]
            .as_str()
            .unwrap()
            .contains("a-bad"),
        "{cmp}"
    );
    assert_eq!(cmp["base"]["commit"], json!(c1));
    assert_eq!(cmp["head"]["commit"], json!(c2));
    let previous = app.api.compare_previous(q3).await.unwrap().value;
    assert_eq!((previous.base.id, previous.head.id), (q2, q3));
    assert_eq!(previous.counts.newly_failing, 1);

    // The strips of a queue: every case with its results up to it.
    let strips = app
        .get_json(&format!("/api/v1/queues/{q4}/history?limit=30"))
        .await
        .1;
    let a_strip = &strips["cases"][0];
    assert_eq!(a_strip["case"], "TC_A");
    assert_eq!(
        trail(a_strip),
        [
            (s("failed"), q4),
            (s("failed"), q3),
            (s("passed"), q2),
            (s("passed"), q1)
        ]
    );
    assert_eq!(strips["cases"][1]["flaky"], json!(false));
    assert_eq!(strips["next"], Value::Null);

    // Bad queries are 400 bad_query, unknown queues 404; never 500.
    for (query, mentions) in [
        ("scenario=s.xml&case=A", "repo: is required"),
        ("repo=r&case=A", "scenario: is required"),
        ("repo=r&scenario=s.xml", "case: is required"),
        (
            "repo=r&scenario=s.xml&case=A&limit=0",
            "limit: must be a number from 1 to 500",
        ),
        ("repo=r&scenario=s.xml&case=A&limit=501", "limit: must be"),
        (
            "repo=r&scenario=s.xml&case=A%00",
            "case: must not contain control characters",
        ),
    ] {
        let (status, body) = app.get_json(&format!("/api/v1/history?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_query", "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{query}: {message}");
    }
    for path in [
        format!("/api/v1/queues/{q1}/history?limit=101"),
        format!("/api/v1/queues/{q1}/history?cases=0"),
        format!("/api/v1/queues/{q1}/history?after=x"),
        "/api/v1/queues?worse=maybe".to_string(),
    ] {
        let (status, body) = app.get_json(&path).await;
        assert_eq!(
            (status.as_u16(), &body["error"]["code"]),
            (400, &json!("bad_query")),
            "{path}: {body}"
        );
    }
    for path in [
        format!("/api/v1/queues/{q1}/compare/9999"),
        format!("/api/v1/queues/9999/compare/{q1}"),
        format!("/api/v1/queues/{q1}/compare/x"),
        format!("/api/v1/queues/{q1}/compare/previous"),
        "/api/v1/queues/9999/history".to_string(),
    ] {
        let (status, body) = app.get_json(&path).await;
        assert_eq!(
            (status.as_u16(), &body["error"]["code"]),
            (404, &json!("not_found")),
            "{path}: {body}"
        );
    }

    // The commands print readable tables.
    let text = cli(
        &app,
        &[
            "history",
            "--repo",
            repo.to_str().unwrap(),
            "--scenario",
            "scenarios/ab.xml",
            "--case",
            "TC_A",
            "--branch",
            "main",
        ],
    );
    assert!(text.contains("pass rate 60% (3 of 5)"), "{text}");
    assert!(
        text.contains(&format!("{}  passed -> failed  (queue {q3})", &c2[..7])),
        "{text}"
    );
    assert!(text.contains("QUEUE  STATUS"), "{text}");
    let text = cli(&app, &["compare", &q2.to_string(), &q3.to_string()]);
    assert!(text.contains("newly failing (1):"), "{text}");
    assert!(text.contains("newly passing (1):"), "{text}");
    assert!(text.contains("TC_A  passed  failed"), "{text}");
    let worse = cli(&app, &["queues", "--worse"]);
    let ids: Vec<&str> = worse
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids, [q3.to_string()], "{worse}");
    let json_text = cli(
        &app,
        &["compare", &q2.to_string(), &q3.to_string(), "--json"],
    );
    let parsed: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(parsed["counts"]["newly_failing"], 1);
}
