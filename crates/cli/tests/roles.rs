//! The PostgreSQL roles of deploy/postgres (issue 12): roles.sql and grants.sql applied to a
//! fresh database (role names made unique per test, dropped with the database at the end),
//! `testarena migrate` as the owner, two `serve` replicas as the server role and a `worker` as
//! the worker role, each with no more than those files grant: a queue passes, one is handed
//! back and aborted, one deleted, a bisect driven by the worker role and one aborted by the
//! server role, and each role is refused what it must not do. The "emulator"
//! is `cat`, so no QEMU is needed. PostgreSQL must be reachable (`TESTARENA_TEST_POSTGRES`
//! overrides the maintenance database, as a superuser): this fails, never skips.

mod common;

use common::App;
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testarena_client::{BisectStatus, CaseStatus, NewBisect, NewQueue, QueueStatus, StepVerdict};

fn maintenance_url() -> String {
    std::env::var("TESTARENA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/postgres")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The three roles and the database of one test; dropped (database first, then the roles)
/// when this goes, also when the test failed half-way.
struct Farm {
    db: String,
    owner: String,
    server: String,
    worker: String,
    /// The roles' password (the same for the three; any pg_hba method then works).
    password: String,
}

impl Farm {
    fn new() -> Farm {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let tag = format!("{}_{nanos}", std::process::id());
        Farm {
            db: format!("testarena_roles_{tag}"),
            owner: format!("ta_owner_{tag}"),
            server: format!("ta_server_{tag}"),
            worker: format!("ta_worker_{tag}"),
            password: format!("pw-{tag}"),
        }
    }

    /// A deploy/postgres file with this test's role names.
    fn sql(&self, name: &str) -> String {
        deploy_file(name)
            .replace("testarena_owner", &self.owner)
            .replace("testarena_server", &self.server)
            .replace("testarena_worker", &self.worker)
    }

    /// `postgres://ROLE:PASSWORD@HOST/DB`, the host of the maintenance URL.
    fn url(&self, role: &str) -> String {
        let maintenance = maintenance_url();
        let (scheme, rest) = maintenance
            .split_once("://")
            .expect("TESTARENA_TEST_POSTGRES is a postgres:// URL");
        let host = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
        let host = host.split(['/', '?']).next().unwrap();
        format!("{scheme}://{role}:{}@{host}/{}", self.password, self.db)
    }

    async fn connect(&self, role: &str) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.url(role))
            .await
            .unwrap_or_else(|e| panic!("cannot connect as {role}: {e}"))
    }

    /// roles.sql (as the superuser of the maintenance URL), passwords, the database owned by
    /// the owner role, `testarena migrate` as the owner, grants.sql as the owner.
    async fn create(&self, data: &Path) {
        let maintenance = maintenance_url();
        let mut admin = sqlx::PgConnection::connect(&maintenance)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is unreachable at {maintenance}: {e}"));
        let roles = self.sql("roles.sql");
        // Twice: running it again changes nothing.
        for _ in 0..2 {
            sqlx::raw_sql(&roles)
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("roles.sql: {e}"));
        }
        for role in [&self.owner, &self.server, &self.worker] {
            sqlx::query(&format!("ALTER ROLE {role} PASSWORD '{}'", self.password))
                .execute(&mut admin)
                .await
                .unwrap();
        }
        sqlx::query(&format!("CREATE DATABASE {} OWNER {}", self.db, self.owner))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();

        let out = Command::new(env!("CARGO_BIN_EXE_testarena"))
            .arg("migrate")
            .arg("--data-dir")
            .arg(data)
            .args(["--database", &self.url(&self.owner)])
            .env_remove("TESTARENA_DATABASE_URL")
            .env("TESTARENA_CONFIG", "/dev/null")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "testarena migrate as the owner: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let grants = self.sql("grants.sql");
        let mut owner = self.connect(&self.owner).await;
        for _ in 0..2 {
            sqlx::raw_sql(&grants)
                .execute(&mut owner)
                .await
                .unwrap_or_else(|e| panic!("grants.sql as the owner: {e}"));
        }
        owner.close().await.unwrap();
    }
}

