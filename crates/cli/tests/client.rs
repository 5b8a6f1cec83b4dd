//! The client commands (`submit`, `queues`, `show`, `logs`, `abort`, `rm`, `junit`,
//! `completions`) run as the real binary against the real server on a random port.

mod common;

use common::App;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const REPO: &str = "https://example.com/fw.git";

/// The binary with a clean environment and an empty config file, so nothing from the machine
/// leaks in.
fn cli_cmd(dir: &Path, args: &[&str]) -> Command {
    let cfg = dir.join("client.toml");
    if !cfg.exists() {
        std::fs::write(&cfg, "").unwrap();
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testarena"));
    cmd.args(args)
        .arg("--config")
        .arg(&cfg)
        .env_remove("TESTARENA_URL")
        .env_remove("TESTARENA_TOKEN")
        .env_remove("TESTARENA_CONFIG")
        .stdin(Stdio::null());
    cmd
}

/// Runs the client to completion.
fn cli(dir: &Path, args: &[&str]) -> Output {
    cli_cmd(dir, args).output().expect("run testarena")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

/// Submits a queue through the CLI; returns its id.
fn submit(dir: &Path, app: &App, branch: &str) -> i64 {
    let o = cli(
        dir,
        &[
            "submit", "--server", &app.base, "--repo", REPO, "--branch", branch, "--json",
        ],
    );
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("submit --json prints JSON");
    v["id"].as_i64().expect("id")
}

async fn queue_json(app: &App, id: i64) -> (u16, Value) {
    let r = app
        .http
        .get(app.url(&format!("/api/v1/queues/{id}")))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn submit_prints_id_and_dashboard_url() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("serve", dir.path(), &[]);
    let o = cli(
        dir.path(),
        &[
            "submit",
            "--server",
            &format!("{}/", app.base),
            "--repo",
            REPO,
            "--branch",
            "feature/x",
            "--scenario",
            "scenarios/a.xml",
            "--scenario",
            "b.xml",
            "--priority",
            "7",
            "--name",
            "nightly",
        ],
    );
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("queue 1 submitted"), "{out}");
    assert!(
        out.contains(&format!("{}/#/queues/1", app.base)),
        "dashboard URL in {out}"
    );
    let (_, q) = queue_json(&app, 1).await;
    assert_eq!(q["status"], "waiting");
    assert_eq!(q["branch"], "feature/x");
    assert_eq!(q["priority"], 7);
    assert_eq!(q["name"], "nightly");
    assert_eq!(
        q["scenarios"],
        serde_json::json!(["scenarios/a.xml", "b.xml"])
    );
}

#[tokio::test]
async fn bad_input_prints_the_api_message_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("serve", dir.path(), &[]);
    let o = cli(
        dir.path(),
        &[
            "submit",
            "--server",
            &app.base,
            "--repo",
            REPO,
            "--branch",
            "bad..branch",
        ],
    );
    assert_eq!(code(&o), 3);
    let err = stderr(&o);
    assert!(err.contains("branch: must not contain '..'"), "{err}");
    assert!(stdout(&o).is_empty());
    // Bad values the server checks, and ids the client checks, are bad input too.
    for args in [
        vec!["queues", "--status", "bogus"],
        vec!["queues", "--limit", "0"],
        vec!["show", "abc"],
        vec!["show", "999"],
        vec!["abort", "999"],
    ] {
        let mut full = args.clone();
        full.extend(["--server", &app.base]);
        let o = cli(dir.path(), &full);
        assert_eq!(code(&o), 3, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).trim().is_empty(), "{args:?} explains itself");
    }
    let o = cli(dir.path(), &["show", "999", "--server", &app.base]);
    assert!(stderr(&o).contains("queue 999 not found"), "{}", stderr(&o));
}

