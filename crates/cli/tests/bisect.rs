//! Bisecting (issue 16) with the real binary against a real git repository of 16 commits:
//! commit 11 breaks case TC_SUM, commit 13 breaks case TC_NOISE, commit 6 does not build. The
//! "firmware" is a shell script that answers on its console (stdio), so no QEMU is needed.
//!
//! `POST /api/v1/bisects` finds commit 11 in at most 5 steps besides skips and the API names
//! it with its subject and author; `testarena bisect --wait` prints it and exits 0, and only the
//! case asked for decides; an undecidable range exits 2; an abort stops the step queue; bad
//! input is refused. One more test runs `serve` and a separate `worker` on PostgreSQL.

mod common;

use common::{App, Database};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use testarena_client::{Bisect, BisectStatus, NewBisect, QueueStatus, StepVerdict};

const BUILD: &str = r#"v=$(cat version)
if [ "$v" = 6 ]; then echo "build.sh: syntax error in commit 6" >&2; exit 1; fi
echo "$v" > fw.txt
"#;

/// The firmware: `sum` is wrong from commit 11 on, `noise` from commit 13 on.
const FIRMWARE: &str = r#"v=$(cat fw.txt)
echo ready
while read -r cmd; do
  case "$cmd" in
    ping) echo pong ;;
    sum) if [ "$v" -ge 11 ]; then echo "sum=5"; else echo "sum=4"; fi ;;
    noise) if [ "$v" -ge 13 ]; then echo "noise=loud"; else echo "noise=quiet"; fi ;;
  esac
done
"#;

const SCENARIO: &str = r#"<scenario name="s" timeout="60">
  <testcase id="TC_PING" timeout="20"><send>ping</send><expect timeout="10">^pong$</expect></testcase>
  <testcase id="TC_SUM" timeout="20">
    <fail-pattern>^sum=5$</fail-pattern>
    <send>sum</send><expect timeout="10">^sum=4$</expect>
  </testcase>
  <testcase id="TC_NOISE" timeout="20">
    <fail-pattern>^noise=loud$</fail-pattern>
    <send>noise</send><expect timeout="10">^noise=quiet$</expect>
  </testcase>
</scenario>"#;

/// Commit `n`'s subject and author.
fn subject(n: usize) -> String {
    match n {
        11 => "sum: count from one".into(),
        _ => format!("change {n}"),
    }
}

fn author(n: usize) -> (String, String) {
    (format!("Dev {n}"), format!("dev{n}@example.com"))
}

/// The repository under `root/repos/r`, on `main`; returns its path and the SHAs of commits
/// 1..=16 (index 0 is commit 1).
fn repo(root: &Path) -> (PathBuf, Vec<String>) {
    let dir = root.join("repos").join("r");
    std::fs::create_dir_all(dir.join("scenarios")).unwrap();
    let toml = "[build]\ncommand = 'sh build.sh'\n[emulator]\ncommand = 'sh firmware.sh'\n\
                console = \"stdio\"\nready = \"^ready$\"\n";
    std::fs::write(dir.join("testarena.toml"), toml).unwrap();
    std::fs::write(dir.join("build.sh"), BUILD).unwrap();
    std::fs::write(dir.join("firmware.sh"), FIRMWARE).unwrap();
    std::fs::write(dir.join("scenarios/s.xml"), SCENARIO).unwrap();
    git(&dir, &["init", "-q", "-b", "main"], None);
    let mut shas = Vec::new();
    for n in 1..=16 {
        std::fs::write(dir.join("version"), format!("{n}\n")).unwrap();
        git(&dir, &["add", "-A"], None);
        git(&dir, &["commit", "-qm", &subject(n)], Some(author(n)));
        shas.push(git(&dir, &["rev-parse", "HEAD"], None).trim().to_string());
    }
    git(&dir, &["tag", "v1.0", &shas[0]], None);
    (dir, shas)
}

