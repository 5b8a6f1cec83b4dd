//! Starts the real `testarena` binary on a random port with a fresh data directory.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `testarena` process; killed (with its group) when dropped.
pub struct App {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    /// The typed API client: talks to the server as a user's program would.
    pub api: testarena_client::Client,
    /// Raw HTTP, for what the typed client cannot say: malformed bodies, wrong methods and
    /// content types, headers of the answer, live streams.
    pub http: reqwest::Client,
}

impl App {
    /// Starts `testarena <subcommand> --listen 127.0.0.1:0 --data-dir DIR extra...`.
    pub fn start(subcommand: &str, data_dir: &Path, extra: &[&str]) -> App {
        App::start_with_env(subcommand, data_dir, extra, &[])
    }

    /// As [`App::start`], with extra environment variables for the process.
    pub fn start_with_env(
        subcommand: &str,
        data_dir: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> App {
        App::spawn(subcommand, "127.0.0.1:0", data_dir, extra, envs)
    }

    /// As [`App::start`], listening on `listen` (to come back on the same address after a
    /// restart, or on a non-loopback address such as `0.0.0.0:0`).
    pub fn start_on(subcommand: &str, listen: &str, data_dir: &Path, extra: &[&str]) -> App {
        App::spawn(subcommand, listen, data_dir, extra, &[])
    }

    fn spawn(
        subcommand: &str,
        listen: &str,
        data_dir: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> App {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_testarena"));
        // The machine's auth setting must not leak in; a test may still give one.
        cmd.env_remove("TESTARENA_AUTH");
        cmd.envs(envs.iter().copied());
        cmd.arg(subcommand)
            .args(["--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env_remove("TESTARENA_DATABASE_URL")
            .env_remove("TESTARENA_LISTEN")
            // Never read the machine's /etc/testarena/config.toml; --config still overrides this.
            .env("TESTARENA_CONFIG", "/dev/null")
            .env("TESTARENA_LOG", "info,sqlx=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().expect("start testarena");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("testarena exited before listening")
                .expect("read stdout");
            if let Some(url) = line.strip_prefix("testarena listening on ") {
                break url.trim().to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let api = testarena_client::Client::builder(&base)
            .timeout(Some(Duration::from_secs(60)))
            .build()
            .expect("API client");
        App {
            child,
            base,
            data_dir: data_dir.to_path_buf(),
            api,
            http,
        }
    }

    /// Full URL of an API path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = self.child.wait().expect("wait");
        std::mem::forget(self);
        status
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's process group has no memory effects.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
        // A test that failed half-way must not leave its emulators running either: kill what
        // still works inside this app's data directory (its checkouts).
        kill_processes_under(&self.data_dir);
    }
}

/// SIGKILLs every process whose working directory is inside `dir`.
pub fn kill_processes_under(dir: &Path) {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir)) {
            // SAFETY: kill(2) has no memory effects.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// A free TCP port on loopback (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl App {
    /// A queue's whole log, read through the API a piece at a time.
    pub async fn log_text(&self, id: i64) -> String {
        let mut log = Vec::new();
        loop {
            let piece = self.api.queue_log(id, log.len() as u64).await.unwrap();
            if piece.data.is_empty() {
                return String::from_utf8(log).unwrap();
            }
            log.extend_from_slice(&piece.data);
        }
    }

    /// Submits `new` through the typed client; panics unless the answer is `201 Created`.
    pub async fn submit(&self, new: &testarena_client::NewQueue) -> testarena_client::Queue {
        let answer = self
            .api
            .create_queue_answer(new)
            .await
            .unwrap_or_else(|e| panic!("submitting {new:?}: {e}"));
        assert_eq!(answer.status, 201, "{}", answer.text);
        answer.value
    }

    /// Polls the queue (every 100 ms) until `done` holds; panics after `within`.
    pub async fn wait_until(
        &self,
        id: i64,
        within: Duration,
        done: impl Fn(&testarena_client::Queue) -> bool,
    ) -> testarena_client::Queue {
        let start = std::time::Instant::now();
        loop {
            let q = self
                .api
                .queue(id)
                .await
                .unwrap_or_else(|e| panic!("queue {id}: {e}"));
            if done(&q) {
                return q;
            }
            assert!(
                start.elapsed() < within,
                "queue {id} did not get there in {within:?}: {q:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `POST /api/v1/queues` with a raw JSON `body` (for bodies the typed client cannot
    /// send): the status and the JSON answer.
    pub async fn post_queue(
        &self,
        body: &serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let r = self
            .http
            .post(self.url("/api/v1/queues"))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Raw `GET path`: the status and the JSON answer (null if it is not JSON).
    pub async fn get_json(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// Asserts that `result` is the API's refusal with `status` and `code`, and that its message
/// mentions `mentions`.
pub fn assert_refused<T: std::fmt::Debug>(
    result: &Result<T, testarena_client::ClientError>,
    status: u16,
    code: &str,
    mentions: &str,
) {
    let e = match result {
        Err(e) => e,
        Ok(v) => panic!("expected a {status} {code} refusal, got {v:?}"),
    };
    assert_eq!(e.status(), Some(status), "{e}");
    assert_eq!(e.code(), Some(code), "{e}");
    let message = e.api_message().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "message {message:?} should mention {mentions:?}"
    );
}

/// Writes `files` (path, text) under `dir` and commits them on `main` of a new git repository.
pub fn git_repo<P: AsRef<str>, T: AsRef<str>>(dir: &Path, files: &[(P, T)]) {
    for (path, text) in files {
        let p = dir.join(path.as_ref());
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text.as_ref()).unwrap();
    }
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &["commit", "-qm", "test repository"],
    ] {
        let out = Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

/// The PostgreSQL server the tests use (its maintenance database): `TESTARENA_TEST_POSTGRES`,
/// else the local one with trust auth.
pub fn maintenance_url() -> String {
    std::env::var("TESTARENA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database of one test; dropped by [`Database::drop_now`] (or left for
/// inspection if the test failed before it).
pub struct Database {
    pub name: String,
    pub url: String,
}

impl Database {
    /// Creates `testarena_<prefix>_<pid>_<nanos>`.
    pub async fn new(prefix: &str) -> Database {
        use sqlx::Connection;
        let maintenance = maintenance_url();
        let mut admin = sqlx::PgConnection::connect(&maintenance)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is unreachable at {maintenance}: {e}. This test needs it: start \
                     it (`make test` does) or point TESTARENA_TEST_POSTGRES at a server"
                )
            });
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("testarena_{prefix}_{}_{nanos}", std::process::id());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let base = maintenance.split('?').next().unwrap();
        let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
        Database {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// A connection to the database.
    pub async fn connect(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&self.url).await.unwrap()
    }

    /// Drops the database (its connections are ended first).
    pub async fn drop_now(self) {
        use sqlx::Connection;
        if let Ok(mut admin) = sqlx::PgConnection::connect(&maintenance_url()).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = sqlx::query(&sql).execute(&mut admin).await;
        }
    }
}

/// Runs `git args` in `dir` as a fixed committer on `main`; panics with git's stderr when it
/// fails. Returns its standard output.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=TestArena",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies the example firmware (examples/demo-firmware, without its `build/`) to `to`.
pub fn copy_demo_firmware(to: &Path) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo-firmware");
    copy_dir_without_build(&examples, to);
}

fn copy_dir_without_build(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "build" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir_without_build(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Processes whose working directory is inside `dir` (deleted or not), with their command
/// lines; zombies (no command line, already dead) are left out.
pub fn processes_under(dir: &Path) -> Vec<(i32, String)> {
    let dir = std::fs::canonicalize(dir).unwrap_or(dir.to_path_buf());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if cwd.starts_with(&dir) {
            let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if !cmd.trim().is_empty() {
                found.push((pid, cmd));
            }
        }
    }
    found
}
