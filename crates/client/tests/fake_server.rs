//! The client against a stand-in server (axum on a random port): what goes on the wire, and how
//! answers and refusals come back. The real server is exercised by `crates/cli/tests`.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testarena_client::{
    Client, ClientError, NewQueue, Queue, QueueListQuery, QueueStatus, Summary,
};

/// What the stand-in saw: one line per request.
type Seen = Arc<Mutex<Vec<String>>>;

fn queue(id: i64, new: &NewQueue) -> Queue {
    Queue {
        id,
        name: new.name.clone().unwrap_or_else(|| new.branch.clone()),
        repo: new.repo.clone(),
        branch: new.branch.clone(),
        commit: None,
        status: QueueStatus::Waiting,
        phase: None,
        priority: new.priority.unwrap_or(5),
        created_at: "2026-01-01T00:00:00.000Z".into(),
        started_at: None,
        finished_at: None,
        error: None,
        scenarios: new.scenarios.clone(),
        abort_requested: false,
        worker: None,
        attempts: 0,
        labels: Vec::new(),
        submitted_by: None,
        waiting_reason: None,
        summary: Summary::default(),
        tasks: Vec::new(),
        no_cache: false,
        retries: 0,
        build: Default::default(),
        previous_id: None,
        regressions: None,
    }
}

fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    (status, Json(body)).into_response()
}

async fn health() -> Response {
    let body =
        serde_json::json!({"status": "degraded", "database": "unreachable", "version": "9.9.9"});
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn create(State(seen): State<Seen>, headers: HeaderMap, body: String) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    seen.lock()
        .unwrap()
        .push(format!("POST {body} auth={auth}"));
    match serde_json::from_str::<NewQueue>(&body) {
        Ok(new) if new.branch.contains("..") => api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "branch: must not contain '..'",
        ),
        Ok(new) => (StatusCode::CREATED, Json(queue(7, &new))).into_response(),
        Err(e) => api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            &e.to_string(),
        ),
    }
}

async fn list(State(seen): State<Seen>, RawQuery(q): RawQuery) -> Response {
    seen.lock()
        .unwrap()
        .push(format!("LIST {}", q.unwrap_or_default()));
    Json(serde_json::json!({"queues": [], "next": null})).into_response()
}

async fn one(Path(id): Path<i64>) -> Response {
    match id {
        5 => "not json".into_response(),
        7 => Json(queue(7, &NewQueue::new("r", "b"))).into_response(),
        _ => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("queue {id} not found"),
        ),
    }
}

async fn log(RawQuery(q): RawQuery) -> Response {
    let offset: u64 = q
        .as_deref()
        .and_then(|q| q.strip_prefix("offset="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let data = &b"line one\nline two\n"[(offset as usize).min(18)..];
    (
        [
            ("x-next-offset", (offset + data.len() as u64).to_string()),
            ("x-queue-status", "passed".to_string()),
        ],
        data.to_vec(),
    )
        .into_response()
}

async fn case_log(Path((id, case)): Path<(i64, String)>, RawQuery(q): RawQuery) -> String {
    format!("{id} {case} {}", q.unwrap_or_default())
}

async fn proxy_page() -> Response {
    (
        StatusCode::BAD_GATEWAY,
        "<html>\n<h1>502</h1>\nupstream is down\n</html>",
    )
        .into_response()
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(5)).await;
    "late"
}

/// Starts the stand-in; returns its base URL and what it saw.
async fn fake() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/queues", post(create).get(list))
        .route("/api/v1/queues/{id}", get(one))
        .route("/api/v1/queues/{id}/log", get(log))
        .route("/api/v1/queues/{id}/cases/{case}/log", get(case_log))
        .route("/api/v1/workers", get(proxy_page))
        .route("/metrics", get(slow))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

#[tokio::test]
async fn a_new_queue_is_sent_as_the_server_reads_it_with_the_token() {
    let (base, seen) = fake().await;
    let client = Client::builder(&format!("{base}/"))
        .token("s3cret")
        .build()
        .unwrap();
    let mut new = NewQueue::new("https://h/fw.git", "main");
    new.priority = Some(7);
    let answer = client.create_queue_answer(&new).await.unwrap();
    assert_eq!(answer.value.id, 7);
    assert_eq!(answer.value.priority, 7);
    assert_eq!(
        serde_json::from_str::<Queue>(&answer.text).unwrap(),
        answer.value
    );
    assert_eq!(
        seen.lock().unwrap()[0],
        r#"POST {"repo":"https://h/fw.git","branch":"main","priority":7} auth=Bearer s3cret"#
    );
}

#[tokio::test]
async fn refusals_carry_the_api_code_and_message() {
    let (base, _) = fake().await;
    let client = Client::new(&base).unwrap();
    let e = client
        .create_queue(&NewQueue::new("r", "a..b"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422));
    assert_eq!(e.code(), Some("invalid_input"));
    assert_eq!(
        e.to_string(),
        "branch: must not contain '..' (invalid_input, HTTP 422)"
    );
    let e = client.queue(999).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(e.api_message(), Some("queue 999 not found"));
    // A proxy's page instead of the API's JSON: its status and first line of text.
    let e = client.workers().await.unwrap_err();
    assert_eq!(e.code(), Some("http_502"));
    assert!(e.to_string().contains("upstream is down"), "{e}");
    assert!(e.is_transient());
    // An answer that is not the expected JSON.
    let e = client.queue(5).await.unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Decode {
                what: "a queue",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(client.queue(7).await.unwrap().id, 7);
}

#[tokio::test]
async fn a_degraded_health_is_a_report_not_an_error() {
    let (base, _) = fake().await;
    let h = Client::new(&base).unwrap().health().await.unwrap();
    assert_eq!(
        (h.status.as_str(), h.database.as_str()),
        ("degraded", "unreachable")
    );
}

#[tokio::test]
async fn list_queries_and_case_ids_are_encoded() {
    let (base, seen) = fake().await;
    let client = Client::new(&base).unwrap();
    let list = client
        .queues(
            &QueueListQuery::default()
                .with_status(QueueStatus::Failed)
                .with_limit(20)
                .with_before(41),
        )
        .await
        .unwrap();
    assert!(list.queues.is_empty() && list.next.is_none());
    client.queues(&QueueListQuery::default()).await.unwrap();
    let raw = QueueListQuery {
        status: Some("a b&c".into()),
        ..Default::default()
    };
    client.queues(&raw).await.unwrap();
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [
            "LIST status=failed&limit=20&before=41",
            "LIST ",
            "LIST status=a+b%26c"
        ]
    );
    let text = client.case_log(3, "TC 1/x", Some(2)).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&text), "3 TC 1/x task=2");
}

