//! Submits made once and rate limits (issue 13), through the real binary on a random port with
//! a fresh SQLite file: `Idempotency-Key` on `POST /api/v1/queues` and re-runs, `429
//! rate_limited` with `Retry-After` for submits per token and anonymous archives per address.

mod common;

use common::App;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use testarena_client::{NewQueue, QueueListQuery, Rerun};

/// `serve` with the rate limits `extra` sets (none by default beyond the built-in ones).
fn serve(dir: &tempfile::TempDir, extra: &[&str]) -> App {
    App::start("serve", dir.path(), extra)
}

/// A raw `POST path` with `body` and headers: the status, headers and JSON answer.
async fn post(
    app: &App,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut rb = app.http.post(app.url(path)).json(body);
    for (name, value) in headers {
        rb = rb.header(*name, *value);
    }
    let r = rb.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

async fn count(app: &App) -> usize {
    let all = QueueListQuery::default().with_limit(500);
    app.api.queues(&all).await.unwrap().queues.len()
}

fn queue_body(branch: &str) -> Value {
    json!({"repo": "https://example.com/fw.git", "branch": branch})
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn the_same_idempotency_key_makes_one_queue_and_replays_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir, &[]);
    let key = [("Idempotency-Key", "4b1c6f2e-submit-1")];
    let (status, h, first) = post(&app, "/api/v1/queues", &queue_body("main"), &key).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(header(&h, "idempotent-replayed"), None);
    let id = first["id"].as_i64().unwrap();
    // The client retries (its answer was lost): the same queue, said to be a replay.
    let (status, h, again) = post(&app, "/api/v1/queues", &queue_body("main"), &key).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(header(&h, "idempotent-replayed"), Some("true"));
    assert_eq!(
        header(&h, "location"),
        Some(format!("/api/v1/queues/{id}").as_str())
    );
    assert_eq!(count(&app).await, 1);
    // The same key with another request: refused, nothing stored.
    let (status, _, body) = post(&app, "/api/v1/queues", &queue_body("dev"), &key).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&format!("queue {id}")));
    // Keys are per caller: another token's same key is a new submit.
    let other = [
        ("Idempotency-Key", "4b1c6f2e-submit-1"),
        ("Authorization", "Bearer ta_2_other"),
    ];
    let (status, _, theirs) = post(&app, "/api/v1/queues", &queue_body("main"), &other).await;
    assert_eq!(status, StatusCode::CREATED, "{theirs}");
    assert_ne!(theirs["id"], first["id"]);
    // Without a key, every submit is a new queue, as before.
    for _ in 0..2 {
        let (status, h, _) = post(&app, "/api/v1/queues", &queue_body("main"), &[]).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(header(&h, "idempotent-replayed"), None);
    }
    assert_eq!(count(&app).await, 4);
    // A key that is not 1..=255 visible ASCII characters.
    let long = "k".repeat(256);
    for bad in ["", "two words", long.as_str()] {
        let (status, _, body) = post(
            &app,
            "/api/v1/queues",
            &queue_body("main"),
            &[("Idempotency-Key", bad)],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert_eq!(body["error"]["code"], "bad_idempotency_key");
    }
    // An invalid queue is refused as always, key or not, and uses up nothing.
    let (status, _, body) = post(
        &app,
        "/api/v1/queues",
        &queue_body("a..b"),
        &[("Idempotency-Key", "k-invalid")],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "invalid_input");
    assert_eq!(count(&app).await, 4);
    // The typed client sends a key of its own and says when the answer was a replay.
    let new = NewQueue::new("https://example.com/fw.git", "typed");
    let made = app.api.create_queue_keyed(&new, "typed-1").await.unwrap();
    assert!(!made.replayed);
    let again = app.api.create_queue_keyed(&new, "typed-1").await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.value.id, made.value.id);
    let fresh = app.api.create_queue_answer(&new).await.unwrap();
    assert_ne!(fresh.value.id, made.value.id);
    assert_eq!(count(&app).await, 6);
    assert!(app.stop().success());
}

