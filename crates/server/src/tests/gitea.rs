//! The Gitea reporter: commit statuses follow queue states in the database, whoever changes
//! them, once each, across restarts and with two servers on one database.

use super::*;
use std::sync::Mutex;
use testarena_core::origin::Origin;
use testarena_core::validate::ValidQueue;
use testarena_core::QueueStatus;
use testarena_store::CaseResult;

/// One request the fake Gitea got.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    auth: String,
    body: Value,
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// A Gitea that records commit statuses; its first answer is a 500.
async fn fake_gitea() -> (String, Calls) {
    use axum::extract::{Request as AxRequest, State as AxState};
    let calls: Calls = Arc::default();
    let app = Router::new()
        .fallback(
            |AxState(calls): AxState<Calls>, req: AxRequest| async move {
                let path = req.uri().path().to_string();
                let auth = req
                    .headers()
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
                    .await
                    .unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap();
                let mut calls = calls.lock().unwrap();
                calls.push(Call { path, auth, body });
                if calls.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::CREATED
                }
            },
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), calls)
}

fn reporting(url: String) -> impl FnOnce(&mut ServerConfig) {
    move |cfg| {
        let g = cfg.gitea.as_mut().unwrap();
        g.url = Some(url);
        g.token = Some("tok".into());
        g.public_url = Some("http://arena.example/".into());
    }
}

fn pushed(sha: &str) -> ValidQueue {
    ValidQueue {
        repo: "https://example.com/fw.git".into(),
        branch: "main".into(),
        scenarios: Some(vec!["a.xml".into()]),
        name: "acme/fw main".into(),
        priority: 5,
        commit: Some(sha.into()),
        case_filter: None,
        labels: Vec::new(),
        origin: Some(Origin {
            gitea_repo: "acme/fw".into(),
            context: "testarena/smoke".into(),
        }),
        no_cache: false,
        retries: 0,
    }
}

/// Waits until `calls` has `n` calls (or fails after 20 s), then a little more for extras.
async fn wait_calls(calls: &Calls, n: usize) -> Vec<Call> {
    let start = std::time::Instant::now();
    while calls.lock().unwrap().len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            calls.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    calls.lock().unwrap().clone()
}

/// Runs queue `id` to a failed verdict with one failed case, as worker `w`.
async fn fail(store: &Store, id: i64) {
    let task = store.queue(id).await.unwrap().tasks[0].0.id;
    let case = store
        .create_cases(
            task,
            &testarena_store::Holder::new("w", 1),
            &[NewCase {
                key: "TC".into(),
                name: "tc".into(),
            }],
        )
        .await
        .unwrap()[0];
    let failed = CaseResult {
        status: testarena_core::CaseStatus::Failed,
        duration_ms: None,
        message: None,
    };
    store
        .finish_case(case, &testarena_store::Holder::new("w", 1), &failed)
        .await
        .unwrap();
    store
        .finish_queue(
            id,
            &testarena_store::Holder::new("w", 1),
            QueueStatus::Failed,
            None,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn commit_statuses_follow_the_queue_once_each_across_servers_and_restarts() {
    let (url, calls) = fake_gitea().await;
    let app = app_configured(StoreOptions::default(), reporting(url.clone())).await;
    let store = app.state.store.clone();
    let sha = "a".repeat(40);
    let id = store.create_queue(&pushed(&sha)).await.unwrap().queue.id;
    let first = spawn_background(&app.state);
    // A second server on the same database reports too, but never the same status twice.
    let second_state = AppState::new(
        Store::open(&app.url).await.unwrap(),
        (*app.state.config).clone(),
        Arc::new(Notify::new()),
    );
    let second = spawn_background(&second_state);
    store.claim("w", 60_000).await.unwrap().unwrap();
    // `pending`, retried after the 500.
    let got = wait_calls(&calls, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    for c in &got {
        assert_eq!(c.path, format!("/api/v1/repos/acme/fw/statuses/{sha}"));
        assert_eq!(c.auth, "token tok");
        assert_eq!(c.body["state"], "pending");
        assert_eq!(c.body["context"], "testarena/smoke");
        assert_eq!(c.body["description"], "TestArena is testing this commit");
        assert_eq!(
            c.body["target_url"],
            format!("http://arena.example/#/queues/{id}")
        );
    }
    fail(&store, id).await;
    let got = wait_calls(&calls, 3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2].body["state"], "failure");
    assert_eq!(
        got[2].body["description"],
        "failed: 0 passed, 1 failed, 0 error of 1"
    );
    // Both servers stop; a queue runs and ends meanwhile; a restarted server posts its verdict.
    for t in first.into_iter().chain(second) {
        t.abort();
    }
    let other = "b".repeat(40);
    let id2 = store.create_queue(&pushed(&other)).await.unwrap().queue.id;
    store.claim("w", 60_000).await.unwrap().unwrap();
    fail(&store, id2).await;
    let restarted = spawn_background(&app.state);
    let got = wait_calls(&calls, 4).await;
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        got[3].path,
        format!("/api/v1/repos/acme/fw/statuses/{other}")
    );
    assert_eq!(got[3].body["state"], "failure");
    assert!(store.due_reports(10).await.unwrap().is_empty());
    for t in restarted {
        t.abort();
    }
}