#[tokio::test]
async fn queues_lists_as_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("serve", dir.path(), &[]);
    let a = submit(dir.path(), &app, "main");
    let b = submit(dir.path(), &app, "release/v2");
    let o = cli(dir.path(), &["queues", "--server", &app.base]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for col in [
        "ID", "STATUS", "PHASE", "PRI", "BRANCH", "SHA", "CASES", "BY", "AGE", "NAME",
    ] {
        assert!(lines[0].contains(col), "{col} in {}", lines[0]);
    }
    // Newest first, columns aligned under the header.
    assert!(lines[1].starts_with(&b.to_string()) && lines[1].contains("release/v2"));
    assert!(lines[2].starts_with(&a.to_string()) && lines[2].contains("waiting"));
    let col = lines[0].find("BRANCH").unwrap();
    assert_eq!(&lines[2][col..col + 4], "main", "{out}");

    let o = cli(
        dir.path(),
        &[
            "queues", "--server", &app.base, "--json", "--status", "waiting", "--limit", "1",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("queues --json is JSON");
    assert_eq!(v["queues"].as_array().unwrap().len(), 1);
    assert_eq!(v["queues"][0]["id"], b);
    assert_eq!(v["next"], b);

    let o = cli(
        dir.path(),
        &["queues", "--server", &app.base, "--status", "passed"],
    );
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).is_empty());
    assert!(stderr(&o).contains("no queues"));
}

#[tokio::test]
async fn show_prints_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("serve", dir.path(), &[]);
    let id = submit(dir.path(), &app, "feature/show");
    let o = cli(
        dir.path(),
        &["show", &id.to_string(), "--server", &app.base],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let wants = [
        format!("Queue {id}"),
        "waiting".into(),
        "feature/show".into(),
        REPO.into(),
        format!("{}/#/queues/{id}", app.base),
    ];
    for want in wants {
        assert!(out.contains(&want), "{want} in {out}");
    }
    let o = cli(
        dir.path(),
        &["show", &format!("#{id}"), "--server", &app.base, "--json"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["id"], id);
    assert_eq!(v["branch"], "feature/show");
}

#[tokio::test]
async fn abort_then_rm() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("serve", dir.path(), &[]);
    let id = submit(dir.path(), &app, "main");
    let sid = id.to_string();
    let o = cli(dir.path(), &["abort", &sid, "--server", &app.base]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("queue {id} aborted")));
    assert_eq!(queue_json(&app, id).await.1["status"], "aborted");
    // Aborting a finished queue is refused with the API's reason.
    let o = cli(dir.path(), &["abort", &sid, "--server", &app.base]);
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains("already finished"), "{}", stderr(&o));

    let o = cli(dir.path(), &["rm", &sid, "--server", &app.base]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("queue {id} deleted")));
    assert_eq!(queue_json(&app, id).await.0, 404);
    let o = cli(dir.path(), &["rm", &sid, "--server", &app.base]);
    assert_eq!(code(&o), 3);
}

