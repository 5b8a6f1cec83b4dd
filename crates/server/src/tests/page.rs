//! The answers the database builds as JSON (`testarena_store::page`, served by `GET
//! /api/v1/queues/{id}` and `GET /api/v1/queues`) hold the same content as the view made from
//! rows (`view::queue_live`, which every other endpoint serves), on SQLite and on PostgreSQL.

use crate::view::{self, DETAIL_CAPS, LIST_CAPS};
use serde_json::Value;
use sqlx::Connection;

use testarena_core::api::{self, QueueList};
use testarena_core::limits::WORKER_ALIVE_MS;
use testarena_core::validate::ValidQueue;
use testarena_core::{CaseStatus, Phase, QueueStatus};
use testarena_store::{now_ms, CaseCaps, CaseResult, NewCase, Store, WorkerRow};

/// A fresh PostgreSQL database on the test server (as the store's own tests make them); its
/// name, to drop it, and its URL.
async fn postgres_store() -> (Store, String, String) {
    let admin_url = std::env::var("TESTARENA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!(
        "testarena_test_page_{}_{}",
        std::process::id(),
        now_ms() % 1_000_000_000
    );
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("PostgreSQL must be reachable (TESTARENA_TEST_POSTGRES)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let _ = admin.close().await;
    let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap();
    let url = format!("{base}/{name}");
    let store = Store::open(&url).await.unwrap();
    (store, name, url)
}

async fn drop_postgres(name: &str) {
    let admin_url = std::env::var("TESTARENA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await;
}

fn queue(name: &str, repo: &str, scenarios: &[&str], labels: &[&str]) -> ValidQueue {
    ValidQueue {
        no_cache: false,
        retries: 0,
        repo: repo.into(),
        branch: "main".into(),
        scenarios: (!scenarios.is_empty())
            .then(|| scenarios.iter().map(|s| s.to_string()).collect()),
        name: name.into(),
        priority: 5,
        commit: None,
        case_filter: None,
        labels: labels.iter().map(|s| s.to_string()).collect(),
        origin: None,
    }
}

/// A running queue with tasks and cases (claimed at once: the claim takes the oldest); with
/// `odd`, the ids of its second task's cases need percent-encoding in their links.
async fn running(store: &Store, odd: bool) {
    let id = store
        .create_queue(&queue(
            "running \"q\"",
            "https://example.com/r.git",
            &["a.xml", "b.xml", "c.xml"],
            &[],
        ))
        .await
        .unwrap()
        .queue
        .id;
    let row = store.claim("w1", 60_000).await.unwrap().unwrap();
    assert_eq!(row.id, id);
    let h = row.holder().unwrap();
    store.set_phase(id, &h, Some(Phase::Testing)).await.unwrap();
    store.set_commit(id, &h, "0123abcd").await.unwrap();
    let tasks: Vec<i64> = store
        .queue(id)
        .await
        .unwrap()
        .tasks
        .iter()
        .map(|t| t.0.id)
        .collect();
    let texts = [
        "plain",
        "quote \" backslash \\ slash /",
        "line\nbreak\ttab\r",
        "control \u{1} \u{1f} \u{7f}",
        "unicode é ✓ 🚀",
    ];
    for (k, (t, n)) in tasks.iter().zip([60, 3, 12]).enumerate() {
        store
            .set_task(*t, &h, CaseStatus::Running, None)
            .await
            .unwrap();
        let cases: Vec<NewCase> = (0..n)
            .map(|i| NewCase {
                // The second task's ids need percent-encoding in links.
                key: if odd && k == 1 {
                    format!("TC {i}/é")
                } else {
                    format!("TC_{i}.x-y")
                },
                name: texts[i % texts.len()].to_string(),
            })
            .collect();
        let ids = store.create_cases(*t, &h, &cases).await.unwrap();
        for (i, c) in ids.iter().enumerate() {
            let status = [
                CaseStatus::Passed,
                CaseStatus::Failed,
                CaseStatus::Error,
                CaseStatus::Skipped,
                CaseStatus::Running,
                CaseStatus::Pending,
                CaseStatus::Flaky,
            ][i % 7];
            if status == CaseStatus::Pending {
                continue;
            }
            store.start_case(*c, &h).await.unwrap();
            if status.is_finished() {
                let result = CaseResult {
                    status,
                    duration_ms: Some(if i == 3 { 0 } else { i as u64 * 7 }),
                    message: (i % 2 == 0).then(|| texts[i % texts.len()].to_string()),
                };
                store.finish_case(*c, &h, &result).await.unwrap();
            }
        }
        if k == 0 {
            store
                .set_task(*t, &h, CaseStatus::Failed, Some("it \"failed\"\n"))
                .await
                .unwrap();
        }
    }
}

/// Queues of every kind the JSON must get right: no tasks, capped cases, odd case ids and
/// texts, credentials in the URL, labels, every status, an abort asked for.
async fn fixture(store: &Store) {
    let plain = "https://example.com/r.git";
    running(store, false).await;
    running(store, true).await;
    // Finished after an abort was asked for: the answer no longer shows it.
    let done = store
        .create_queue(&ValidQueue {
            retries: 2,
            ..queue("done", plain, &["a.xml"], &[])
        })
        .await
        .unwrap()
        .queue
        .id;
    let h = store
        .claim("w1", 60_000)
        .await
        .unwrap()
        .unwrap()
        .holder()
        .unwrap();
    store.abort_queue(done, DETAIL_CAPS).await.unwrap();
    store
        .finish_queue(done, &h, QueueStatus::Aborted, Some("aborted"))
        .await
        .unwrap();
    // Running with an abort asked for.
    let aborting = store
        .create_queue(&queue("aborting", plain, &[], &[]))
        .await
        .unwrap()
        .queue
        .id;
    store.claim("w1", 60_000).await.unwrap().unwrap();
    store.abort_queue(aborting, DETAIL_CAPS).await.unwrap();
    // Waiting ones: credentials in the URL, labels, none.
    for (name, repo, labels) in [
        (
            "secret",
            "https://user:tok@example.com/r.git?private_token=abc",
            &[][..],
        ),
        ("ssh", "git@example.com:team/r.git", &["esp32"][..]),
        ("labelled", plain, &["esp32", "sim"][..]),
        ("free", plain, &[][..]),
    ] {
        store
            .create_queue(&queue(name, repo, &["s.xml"], labels))
            .await
            .unwrap();
    }
    // Aborted while waiting.
    let gone = store
        .create_queue(&queue("gone", plain, &["x.xml", "y.xml"], &[]))
        .await
        .unwrap()
        .queue
        .id;
    store.abort_queue(gone, DETAIL_CAPS).await.unwrap();
}

/// The answer made from rows, as JSON.
async fn from_rows(store: &Store, id: i64, caps: CaseCaps) -> Value {
    let detail = store.queue_capped(id, caps).await.unwrap();
    let live = view::live_labels(store).await;
    serde_json::to_value(view::queue_live(&detail, live.as_deref())).unwrap()
}

/// The answer the database built, as JSON; on SQLite (`exact`) also the very bytes the view
/// from rows serialises to, unless it had to be redone.
async fn from_json(store: &Store, id: i64, caps: CaseCaps, exact: bool) -> Value {
    let q = store.queue_json(id, caps, WORKER_ALIVE_MS).await.unwrap();
    let raw = q.raw;
    let text = view::queue_json(q).unwrap();
    if exact && !raw {
        let detail = store.queue_capped(id, caps).await.unwrap();
        let live = view::live_labels(store).await;
        let rows = serde_json::to_string(&view::queue_live(&detail, live.as_deref())).unwrap();
        assert_eq!(rows, text, "queue {id}, caps {caps:?}");
    }
    serde_json::from_str(&text).unwrap()
}

/// Every queue and page of the fixture compares equal both ways.
async fn compare_all(store: &Store, exact: bool) {
    let ids: Vec<i64> = store
        .list_queues(None, 500, None, LIST_CAPS)
        .await
        .unwrap()
        .0
        .iter()
        .map(|q| q.queue.id)
        .collect();
    assert_eq!(ids.len(), 9);
    let caps = [
        DETAIL_CAPS,
        LIST_CAPS,
        CaseCaps {
            per_task: 10,
            per_queue: 12,
        },
        CaseCaps {
            per_task: 0,
            per_queue: 5,
        },
        CaseCaps::ALL,
    ];
    for id in &ids {
        for c in caps {
            let (a, b) = (
                from_rows(store, *id, c).await,
                from_json(store, *id, c, exact).await,
            );
            assert_eq!(a, b, "queue {id}, caps {c:?}");
        }
    }
    let statuses = [None, Some(QueueStatus::Waiting), Some(QueueStatus::Running)];
    for status in statuses {
        for before in [None, Some(ids[2])] {
            for limit in [1, 3, 50] {
                let (page, next) = store
                    .list_queues(status, limit, before, LIST_CAPS)
                    .await
                    .unwrap();
                let live = view::live_labels(store).await;
                let rows = serde_json::to_value(QueueList {
                    queues: page
                        .iter()
                        .map(|q| view::queue_live(q, live.as_deref()))
                        .collect(),
                    next,
                })
                .unwrap();
                let (page, next) = store
                    .list_queues_json(status, limit, before, LIST_CAPS, WORKER_ALIVE_MS)
                    .await
                    .unwrap();
                let json: Value =
                    serde_json::from_str(&view::queue_list_json(page, next).unwrap()).unwrap();
                assert_eq!(
                    rows, json,
                    "status {status:?}, before {before:?}, limit {limit}"
                );
            }
        }
    }
    assert!(matches!(
        store
            .queue_json(999_999, DETAIL_CAPS, WORKER_ALIVE_MS)
            .await,
        Err(testarena_store::StoreError::NotFound(999_999))
    ));
}

/// The checks of [`compare_all`] with no live worker, then with one that has some labels.
async fn check(store: &Store, exact: bool) {
    fixture(store).await;
    compare_all(store, exact).await;
    // Read twice, so that the page is kept whole before a worker comes alive.
    for _ in 0..2 {
        let some = store.list_queues_json(None, 50, None, LIST_CAPS, WORKER_ALIVE_MS);
        let text = view::queue_list_json(some.await.unwrap().0, None).unwrap();
        assert!(text.contains("waiting for a worker (none is alive)"));
        assert!(!text.contains("user:tok"), "credentials shown: {text}");
    }
    let now = now_ms();
    store
        .register_worker(&WorkerRow {
            id: "w9".into(),
            hostname: "h".into(),
            pid: 1,
            started_at: now,
            heartbeat_at: now,
            concurrency: 1,
            boot_id: "b".into(),
            version: "v".into(),
            labels: vec!["esp32".into(), "qemu".into()],
        })
        .await
        .unwrap();
    compare_all(store, exact).await;
    let some = store.list_queues_json(None, 50, None, LIST_CAPS, WORKER_ALIVE_MS);
    let text = view::queue_list_json(some.await.unwrap().0, None).unwrap();
    assert!(text.contains("waiting for a worker with labels esp32, sim"));
    assert!(!text.contains("none is alive"));
    // Parses as the API's shape.
    let _: api::QueueList = serde_json::from_str(&text).unwrap();
}

#[tokio::test]
async fn database_built_answers_match_the_rows_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let store = Store::open(&url).await.unwrap();
    // On an empty database first: its claims must take its own queue.
    kept_answers_follow(&store, &url, true).await;
    check(&store, true).await;
}

#[tokio::test]
async fn database_built_answers_match_the_rows_on_postgres() {
    let (store, name, url) = postgres_store().await;
    // Dropped whether the checks pass or not.
    let outcome = tokio::spawn({
        let store = store.clone();
        async move {
            kept_answers_follow(&store, &url, false).await;
            check(&store, false).await;
        }
    })
    .await;
    store.close().await;
    drop_postgres(&name).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The answers the store keeps (`testarena_store::page`) follow every change of a queue: each
/// step of a queue's life, and changes made with plain SQL behind the store's back (as another
/// `serve` on the same database would), are seen by the very next read.
async fn kept_answers_follow(store: &Store, url: &str, exact: bool) {
    let plain = "https://example.com/r.git";
    let id = store
        .create_queue(&queue("fresh", plain, &[], &[]))
        .await
        .unwrap()
        .queue
        .id;
    let same = |step: &'static str| async move {
        for caps in [DETAIL_CAPS, LIST_CAPS] {
            let (a, b) = (
                from_rows(store, id, caps).await,
                from_json(store, id, caps, exact).await,
            );
            assert_eq!(a, b, "after {step}");
            // Twice: the second read is answered from what was kept.
            assert_eq!(
                a,
                from_json(store, id, caps, exact).await,
                "after {step}, kept"
            );
        }
        // The list's page, twice: the second is the page kept whole (`page::Lists`).
        let rows = from_rows(store, id, LIST_CAPS).await;
        for read in ["built", "kept"] {
            assert_eq!(
                Some(&rows),
                listed(store, id).await.as_ref(),
                "after {step}, list {read}"
            );
        }
    };
    same("create").await;
    let h = store
        .claim("w1", 60_000)
        .await
        .unwrap()
        .unwrap()
        .holder()
        .unwrap();
    same("claim").await;
    store.set_phase(id, &h, Some(Phase::Cloning)).await.unwrap();
    same("phase").await;
    let tasks = store
        .create_tasks(id, &h, &["a.xml".into(), "b.xml".into()])
        .await
        .unwrap();
    same("tasks").await;
    let new = |n: usize| -> Vec<NewCase> {
        (0..n)
            .map(|i| NewCase {
                key: format!("C{i}"),
                name: format!("case {i}"),
            })
            .collect()
    };
    let cases = store.create_cases(tasks[0].id, &h, &new(3)).await.unwrap();
    same("cases").await;
    store.start_case(cases[0], &h).await.unwrap();
    same("case started").await;
    let passed = CaseResult {
        status: CaseStatus::Passed,
        duration_ms: Some(5),
        message: None,
    };
    store.finish_case(cases[0], &h, &passed).await.unwrap();
    same("case passed").await;
    store
        .set_task(tasks[0].id, &h, CaseStatus::Running, None)
        .await
        .unwrap();
    same("task running").await;
    // Cases made again (fewer): the old ones are deleted.
    store.create_cases(tasks[0].id, &h, &new(2)).await.unwrap();
    same("cases made again").await;
    // Handed back: its cases and its default-set tasks are deleted.
    assert!(store.hand_back(id, &h).await.unwrap());
    same("hand back").await;
    let h = store
        .claim("w2", 60_000)
        .await
        .unwrap()
        .unwrap()
        .holder()
        .unwrap();
    let tasks = store.create_tasks(id, &h, &["c.xml".into()]).await.unwrap();
    store.create_cases(tasks[0].id, &h, &new(4)).await.unwrap();
    same("claimed again").await;
    store.abort_queue(id, DETAIL_CAPS).await.unwrap();
    same("abort asked").await;
    store
        .finish_queue(id, &h, QueueStatus::Aborted, Some("aborted"))
        .await
        .unwrap();
    same("finished").await;
    // Behind the store's back: the columns a queue is made with, and deletes.
    let statements = [
        "UPDATE queues SET name = 'renamed', priority = 1, labels = '[\"x\"]' WHERE id = $1",
        "UPDATE queues SET repo = 'https://example.com/other.git', branch = 'b', submitted_by = 't' WHERE id = $1",
        "UPDATE queues SET scenarios = '[\"z.xml\"]', created_at = 1000 WHERE id = $1",
        "UPDATE queues SET no_cache = 1, build_cached_from = 7 WHERE id = $1",
        "DELETE FROM cases WHERE queue_id = $1 AND position = 3",
        "DELETE FROM tasks WHERE queue_id = $1",
    ];
    for sql in statements {
        if url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query(sql).bind(id).execute(&mut c).await.unwrap();
            let _ = c.close().await;
        } else {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(sql).bind(id).execute(&mut c).await.unwrap();
            let _ = c.close().await;
        }
        same(sql).await;
    }
    store.delete_queue(id).await.unwrap();
    assert!(matches!(
        store.queue_json(id, DETAIL_CAPS, WORKER_ALIVE_MS).await,
        Err(testarena_store::StoreError::NotFound(_))
    ));
    assert_eq!(listed(store, id).await, None, "deleted, still listed");
}

/// Queue `id` as the first page of the list shows it (`None`: not on it).
async fn listed(store: &Store, id: i64) -> Option<Value> {
    let (page, next) = store
        .list_queues_json(None, 50, None, LIST_CAPS, WORKER_ALIVE_MS)
        .await
        .unwrap();
    let list: Value = serde_json::from_str(&view::queue_list_json(page, next).unwrap()).unwrap();
    list["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["id"] == id)
        .cloned()
}