/// Drops the database `db`, then the `roles`.
async fn drop_farm(db: &str, roles: &[&str]) {
    let Ok(mut admin) = sqlx::PgConnection::connect(&maintenance_url()).await else {
        eprintln!("cannot connect to drop database {db} and roles {roles:?}");
        return;
    };
    if let Err(e) = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await
    {
        eprintln!("cannot drop database {db}: {e}");
    }
    for role in roles {
        if let Err(e) = sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
            .execute(&mut admin)
            .await
        {
            eprintln!("cannot drop role {role}: {e}");
        }
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        // Async cleanup from a synchronous drop (possibly while panicking inside the test's
        // runtime): on a thread and runtime of its own.
        let db = self.db.clone();
        let roles = [self.owner.clone(), self.server.clone(), self.worker.clone()];
        let cleanup = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(drop_farm(&db, &roles.each_ref().map(String::as_str)))
        });
        let _ = cleanup.join();
    }
}

/// A local git repository under `root/repos/r`: `cat` as the emulator, `scenarios/s.xml` (one
/// case that passes at once) and `scenarios/long.xml` (one case that waits for nothing).
fn repo(root: &Path) -> PathBuf {
    let dir = root.join("repos").join("r");
    let files = [
        (
            "testarena.toml",
            "[build]\ncommand = 'true'\n[emulator]\ncommand = \"cat\"\nconsole = \"stdio\"\n",
        ),
        (
            "scenarios/s.xml",
            "<scenario name=\"s\" timeout=\"120\">\n<testcase id=\"TC\" timeout=\"30\"><send>hello</send><expect timeout=\"10\">^hello$</expect></testcase>\n</scenario>",
        ),
        (
            "scenarios/long.xml",
            "<scenario name=\"long\" timeout=\"300\">\n<testcase id=\"LONG\" timeout=\"200\"><expect timeout=\"150\">^never$</expect></testcase>\n</scenario>",
        ),
    ];
    common::git_repo(&dir, &files);
    dir
}

fn new_queue(repo: &Path, scenario: &str) -> NewQueue {
    let mut new = NewQueue::new(repo.to_str().unwrap(), "main");
    new.scenarios = Some(vec![scenario.into()]);
    new
}