#[tokio::test]
async fn logs_of_a_queue_without_output_are_empty() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("serve", dir.path(), &[]);
    let id = submit(dir.path(), &app, "main");
    let o = cli(
        dir.path(),
        &["logs", &id.to_string(), "--server", &app.base],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    // Following a queue that ends (aborted here) stops by itself.
    let mut child = cli_cmd(
        dir.path(),
        &["logs", "-f", &id.to_string(), "--server", &app.base],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(child.try_wait().unwrap().is_none(), "-f waits for news");
    abort_via_http(&app, id).await;
    let status = wait_child(&mut child, Duration::from_secs(20)).await;
    assert_eq!(status, 0);
}

async fn abort_via_http(app: &App, id: i64) {
    if let Err(e) = app.api.abort(id).await {
        panic!("abort: {e}");
    }
}

/// Waits for a child with a deadline; kills it and fails the test past the deadline.
async fn wait_child(child: &mut std::process::Child, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().expect("exited normally");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("testarena did not exit within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

#[tokio::test]
async fn submit_wait_exits_2_when_the_queue_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    // `serve` only: no worker, so the queue stays waiting until the test aborts it.
    let app = App::start("serve", dir.path(), &[]);
    let mut child = cli_cmd(
        dir.path(),
        &[
            "submit", "--server", &app.base, "--repo", REPO, "--branch", "main", "--wait",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let err = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || read_all(err));
    let out = child.stdout.take().unwrap();
    let out_reader = std::thread::spawn(move || read_all(out));
    // Find the queue, let the client wait a while, then abort it from another request.
    let start = Instant::now();
    let id = loop {
        let list = app.api.queues(&Default::default()).await.unwrap();
        if let Some(q) = list.queues.first() {
            break q.id;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no queue appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(child.try_wait().unwrap().is_none(), "--wait waits");
    abort_via_http(&app, id).await;
    let code = wait_child(&mut child, Duration::from_secs(20)).await;
    let err = err_reader.join().unwrap();
    let out = out_reader.join().unwrap();
    assert_eq!(code, 2, "stderr: {err}");
    assert!(out.contains(&format!("queue {id} submitted")), "{out}");
    // stderr is a pipe here: plain progress lines, no spinner escapes.
    assert!(err.contains("waiting for a worker"), "{err}");
    assert!(err.contains("aborted"), "{err}");
    assert!(
        !err.contains('\x1b'),
        "no terminal escapes in plain mode: {err:?}"
    );
}

#[test]
fn unreachable_server_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["queues"],
        vec!["submit", "--repo", REPO, "--branch", "main", "--wait"],
        vec!["logs", "1", "-f"],
        vec!["junit", "1"],
    ] {
        let mut full = args.clone();
        full.extend(["--server", &server]);
        let o = cli(dir.path(), &full);
        assert_eq!(code(&o), 3, "{args:?}");
        let err = stderr(&o);
        assert!(
            err.contains(&format!("cannot reach TestArena at {server}")),
            "{args:?}: {err}"
        );
        // A submit is tried again (with its Idempotency-Key), saying so; reads are not.
        let retried = err.matches("before trying again").count();
        let expected = if args[0] == "submit" { 4 } else { 0 };
        assert_eq!(retried, expected, "{args:?}: {err}");
    }
    let o = cli(dir.path(), &["queues", "--server", "ftp://x"]);
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains("invalid server URL"), "{}", stderr(&o));
}

#[test]
fn completions_print_a_script() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let o = cli(dir.path(), &["completions", shell]);
        assert_eq!(code(&o), 0, "{shell}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("testarena"), "{shell}");
        assert!(out.contains("submit"), "{shell} completes subcommands");
    }
}

#[tokio::test]
async fn server_comes_from_env_or_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("serve", dir.path(), &[]);
    submit(dir.path(), &app, "main");
    let o = cli_cmd(dir.path(), &["queues"])
        .env("TESTARENA_URL", &app.base)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("main"));

    let cfg = dir.path().join("with-server.toml");
    std::fs::write(&cfg, format!("server_url = \"{}\"\n", app.base)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_testarena"))
        .args(["queues", "--json", "--config"])
        .arg(&cfg)
        .env_remove("TESTARENA_URL")
        .env_remove("TESTARENA_TOKEN")
        .env_remove("TESTARENA_CONFIG")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["queues"].as_array().unwrap().len(), 1);
}

/// A one-shot HTTP server that records the request and refuses it with 401.
fn refusing_server() -> (String, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"error":{"code":"unauthorized","message":"a valid token is required"}}"#;
        let resp = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(resp.as_bytes()).unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    (base, handle)
}

#[test]
fn token_is_sent_as_bearer_and_refusals_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let (base, server) = refusing_server();
    let o = cli_cmd(dir.path(), &["queues", "--server", &base])
        .env("TESTARENA_TOKEN", "s3cret")
        .output()
        .unwrap();
    let req = server.join().unwrap().to_ascii_lowercase();
    assert!(req.starts_with("get /api/v1/queues "), "{req}");
    assert!(req.contains("authorization: bearer s3cret"), "{req}");
    assert_eq!(code(&o), 3);
    assert!(
        stderr(&o).contains("a valid token is required"),
        "{}",
        stderr(&o)
    );

    // The config file's token is used when neither flag nor environment gives one.
    let (base, server) = refusing_server();
    let cfg = dir.path().join("token.toml");
    std::fs::write(
        &cfg,
        format!("server_url = \"{base}\"\ntoken = \"from-file\"\n"),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_testarena"))
        .args(["show", "1", "--config"])
        .arg(&cfg)
        .env_remove("TESTARENA_URL")
        .env_remove("TESTARENA_TOKEN")
        .env_remove("TESTARENA_CONFIG")
        .output()
        .unwrap();
    let req = server.join().unwrap().to_ascii_lowercase();
    assert!(req.contains("authorization: bearer from-file"), "{req}");
    assert_eq!(code(&o), 3);
}