fn git(dir: &Path, args: &[&str], author: Option<(String, String)>) -> String {
    let mut cmd = Command::new("git");
    cmd.args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir);
    if let Some((name, email)) = author {
        cmd.env("GIT_AUTHOR_NAME", name)
            .env("GIT_AUTHOR_EMAIL", email);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn start(root: &Path) -> App {
    let repos = root.join("repos");
    App::start(
        "up",
        &root.join("data"),
        &["--allow-local-repos", repos.to_str().unwrap()],
    )
}

/// Polls the bisect until it ends; panics after `within`.
async fn finished(app: &App, id: i64, within: Duration) -> Bisect {
    let start = std::time::Instant::now();
    loop {
        let b = app.api.bisect(id).await.unwrap();
        if b.status.is_finished() {
            return b;
        }
        assert!(
            start.elapsed() < within,
            "bisect {id} did not end in {within:?}: {b:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Steps that tested a commit (not those that could not build it).
fn tested(b: &Bisect) -> usize {
    b.steps
        .iter()
        .filter(|s| s.verdict != Some(StepVerdict::Skip))
        .count()
}

fn cli(app: &App, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_testarena"))
        .args(args)
        .args(["--server", &app.base])
        .env("TESTARENA_CONFIG", "/dev/null")
        .env_remove("TESTARENA_URL")
        .env_remove("TESTARENA_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run testarena bisect")
}

/// Checks the answer of a bisect that found commit 11 (index 10 of `shas`).
async fn assert_found_eleven(app: &App, b: &Bisect, shas: &[String]) {
    assert_eq!(b.status, BisectStatus::Found, "{b:#?}");
    let result = b.result.as_ref().expect("a result");
    assert_eq!(result.commit, shas[10]);
    assert_eq!(result.subject, "sum: count from one");
    assert_eq!(result.author, "Dev 11 <dev11@example.com>");
    assert!(tested(b) <= 5, "at most 5 steps besides skips: {b:#?}");
    assert_eq!(b.range_size, Some(15));
    assert_eq!(b.good_commit.as_deref(), Some(shas[0].as_str()));
    assert_eq!(b.bad_commit.as_deref(), Some(shas[15].as_str()));
    assert_eq!(b.current_queue, None);
    // Every step is a normal queue pinned to its commit, named after the bisect; a failing
    // step ran twice (the flaky re-run), and its verdict follows its queues.
    for s in &b.steps {
        let q = app.api.queue(s.queue_id).await.unwrap();
        assert_eq!(q.commit.as_deref(), Some(s.commit.as_str()), "{q:#?}");
        assert_eq!(q.name, format!("bisect #{}: {}", b.id, &s.commit[..7]));
        assert_eq!(q.priority, 2, "below the default of 5");
        let n = shas.iter().position(|c| *c == s.commit).unwrap() + 1;
        assert_eq!(s.index as usize, n - 1);
        assert_eq!(s.subject, subject(n));
        match s.verdict {
            Some(StepVerdict::Bad) => {
                assert_eq!(q.status, QueueStatus::Failed);
                let again = app
                    .api
                    .queue(s.rerun_queue_id.expect("re-run"))
                    .await
                    .unwrap();
                assert_eq!(again.status, QueueStatus::Failed);
                assert_eq!(again.commit, q.commit);
                assert!(again.name.ends_with("(re-run)"), "{}", again.name);
            }
            Some(StepVerdict::Good) => {
                assert_eq!(q.status, QueueStatus::Passed);
                assert_eq!(s.rerun_queue_id, None);
            }
            Some(StepVerdict::Skip) => {
                assert_eq!((n, q.status), (6, QueueStatus::Error));
                let note = s.note.as_deref().unwrap_or_default();
                assert!(note.contains("build failed"), "{note}");
            }
            None => panic!("a finished bisect has no running step: {b:#?}"),
        }
    }
}

/// The API finds commit 11 and names it; the CLI finds it too with `--case TC_SUM`, printing
/// the steps and the answer, and exits 0; `--case TC_NOISE` finds commit 13 instead; a range
/// whose bad end passes (commit 6 between cannot be built) exits 2.
#[tokio::test]
async fn the_first_bad_commit_is_found_through_the_api_and_the_cli() {
    let root = tempfile::tempdir().unwrap();
    let (repo, shas) = repo(root.path());
    let app = start(root.path());
    let repo_arg = repo.to_str().unwrap();

    // The API, with refs as the ends: a tag and a branch.
    let (status, body) = post(
        &app,
        &json!({
            "repo": repo_arg, "good": "v1.0", "bad": "main", "scenarios": ["scenarios/s.xml"]
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_i64().unwrap();
    assert_eq!(body["status"], "running");
    assert_eq!(body["priority"], 2);
    let b = finished(&app, id, Duration::from_secs(240)).await;
    assert_found_eleven(&app, &b, &shas).await;
    let listed = app.api.bisects(None, None).await.unwrap();
    assert_eq!(listed.bisects[0].id, id);
    let (_, raw) = app.get_json(&format!("/api/v1/bisects/{id}")).await;
    assert_eq!(raw["result"]["subject"], "sum: count from one", "{raw}");
    assert_eq!(
        raw["result"]["author"], "Dev 11 <dev11@example.com>",
        "{raw}"
    );

    // The CLI, following it: the steps as they happen, then the answer.
    let out = cli(
        &app,
        &[
            "bisect",
            "--repo",
            repo_arg,
            "--good",
            &shas[0],
            "--bad",
            &shas[15],
            "--scenario",
            "scenarios/s.xml",
            "--case",
            "TC_SUM",
            "--wait",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("first bad commit: {}", shas[10])),
        "{text}"
    );
    assert!(text.contains("subject: sum: count from one"), "{text}");
    assert!(
        text.contains("author:  Dev 11 <dev11@example.com>"),
        "{text}"
    );
    assert!(text.contains("step 1: testing "), "{text}");
    assert!(text.contains(" is bad"), "{text}");
    assert!(text.contains("range: 15 commits"), "{text}");

    // Only the case asked for decides: TC_NOISE breaks at commit 13 (TC_SUM fails earlier).
    let noise = app
        .api
        .create_bisect(&NewBisect {
            repo: repo_arg.into(),
            good: shas[0].clone(),
            bad: "main".into(),
            case: Some("TC_NOISE".into()),
            ..NewBisect::default()
        })
        .await
        .unwrap();
    let noise = finished(&app, noise.id, Duration::from_secs(240)).await;
    assert_eq!(noise.status, BisectStatus::Found, "{noise:#?}");
    assert_eq!(
        noise.result.as_ref().unwrap().commit,
        shas[12],
        "{noise:#?}"
    );
    assert_eq!(noise.scenarios, None, "the repository's default set");

    // Undecidable: commit 6 cannot be built and the bad end (commit 7) passes.
    let out = cli(
        &app,
        &[
            "bisect", "--repo", repo_arg, "--good", &shas[4], "--bad", &shas[6], "--wait",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("undecided: the bad commit"), "{text}");
    assert!(text.contains("passes"), "{text}");
    assert!(
        text.contains(&format!("step 1: {} is skip", &shas[5][..7])),
        "{text}"
    );
}

/// Ends that cannot make a range: undecided or in error, with the reason, and exit 2.
#[tokio::test]
async fn ranges_that_cannot_be_bisected_say_why() {
    let root = tempfile::tempdir().unwrap();
    let (repo, shas) = repo(root.path());
    let app = start(root.path());
    let repo_arg = repo.to_str().unwrap();
    let run = |good: &str, bad: &str| NewBisect {
        repo: repo_arg.into(),
        good: good.into(),
        bad: bad.into(),
        ..NewBisect::default()
    };
    for (good, bad, status, says) in [
        (
            shas[9].as_str(),
            shas[2].as_str(),
            BisectStatus::Undecided,
            "is not an ancestor of",
        ),
        (
            "v9.9",
            "main",
            BisectStatus::Error,
            "good: 'v9.9' is neither a branch, a tag nor a commit",
        ),
        (
            shas[11].as_str(),
            "main",
            BisectStatus::Undecided,
            "fails too",
        ),
        (
            "main",
            shas[15].as_str(),
            BisectStatus::Undecided,
            "the same commit",
        ),
    ] {
        let b = app.api.create_bisect(&run(good, bad)).await.unwrap();
        let b = finished(&app, b.id, Duration::from_secs(120)).await;
        assert_eq!(b.status, status, "{b:#?}");
        let message = b.message.clone().unwrap_or_default();
        assert!(message.contains(says), "{message}");
        assert!(b.result.is_none());
    }
    let out = cli(
        &app,
        &[
            "bisect", "--repo", repo_arg, "--good", &shas[9], "--bad", &shas[2], "--wait",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// An abort ends the bisect and aborts the step queue it waits for; a second one is 409.
/// Bad input is refused with the API's error JSON, naming the field.
#[tokio::test]
async fn aborts_and_refusals() {
    let root = tempfile::tempdir().unwrap();
    let (repo, _) = repo(root.path());
    let app = start(root.path());
    let repo_arg = repo.to_str().unwrap();
    // No worker has this label: the step queue waits until the abort.
    let b = app
        .api
        .create_bisect(&NewBisect {
            repo: repo_arg.into(),
            good: "v1.0".into(),
            bad: "main".into(),
            labels: Some(vec!["no-such-worker".into()]),
            ..NewBisect::default()
        })
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let step = loop {
        let now = app.api.bisect(b.id).await.unwrap();
        if let Some(q) = now.current_queue {
            break q;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{now:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let aborted = app.api.abort_bisect(b.id).await.unwrap();
    assert_eq!(aborted.status, BisectStatus::Aborted);
    assert_eq!(aborted.message.as_deref(), Some("aborted on request"));
    let q = app
        .wait_until(step, Duration::from_secs(60), |q| q.status.is_finished())
        .await;
    assert_eq!(q.status, QueueStatus::Aborted, "{q:#?}");
    common::assert_refused(
        &app.api.abort_bisect(b.id).await,
        409,
        "conflict",
        "already ended",
    );
    // No driver touches it again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = app.api.bisect(b.id).await.unwrap();
    assert_eq!(
        (after.status, after.steps.len()),
        (BisectStatus::Aborted, 1)
    );

    for (body, status, code, mentions) in [
        (
            json!({"repo": repo_arg, "good": "a..b", "bad": "main"}),
            422,
            "invalid_input",
            "good",
        ),
        (
            json!({"repo": repo_arg, "good": "v1.0", "bad": "main", "case": "a b"}),
            422,
            "invalid_input",
            "case",
        ),
        (
            json!({"repo": repo_arg, "good": "v1.0", "bad": "main", "priority": 10}),
            422,
            "invalid_input",
            "priority",
        ),
        (
            json!({"repo": "/elsewhere/r", "good": "v1.0", "bad": "main"}),
            422,
            "invalid_input",
            "repo",
        ),
        (
            json!({"repo": repo_arg, "good": "v1.0"}),
            422,
            "invalid_input",
            "bad",
        ),
        (
            json!({"repo": repo_arg, "good": "v1.0", "bad": "main", "extra": 1}),
            422,
            "invalid_input",
            "extra",
        ),
    ] {
        let (got, answer) = post(&app, &body).await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(mentions), "{body} -> {message}");
    }
    let r = app
        .http
        .post(app.url("/api/v1/bisects"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (status, answer) = app.get_json("/api/v1/bisects/999").await;
    assert_eq!(
        (status.as_u16(), answer["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = app.get_json("/api/v1/bisects/x").await;
    assert_eq!(status, 404);
    let (status, answer) = app.get_json("/api/v1/bisects?limit=0").await;
    assert_eq!(
        (status.as_u16(), answer["error"]["code"].as_str()),
        (400, Some("bad_query"))
    );
    // Bad input on the command line: the API's message, exit 3.
    let out = cli(
        &app,
        &[
            "bisect", "--repo", repo_arg, "--good", "x..y", "--bad", "main",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("good"),
        "{out:?}"
    );
}

async fn post(app: &App, body: &Value) -> (u16, Value) {
    let r = app
        .http
        .post(app.url("/api/v1/bisects"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `testarena worker` on its own (it announces nothing, so it is started here).
struct WorkerProcess(std::process::Child);

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        // SAFETY: kill(2) on our own child's process group has no memory effects.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Scale-out on PostgreSQL: the server has no clone; a separate worker process (with a data
/// directory of its own) reads the range, and its driver is woken by NOTIFY as the bisect is
/// created and as each step queue ends.
#[tokio::test]
async fn serve_and_a_separate_worker_bisect_on_postgres() {
    let db = Database::new("bisect").await;
    let root = tempfile::tempdir().unwrap();
    let (repo, shas) = repo(root.path());
    let repos = root.path().join("repos");
    let server = App::start(
        "serve",
        &root.path().join("data"),
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
        .arg(root.path().join("worker-data"))
        .args(["--database", &db.url, "--allow-local-repos"])
        .arg(&repos)
        .env_remove("TESTARENA_DATABASE_URL")
        .env("TESTARENA_CONFIG", "/dev/null")
        .env("TESTARENA_LOG", "info,sqlx=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let worker = WorkerProcess(cmd.spawn().expect("start the worker"));
    let b = server
        .api
        .create_bisect(&NewBisect {
            repo: repo.to_str().unwrap().into(),
            good: "v1.0".into(),
            bad: "main".into(),
            scenarios: Some(vec!["scenarios/s.xml".into()]),
            ..NewBisect::default()
        })
        .await
        .unwrap();
    let b = finished(&server, b.id, Duration::from_secs(240)).await;
    assert_found_eleven(&server, &b, &shas).await;
    drop(worker);
    assert!(server.stop().success());
    db.drop_now().await;
}