/// A `testarena worker` process as `url`'s role (concurrency 1, no grace), its log in a file;
/// SIGKILLed with its process group when dropped.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(url: &str, data: &Path, repos: &Path, log: PathBuf) -> Worker {
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_testarena"));
        cmd.arg("worker")
            .arg("--data-dir")
            .arg(data)
            .args(["--database", url, "--concurrency", "1", "--grace", "0s"])
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

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for its exit (at most `within`); true if it exited with success.
    fn stop(&mut self, within: Duration) -> bool {
        // SAFETY: kill(2) on our own child has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                start.elapsed() < within,
                "the worker did not stop within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's process group has no memory effects.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A bisect driven by the worker role (it reads the range, inserts the step queue, records the
/// step and ends the bisect), and another aborted by the server role with its step queue.
async fn bisects_run_with_these_privileges(one: &App, two: &App, repo: &Path, worker: &Worker) {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let good = git(&["rev-parse", "HEAD"]);
    git(&["commit", "-q", "--allow-empty", "-m", "a later commit"]);
    let new = |labels: Option<Vec<String>>| NewBisect {
        repo: repo.to_str().unwrap().into(),
        good: good.clone(),
        bad: "main".into(),
        scenarios: Some(vec!["scenarios/s.xml".into()]),
        labels,
        ..NewBisect::default()
    };
    let b = one.api.create_bisect(&new(None)).await.unwrap();
    let start = Instant::now();
    let ended = loop {
        let now = two.api.bisect(b.id).await.unwrap();
        if now.status.is_finished() {
            break now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{now:#?}\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The bad end passes: one step, then undecided.
    assert_eq!(
        ended.status,
        BisectStatus::Undecided,
        "{ended:#?}\n{}",
        worker.log()
    );
    assert_eq!(ended.steps.len(), 1, "{ended:#?}");
    assert_eq!(
        ended.steps[0].verdict,
        Some(StepVerdict::Good),
        "{ended:#?}"
    );
    let stuck = one
        .api
        .create_bisect(&new(Some(vec!["no-such-lab".into()])))
        .await
        .unwrap();
    let start = Instant::now();
    let step = loop {
        if let Some(q) = two.api.bisect(stuck.id).await.unwrap().current_queue {
            break q;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let aborted = two.api.abort_bisect(stuck.id).await.unwrap();
    assert_eq!(aborted.status, BisectStatus::Aborted);
    assert_eq!(
        one.api.queue(step).await.unwrap().status,
        QueueStatus::Aborted
    );
}

/// Runs `sql` as the connection's role and asserts PostgreSQL refuses it for lack of a
/// privilege (SQLSTATE 42501) or of ownership (42501 too: "must be owner").
async fn assert_refused(conn: &mut sqlx::PgConnection, role: &str, sql: &str) {
    match sqlx::raw_sql(sql).execute(&mut *conn).await {
        Ok(done) => panic!("{role} may run `{sql}` ({done:?})"),
        Err(e) => {
            let code = e
                .as_database_error()
                .and_then(|d| d.code())
                .map(|c| c.into_owned());
            assert_eq!(code.as_deref(), Some("42501"), "{role}: `{sql}`: {e}");
        }
    }
}

#[tokio::test]
async fn serve_and_worker_run_a_queue_with_the_least_privileges_of_deploy_postgres() {
    let farm = Farm::new();
    let root = tempfile::tempdir().unwrap();
    let repo = repo(root.path());
    let repos = root.path().join("repos");
    // One data directory for all three processes is no longer needed (the logs go through
    // the database); they share it here only for brevity. What this test is about is the
    // database.
    let data = root.path().join("data");
    farm.create(&data).await;

    let serve = |_: u8| {
        App::start(
            "serve",
            &data,
            &[
                "--database",
                &farm.url(&farm.server),
                "--allow-local-repos",
                repos.to_str().unwrap(),
            ],
        )
    };
    // Two replicas on one database.
    let (one, two) = (serve(1), serve(2));

    // API tokens, made and revoked with serve's own configuration (the server role); the
    // server reads them and records their use.
    let server_url = farm.url(&farm.server);
    let token_cmd = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_testarena"))
            .arg("token")
            .args(args)
            .args(["--database", &server_url, "--data-dir"])
            .arg(&data)
            .env("TESTARENA_CONFIG", "/dev/null")
            .env_remove("TESTARENA_DATABASE_URL")
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "token {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let made = token_cmd(&["create", "--name", "ci", "--scope", "submit"]);
    let token = made.lines().last().unwrap().trim().to_string();
    let listed = one
        .http
        .get(one.url("/api/v1/queues"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), reqwest::StatusCode::OK);
    let mut owner_conn = farm.connect(&farm.owner).await;
    let start = Instant::now();
    loop {
        let used: Option<i64> = sqlx::query_scalar("SELECT last_used_at FROM tokens")
            .fetch_one(&mut owner_conn)
            .await
            .unwrap();
        if used.is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the server did not record the token's use"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    owner_conn.close().await.unwrap();
    assert!(token_cmd(&["list"]).contains("ci"));
    token_cmd(&["revoke", "ci"]);

    // A: passes. It comes from a (pretend) Gitea push, so the worker's status changes fire
    // the commit-status trigger. B: asks for a label no worker has, so it waits.
    let a = one.submit(&new_queue(&repo, "scenarios/s.xml")).await;
    let mut owner = farm.connect(&farm.owner).await;
    sqlx::query("UPDATE queues SET origin = $1 WHERE id = $2")
        .bind(r#"{"gitea_repo":"o/r","context":"testarena/default"}"#)
        .bind(a.id)
        .execute(&mut owner)
        .await
        .unwrap();
    let mut only_elsewhere = new_queue(&repo, "scenarios/s.xml");
    only_elsewhere.labels = Some(vec!["no-such-lab".into()]);
    let b = two.submit(&only_elsewhere).await;

    let mut worker = Worker::start(
        &farm.url(&farm.worker),
        &data,
        &repos,
        root.path().join("worker.log"),
    );
    let done = two
        .wait_until(a.id, Duration::from_secs(120), |q| q.status.is_finished())
        .await;
    assert_eq!(
        done.status,
        QueueStatus::Passed,
        "{done:#?}\n{}",
        worker.log()
    );
    let case = &done.tasks[0].cases[0];
    assert_eq!((case.id.as_str(), case.status), ("TC", CaseStatus::Passed));
    let wanted: String =
        sqlx::query_scalar("SELECT wanted FROM status_reports WHERE queue_id = $1")
            .bind(a.id)
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert_eq!(wanted, "passed");
    let workers = one.api.workers().await.unwrap().workers;
    assert_eq!(workers.len(), 1, "{workers:?}");
    bisects_run_with_these_privileges(&one, &two, &repo, &worker).await;

    // C: runs until the worker stops; handed back (its case dropped), it waits again, and
    // the server aborts it there, and B too.
    let c = one.submit(&new_queue(&repo, "scenarios/long.xml")).await;
    two.wait_until(c.id, Duration::from_secs(60), |q| {
        q.tasks
            .iter()
            .any(|t| t.cases.iter().any(|c| c.status == CaseStatus::Running))
    })
    .await;
    assert!(
        worker.stop(Duration::from_secs(30)),
        "the worker failed:\n{}",
        worker.log()
    );
    let back = one.api.queue(c.id).await.unwrap();
    assert_eq!(
        back.status,
        QueueStatus::Waiting,
        "{back:#?}\n{}",
        worker.log()
    );
    assert!(back.tasks[0].cases.is_empty(), "{back:#?}");
    for id in [c.id, b.id] {
        let aborted = two.api.abort(id).await.unwrap();
        assert_eq!(aborted.status, QueueStatus::Aborted, "{aborted:#?}");
    }
    // The server deletes A; its id is kept for live views.
    one.api.delete(a.id).await.unwrap();
    assert!(two.api.queue(a.id).await.unwrap_err().is_not_found());
    let deleted: i64 = sqlx::query_scalar("SELECT count(*) FROM deleted_queues WHERE id = $1")
        .bind(a.id)
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(deleted, 1);

    // What each role must not do.
    let mut as_worker = farm.connect(&farm.worker).await;
    for sql in [
        "DELETE FROM queues",
        "DELETE FROM deleted_queues",
        "DELETE FROM status_reports",
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999999, 'x', true, '\\x00', 0)",
        "ALTER TABLE queues ADD COLUMN x BIGINT",
        "DROP TABLE workers",
        "SELECT hash FROM tokens",
        // A bisect's driver inserts step queues, but none with an origin (a commit status to
        // send), a webhook delivery or an idempotency key; and deletes no bisect.
        "INSERT INTO queues (name, repo, branch, status, priority, created_at, origin) \
         VALUES ('x', '/r', 'main', 'waiting', 0, 0, '{}')",
        "DELETE FROM bisects",
    ] {
        assert_refused(&mut as_worker, "the worker role", sql).await;
    }
    let mut as_server = farm.connect(&farm.server).await;
    for sql in [
        "DELETE FROM workers",
        "UPDATE workers SET heartbeat_at = 0",
        "DELETE FROM tasks",
        "UPDATE cases SET status = 'passed'",
        "DELETE FROM process_groups",
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999999, 'x', true, '\\x00', 0)",
        "ALTER TABLE queues ADD COLUMN x BIGINT",
        "TRUNCATE queues",
        "UPDATE tokens SET scope = 'admin'",
        "UPDATE bisect_steps SET verdict = 'good'",
        "DELETE FROM bisects",
    ] {
        assert_refused(&mut as_server, "the server role", sql).await;
    }
    as_worker.close().await.unwrap();
    as_server.close().await.unwrap();
    owner.close().await.unwrap();

    assert!(one.stop().success());
    assert!(two.stop().success());
    drop(worker);
    drop(farm);
}