/// A tiny firmware project whose "emulator" is a shell script answering `ping` with `pong`:
/// the real worker builds and runs it in a few seconds, without QEMU.
fn fake_project(root: &Path) -> std::path::PathBuf {
    let repo = root.join("fw");
    std::fs::create_dir_all(repo.join("scenarios")).unwrap();
    let files = [
        (
            "testarena.toml",
            "[build]\ncommand = \"echo compiling\"\n[emulator]\ncommand = \"sh ./fake.sh\"\n\
             console = \"stdio\"\nready = \"^ready$\"\nboot_timeout = \"20s\"\n",
        ),
        (
            "fake.sh",
            "echo ready\nwhile IFS= read -r line; do\n  case \"$line\" in\n    ping) echo pong ;;\n    *) echo \"ERROR: $line\" ;;\n  esac\ndone\n",
        ),
        (
            "scenarios/ok.xml",
            r#"<scenario name="ok" timeout="60">
  <testcase id="TC_PING" timeout="20"><send>ping</send><expect timeout="10">^pong$</expect></testcase>
</scenario>"#,
        ),
        (
            "scenarios/bad.xml",
            r#"<scenario name="bad" timeout="60">
  <testcase id="TC_WRONG" timeout="20"><send>ping</send><expect timeout="1">^pang$</expect></testcase>
</scenario>"#,
        ),
    ];
    for (name, text) in files {
        std::fs::write(repo.join(name), text).unwrap();
    }
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(["-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(&repo)
            .output()
            .expect("git");
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    git(&["init", "-q", "."]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "fake firmware"]);
    repo
}

#[tokio::test]
async fn submit_wait_follows_a_real_run_to_its_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let repos = tempfile::tempdir().unwrap();
    let repo = fake_project(repos.path());
    let root = repos.path().to_str().unwrap();
    let app = App::start("up", dir.path(), &["--allow-local-repos", root]);
    let repo = repo.to_str().unwrap();

    let o = cli(
        dir.path(),
        &[
            "submit",
            "--server",
            &app.base,
            "--repo",
            repo,
            "--branch",
            "main",
            "--scenario",
            "scenarios/ok.xml",
            "--wait",
        ],
    );
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(code(&o), 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("| pong"),
        "the console is streamed to stdout: {out}"
    );
    assert!(
        err.contains("] queue 1: "),
        "plain progress lines on stderr: {err}"
    );
    assert!(err.contains("passed: 1/1 cases passed"), "{err}");
    let id = 1;

    // The log and the JUnit report of the finished queue.
    let o = cli(dir.path(), &["logs", "1", "--server", &app.base]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("| pong"));
    let o = cli(dir.path(), &["logs", "-f", "1", "--server", &app.base]);
    assert_eq!(code(&o), 0, "-f on a finished queue returns at once");
    let o = cli(dir.path(), &["junit", "1", "--server", &app.base]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let xml = stdout(&o);
    assert!(
        xml.contains("<testsuite") && xml.contains("TC_PING"),
        "{xml}"
    );
    let o = cli(dir.path(), &["queues", "--server", &app.base]);
    assert!(
        stdout(&o).lines().nth(1).unwrap().contains("1/1"),
        "{}",
        stdout(&o)
    );
    assert_eq!(queue_json(&app, id).await.1["status"], "passed");

    let o = cli(
        dir.path(),
        &[
            "submit",
            "--server",
            &app.base,
            "--repo",
            repo,
            "--branch",
            "main",
            "--scenario",
            "scenarios/bad.xml",
            "--wait",
            "--json",
        ],
    );
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(code(&o), 1, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("TC_WRONG"), "failed cases are listed: {err}");
    let v: Value = serde_json::from_str(&out).expect("--wait --json prints only the queue");
    assert_eq!(v["status"], "failed");
}

#[tokio::test]
async fn submit_label_sends_labels_and_show_says_why_the_queue_waits() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("serve", dir.path(), &[]);
    let o = cli(
        dir.path(),
        &[
            "submit",
            "--server",
            &app.base,
            "--repo",
            REPO,
            "--branch",
            "main",
            "--label",
            "sim",
            "--label",
            "esp32,sim",
            "--json",
        ],
    );
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["labels"], serde_json::json!(["esp32", "sim"]));
    let id = v["id"].as_i64().unwrap().to_string();
    let o = cli(dir.path(), &["show", "--server", &app.base, &id]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("esp32, sim"), "{text}");
    assert!(
        text.contains("waiting for a worker with labels esp32, sim"),
        "{text}"
    );
    let o = cli(
        dir.path(),
        &[
            "submit", "--server", &app.base, "--repo", REPO, "--branch", "main", "--label", "ESP32",
        ],
    );
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("labels[0]"), "{}", stderr(&o));
}
