//! `testarena migrate --from sqlite://… --to postgres://…` with the real binary: a SQLite
//! installation (queues passed, failed, waiting and aborted, with their logs) is copied into a
//! fresh PostgreSQL database, and `serve` on PostgreSQL with a data directory of its own shows the
//! same queues and logs; a second copy into the now non-empty database is refused. PostgreSQL
//! must be reachable (`TESTARENA_TEST_POSTGRES` overrides the maintenance database); the
//! "emulator" is `cat`.

mod common;

use common::App;
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use testarena_client::{NewQueue, QueueStatus};

fn maintenance_url() -> String {
    std::env::var("TESTARENA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database: its name and URL.
async fn new_database() -> (String, String) {
    let maintenance = maintenance_url();
    let mut admin = sqlx::PgConnection::connect(&maintenance)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is unreachable at {maintenance}: {e}"));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("testarena_migrate_{}_{nanos}", std::process::id());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = maintenance.split('?').next().unwrap();
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    let url = format!("{base}/{name}");
    (name, url)
}

async fn drop_database(name: &str) {
    if let Ok(mut admin) = sqlx::PgConnection::connect(&maintenance_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}

/// A local git repository under `root/repos/r`: `cat` as the emulator; `pass.xml` passes,
/// `fail.xml` expects what never comes.
fn repo(root: &Path) -> PathBuf {
    let dir = root.join("repos").join("r");
    let files = [
        (
            "testarena.toml",
            "[build]\ncommand = 'echo building'\n[emulator]\ncommand = \"cat\"\nconsole = \"stdio\"\n",
        ),
        (
            "scenarios/pass.xml",
            r#"<scenario name="s">
  <testcase id="TC_PASS" timeout="30"><send>hello</send><expect timeout="5">^hello$</expect></testcase>
</scenario>"#,
        ),
        (
            "scenarios/fail.xml",
            r#"<scenario name="s">
  <testcase id="TC_FAIL" timeout="30"><send>hello</send><expect timeout="1">^never$</expect></testcase>
  <testcase id="TC_OK" timeout="30"><send>again</send><expect timeout="5">^again$</expect></testcase>
</scenario>"#,
        ),
    ];
    common::git_repo(&dir, &files);
    dir
}

/// Runs `testarena migrate ARGS…`.
fn migrate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_testarena"))
        .arg("migrate")
        .args(args)
        .env_remove("TESTARENA_DATABASE_URL")
        .env("TESTARENA_CONFIG", "/dev/null")
        .env("TESTARENA_LOG", "warn")
        .output()
        .expect("run testarena migrate")
}

/// What the API shows of queue `id`: its JSON, its queue log and every case's log.
async fn seen(app: &App, id: i64) -> (serde_json::Value, Vec<u8>, Vec<Vec<u8>>) {
    let (status, json) = app.get_json(&format!("/api/v1/queues/{id}")).await;
    assert!(status.is_success(), "queue {id}: {status} {json}");
    let q = app.api.queue(id).await.unwrap();
    let log = match app.api.queue_log(id, 0).await {
        Ok(chunk) => chunk.data.to_vec(),
        Err(e) => format!("no log: {:?}", e.status()).into_bytes(),
    };
    let mut case_logs = Vec::new();
    for t in &q.tasks {
        for c in &t.cases {
            case_logs.push(app.api.case_log(id, &c.id, Some(t.id)).await.unwrap());
        }
    }
    (json, log, case_logs)
}

#[tokio::test]
async fn a_sqlite_installation_moves_to_postgres_with_its_history() {
    let root = tempfile::tempdir().unwrap();
    let repo = repo(root.path());
    let repos = root.path().join("repos");
    let data = root.path().join("data");
    let sqlite = format!("sqlite://{}", data.join("testarena.db").display());
    let local = ["--allow-local-repos", repos.to_str().unwrap()];

    // A SQLite installation: one queue passed, one failed (with its case messages)...
    let up = App::start("up", &data, &local);
    let mut ids = Vec::new();
    for (scenario, verdict) in [
        ("scenarios/pass.xml", QueueStatus::Passed),
        ("scenarios/fail.xml", QueueStatus::Failed),
    ] {
        let mut new = NewQueue::new(repo.to_str().unwrap(), "main");
        new.scenarios = Some(vec![scenario.into()]);
        let id = up.submit(&new).await.id;
        let q = up
            .wait_until(id, Duration::from_secs(120), |q| q.status.is_finished())
            .await;
        assert_eq!(q.status, verdict, "{q:#?}");
        ids.push(id);
    }
    assert!(up.stop().success());
    // ... and, with no worker, one waiting and one aborted.
    let serve = App::start("serve", &data, &local);
    for abort in [false, true] {
        let mut new = NewQueue::new(repo.to_str().unwrap(), "main");
        new.priority = Some(7);
        let id = serve.submit(&new).await.id;
        if abort {
            serve.api.abort(id).await.unwrap();
        }
        ids.push(id);
    }
    let mut before = Vec::new();
    for &id in &ids {
        before.push(seen(&serve, id).await);
    }
    assert_eq!(before[1].0["status"], "failed");
    assert_eq!(before[2].0["status"], "waiting");
    assert_eq!(before[3].0["status"], "aborted");
    assert!(!before[0].1.is_empty() && !before[0].2[0].is_empty());
    assert!(serve.stop().success());

    let (name, pg) = new_database().await;
    let out = migrate(&["--from", &sqlite, "--to", &pg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("copied 4 queues"), "{stdout}");

    // PostgreSQL, a data directory of its own (the logs are in the database): the same
    // queues, statuses, cases, messages and logs.
    let elsewhere = root.path().join("data-pg");
    let app = App::start(
        "serve",
        &elsewhere,
        &["--database", &pg, local[0], local[1]],
    );
    for (&id, expected) in ids.iter().zip(&before) {
        let got = seen(&app, id).await;
        assert_eq!(got.0, expected.0, "queue {id}");
        assert_eq!(got.1, expected.1, "log of queue {id}");
        assert_eq!(got.2, expected.2, "case logs of queue {id}");
    }
    // New queues get new ids, after the copied ones.
    let next = app
        .submit(&NewQueue::new(repo.to_str().unwrap(), "main"))
        .await;
    assert!(next.id > *ids.iter().max().unwrap(), "{next:?}");

    // The database is not empty any more: a second copy is refused and changes nothing.
    let out = migrate(&["--from", &sqlite, "--to", &pg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("not empty"), "{stderr}");
    let (_, list) = app.get_json("/api/v1/queues").await;
    assert_eq!(list["queues"].as_array().map(Vec::len), Some(5), "{list}");
    assert!(app.stop().success());

    // Without --from/--to, migrate still only brings a database up to date.
    let out = migrate(&["--database", &pg]);
    assert!(out.status.success(), "{out:?}");
    drop_database(&name).await;
}