#[tokio::test]
async fn a_rerun_with_a_key_is_made_once_even_after_its_queue_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir, &[]);
    let original = app
        .api
        .create_queue(&NewQueue::new("https://example.com/fw.git", "main"))
        .await
        .unwrap();
    let path = format!("/api/v1/queues/{}/rerun", original.id);
    let key = [("Idempotency-Key", "rerun-1")];
    let (status, _, first) = post(&app, &path, &json!({}), &key).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    // The queue re-run is deleted; the retry still finds the re-run it made.
    app.api.delete(original.id).await.unwrap();
    let (status, h, again) = post(&app, &path, &json!({}), &key).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(header(&h, "idempotent-replayed"), Some("true"));
    // Same key, another request (only_failed): refused.
    let (status, _, body) = post(&app, &path, &json!({"only_failed": true}), &key).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    // A create with a re-run's key is another request too.
    let (status, _, body) = post(&app, "/api/v1/queues", &queue_body("main"), &key).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // The typed client's re-run is keyed as well.
    let keep = app
        .api
        .create_queue(&NewQueue::new("https://example.com/fw.git", "keep"))
        .await
        .unwrap();
    let r = app
        .api
        .rerun_keyed(keep.id, &Rerun::default(), "rerun-2")
        .await
        .unwrap();
    let r2 = app
        .api
        .rerun_keyed(keep.id, &Rerun::default(), "rerun-2")
        .await
        .unwrap();
    assert_eq!(
        (r.value.id, r.replayed, r2.replayed),
        (r2.value.id, false, true)
    );
    assert!(app.stop().success());
}

/// Seconds of a 429's `Retry-After`, after checking the answer is the API's `rate_limited`.
fn retry_after(status: StatusCode, h: &reqwest::header::HeaderMap, body: &Value) -> u64 {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let secs: u64 = header(h, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!((1..=5).contains(&secs), "Retry-After {secs}");
    secs
}

#[tokio::test]
async fn submits_over_a_tokens_burst_are_429_with_retry_after_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir, &["--submit-rate", "1", "--submit-burst", "3"]);
    let alice = [("Authorization", "Bearer ta_1_alice")];
    for i in 0..3 {
        let (status, _, body) = post(&app, "/api/v1/queues", &queue_body("main"), &alice).await;
        assert_eq!(status, StatusCode::CREATED, "submit {i}: {body}");
    }
    let (status, h, body) = post(&app, "/api/v1/queues", &queue_body("main"), &alice).await;
    let wait = retry_after(status, &h, &body);
    // A re-run counts against the same budget.
    let (status, h, body) = post(&app, "/api/v1/queues/1/rerun", &json!({}), &alice).await;
    retry_after(status, &h, &body);
    // The session cookie of the same token is the same caller.
    let cookie = [("Cookie", "testarena_session=ta_1_alice")];
    let (status, h, body) = post(&app, "/api/v1/queues", &queue_body("main"), &cookie).await;
    retry_after(status, &h, &body);
    // Another token, and anonymous callers, are not affected.
    let bob = [("Authorization", "Bearer ta_2_bob")];
    let (status, _, body) = post(&app, "/api/v1/queues", &queue_body("main"), &bob).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for _ in 0..5 {
        let (status, _, body) = post(&app, "/api/v1/queues", &queue_body("main"), &[]).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Refused submits stored nothing.
    assert_eq!(count(&app).await, 9);
    // Reads are not limited.
    for _ in 0..20 {
        let r = app
            .http
            .get(app.url("/api/v1/queues"))
            .bearer_auth("ta_1_alice")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    // After Retry-After, alice may submit again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, _, body) = post(&app, "/api/v1/queues", &queue_body("main"), &alice).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(app.stop().success());
}

#[tokio::test]
async fn anonymous_archive_bursts_are_429_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir, &["--archive-rate", "1", "--archive-burst", "3"]);
    let q = app
        .api
        .create_queue(&NewQueue::new("https://example.com/fw.git", "main"))
        .await
        .unwrap();
    let archive = app.url(&format!("/api/v1/queues/{}/archive", q.id));
    for i in 0..3 {
        let r = app.http.get(&archive).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "archive {i}");
        r.bytes().await.unwrap();
    }
    let r = app.http.get(&archive).send().await.unwrap();
    let (status, h) = (r.status(), r.headers().clone());
    let wait = retry_after(status, &h, &r.json().await.unwrap());
    // A caller with a token is not counted by address.
    let r = app
        .http
        .get(&archive)
        .bearer_auth("ta_1_alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The list, detail and log routes are never limited.
    for path in [
        "/api/v1/queues".to_string(),
        format!("/api/v1/queues/{}", q.id),
        format!("/api/v1/queues/{}/log", q.id),
    ] {
        for _ in 0..10 {
            let r = app.http.get(app.url(&path)).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
        }
    }
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let r = app.http.get(&archive).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The typed client waits a 429 out by itself, saying so.
    let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = told.clone();
    let api = testarena_client::Client::builder(&app.base)
        .on_retry(move |n| seen.lock().unwrap().push(n.clone()))
        .build()
        .unwrap();
    for _ in 0..4 {
        api.archive(q.id).await.unwrap();
    }
    let told = told.lock().unwrap();
    assert!(!told.is_empty(), "no 429 was waited out");
    assert!(told[0].reason.contains("rate_limited"), "{:?}", told[0]);
    assert!(told[0].wait >= Duration::from_secs(1), "{:?}", told[0]);
    drop(told);
    assert!(app.stop().success());
}