#[tokio::test]
async fn log_chunks_follow_the_offset_headers() {
    let (base, _) = fake().await;
    let client = Client::new(&base).unwrap();
    let first = client.queue_log(1, 0).await.unwrap();
    assert_eq!(first.data, b"line one\nline two\n");
    assert_eq!(first.next, 18);
    assert!(first.finished());
    let second = client.queue_log(1, 9).await.unwrap();
    assert_eq!(
        (second.data.as_slice(), second.next),
        (&b"line two\n"[..], 18)
    );
    let end = client.queue_log(1, first.next).await.unwrap();
    assert!(end.data.is_empty() && end.finished());
}

#[tokio::test]
async fn an_unreachable_or_slow_server_is_a_transport_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let e = Client::new(&base).unwrap().health().await.unwrap_err();
    assert!(matches!(e, ClientError::Transport { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot reach TestArena at {base}: ")),
        "{e}"
    );
    assert!(e.is_transient());

    let (base, _) = fake().await;
    let client = Client::builder(&base)
        .timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let e = client.metrics().await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("cannot reach TestArena at {base}: no answer in time")
    );
    assert!(matches!(
        Client::new("ftp://x"),
        Err(ClientError::InvalidUrl(m)) if m.contains("invalid server URL")
    ));
}

/// A stand-in for `POST /api/v1/queues` whose first answer comes too late (the client gives
/// up: a lost answer), whose second is `503`, and whose third is the queue, as a replay.
async fn flaky(State(keys): State<Seen>, headers: HeaderMap, body: String) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let n = {
        let mut keys = keys.lock().unwrap();
        keys.push(key);
        keys.len()
    };
    let new: NewQueue = serde_json::from_str(&body).unwrap();
    match n % 3 {
        1 => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            (StatusCode::CREATED, Json(queue(7, &new))).into_response()
        }
        2 => api_error(StatusCode::SERVICE_UNAVAILABLE, "database_busy", "busy"),
        _ => (
            StatusCode::CREATED,
            [("idempotent-replayed", "true")],
            Json(queue(7, &new)),
        )
            .into_response(),
    }
}

#[tokio::test]
async fn a_lost_answer_is_sent_again_with_the_same_idempotency_key() {
    let keys: Seen = Arc::default();
    let app = Router::new()
        .route("/api/v1/queues", post(flaky))
        .with_state(keys.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let told = Arc::new(Mutex::new(Vec::new()));
    let seen = told.clone();
    let client = Client::builder(&base)
        .timeout(Some(Duration::from_millis(300)))
        .on_retry(move |n| seen.lock().unwrap().push(n.clone()))
        .build()
        .unwrap();
    let new = NewQueue::new("https://h/fw.git", "main");
    let answer = client.create_queue_answer(&new).await.unwrap();
    assert_eq!((answer.value.id, answer.replayed), (7, true));
    {
        let keys = keys.lock().unwrap();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert!(
            keys.iter().all(|k| k == &keys[0]),
            "one key for every try: {keys:?}"
        );
        assert_eq!(keys[0].len(), 36, "a UUID: {keys:?}");
    }
    let told = told.lock().unwrap().clone();
    assert_eq!(told.len(), 2, "{told:?}");
    assert_eq!(told[0].call, "POST /api/v1/queues");
    assert!(
        told[0].reason.contains("no answer in time"),
        "{:?}",
        told[0]
    );
    assert!(told[1].reason.contains("HTTP 503"), "{:?}", told[1]);
    assert_eq!(
        (told[1].retry, told[1].of),
        (2, testarena_client::DEFAULT_RETRIES)
    );
    // The next submit is another one: a new key.
    client.create_queue_answer(&new).await.unwrap();
    {
        let keys = keys.lock().unwrap();
        assert_eq!(keys.len(), 6);
        assert_ne!(keys[3], keys[0]);
    }
    // A client told not to retry gives up at once.
    let once = Client::builder(&base)
        .timeout(Some(Duration::from_millis(300)))
        .retries(0)
        .build()
        .unwrap();
    let e = once.create_queue(&new).await.unwrap_err();
    assert!(matches!(e, ClientError::Transport { .. }), "{e}");
}

#[tokio::test]
async fn refusals_are_not_sent_again() {
    let (base, seen) = fake().await;
    let client = Client::new(&base).unwrap();
    let e = client
        .create_queue(&NewQueue::new("r", "a..b"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422));
    assert_eq!(seen.lock().unwrap().len(), 1);
}
