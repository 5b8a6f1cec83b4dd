//! The router, called in-process: error shapes, transient database trouble, big queues,
//! webhook replays.

use super::*;
use crate::gitea::{GiteaConfig, GiteaRule};
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use testarena_store::{NewCase, Store, StoreOptions};
use tokio::sync::Notify;
use tower::ServiceExt;

const SECRET: &str = "s3cret";

struct TestApp {
    router: Router,
    state: AppState,
    dir: tempfile::TempDir,
    url: String,
}

mod gitea;
mod live;
mod page;
mod paths;
mod repro;

async fn app_with(options: StoreOptions) -> TestApp {
    app_configured(options, |_| {}).await
}

/// An app whose configuration `adjust` changed.
async fn app_configured(options: StoreOptions, adjust: impl FnOnce(&mut ServerConfig)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let store = Store::open_with(&url, &options).await.unwrap();
    let mut config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        allowed_roots: vec![],
        allowed_hosts: vec![],
        gitea: Some(GiteaConfig {
            secret: Some(SECRET.into()),
            rules: vec![GiteaRule {
                repo: "acme/fw".into(),
                branches: vec![],
                set: None,
                priority: None,
                clone_url: None,
            }],
            ..GiteaConfig::default()
        }),
        limits: Limits::default(),
        auth: AuthConfig::default(),
    };
    adjust(&mut config);
    let state = AppState::new(store, config, Arc::new(Notify::new()));
    TestApp {
        router: router(state.clone()),
        state,
        dir,
        url,
    }
}

async fn app() -> TestApp {
    app_with(StoreOptions::default()).await
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} answered non-JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the error shape and returns the code.
    fn error_code(&self) -> String {
        assert_eq!(
            self.headers
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap()),
            Some("application/json"),
            "{} {:?}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        let code = v["error"]["code"].as_str().expect("error.code").to_string();
        let message = v["error"]["message"].as_str().expect("error.message");
        assert!(!message.is_empty() && !code.is_empty(), "{v}");
        assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
        code
    }
}

impl TestApp {
    async fn call(&self, req: Request<Body>) -> Answer {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn send(&self, method: Method, uri: &str, ctype: Option<&str>, body: Vec<u8>) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(c) = ctype {
            req = req.header(header::CONTENT_TYPE, c);
        }
        self.call(req.body(Body::from(body)).unwrap()).await
    }

    async fn post_json(&self, uri: &str, body: Value) -> Answer {
        self.send(
            Method::POST,
            uri,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await
    }

    async fn new_queue(&self, scenarios: &[&str]) -> i64 {
        let a = self
            .post_json(
                "/api/v1/queues",
                json!({"repo": "https://example.com/fw.git", "branch": "main", "scenarios": scenarios}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED);
        a.json()["id"].as_i64().unwrap()
    }

    async fn hook(&self, body: &str, delivery: Option<&str>) -> Answer {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let sig = hex::encode(mac.finalize().into_bytes());
        let mut req = Request::post("/api/v1/hooks/gitea")
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-gitea-event", "push")
            .header("x-gitea-signature", sig);
        if let Some(d) = delivery {
            req = req.header("x-gitea-delivery", d);
        }
        self.call(req.body(Body::from(body.to_string())).unwrap())
            .await
    }
}

#[tokio::test]
async fn every_error_answer_of_the_router_is_json() {
    let app = app().await;
    let id = app.new_queue(&["a.xml"]).await;
    let cases: Vec<(&str, Answer, StatusCode, &str)> = vec![
        (
            "unknown path",
            app.get("/nope").await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "unknown api path",
            app.get("/api/v1/nope").await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "unknown asset",
            app.get("/assets/nope.js").await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "wrong method, nested route",
            app.send(Method::POST, "/api/v1/health", None, vec![]).await,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "wrong method, top route",
            app.send(Method::DELETE, "/metrics", None, vec![]).await,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "wrong method on a queue",
            app.send(Method::PUT, &format!("/api/v1/queues/{id}"), None, vec![])
                .await,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "path not UTF-8",
            app.get("/api/v1/queues/%FF").await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "case path not UTF-8",
            app.get(&format!("/api/v1/queues/{id}/cases/%C3%28/log"))
                .await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "asset path not UTF-8",
            app.get("/assets/%FF").await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "bad query",
            app.get(&format!("/api/v1/queues/{id}/log?offset=x")).await,
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
    ];
    for (what, answer, status, code) in cases {
        assert_eq!(answer.status, status, "{what}");
        assert_eq!(answer.error_code(), code, "{what}");
    }
    let a = app.send(Method::POST, "/api/v1/health", None, vec![]).await;
    assert!(a.headers.contains_key(header::ALLOW), "Allow kept");
}

#[tokio::test]
async fn every_oversized_request_is_answered_in_json() {
    let app = app().await;
    let id = app.new_queue(&["a.xml"]).await;
    let big = vec![b' '; BODY_LIMIT + 10];
    let cases: Vec<(&str, Answer, StatusCode, &str)> = vec![
        (
            "rerun body too large",
            app.send(
                Method::POST,
                &format!("/api/v1/queues/{id}/rerun"),
                Some("application/json"),
                big.clone(),
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "hook body too large",
            app.send(
                Method::POST,
                "/api/v1/hooks/gitea",
                Some("application/json"),
                big.clone(),
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "queue body too large",
            app.send(
                Method::POST,
                "/api/v1/queues",
                Some("application/json"),
                big.clone(),
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "uri too long",
            app.get(&format!("/api/v1/queues?status={}", "x".repeat(9000)))
                .await,
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
        ),
    ];
    for (what, answer, status, code) in cases {
        assert_eq!(answer.status, status, "{what}");
        assert_eq!(answer.error_code(), code, "{what}");
    }
}

#[tokio::test]
async fn a_slow_body_is_408() {
    let mut app = app().await;
    let mut config = (*app.state.config).clone();
    config.limits.body_timeout = Duration::from_millis(200);
    app.state = AppState::new(app.state.store.clone(), config, app.state.new_work.clone());
    // The listener applies the body deadline: serve for real on a loopback port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(serve_on(app.state.clone(), listener, {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    }));
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /api/v1/queues HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"repo\"")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    stop.cancel();
    server.await.unwrap().unwrap();
    drop(app.dir);
}

#[tokio::test]
async fn huge_log_offsets_are_400_not_500() {
    let app = app().await;
    let id = app.new_queue(&["a.xml"]).await;
    let holder = app
        .state
        .store
        .claim("w", 60_000)
        .await
        .unwrap()
        .unwrap()
        .holder()
        .unwrap();
    put_log(&app.state.store, id, &holder, 0, "one\ntwo\n").await;
    for offset in [
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
    ] {
        let a = app
            .get(&format!("/api/v1/queues/{id}/log?offset={offset}"))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{offset}");
        assert_eq!(a.error_code(), "bad_query", "{offset}");
        let a = app
            .get(&format!("/api/v1/queues/{id}/log/stream?offset={offset}"))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "stream {offset}");
    }
    // Past the end, but a possible offset: nothing yet.
    for offset in ["8", "9", "4611686018427387904", "9223372036854775807"] {
        let a = app
            .get(&format!("/api/v1/queues/{id}/log?offset={offset}"))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{offset}");
        assert!(a.body.is_empty());
        assert_eq!(a.headers["x-next-offset"], offset);
    }
    let a = app.get(&format!("/api/v1/queues/{id}/log?offset=4")).await;
    assert_eq!(a.body, b"two\n");
    assert_eq!(a.headers["x-next-offset"], "8");
}

#[tokio::test]
async fn a_locked_database_is_503_database_busy_with_retry_after() {
    let app = app_with(StoreOptions {
        busy_timeout: Duration::from_millis(50),
        ..StoreOptions::default()
    })
    .await;
    use sqlx::Connection;
    let mut locker = sqlx::SqliteConnection::connect(&app.url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut locker)
        .await
        .unwrap();
    let a = app
        .post_json(
            "/api/v1/queues",
            json!({"repo": "https://example.com/fw.git", "branch": "main"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.headers[header::RETRY_AFTER], "1");
    assert_eq!(a.error_code(), "database_busy");
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    let a = app
        .post_json(
            "/api/v1/queues",
            json!({"repo": "https://example.com/fw.git", "branch": "main"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
}

#[tokio::test]
async fn a_replayed_gitea_delivery_makes_no_second_queue() {
    let app = app().await;
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let body = json!({"ref": "refs/heads/main", "after": sha,
        "repository": {"full_name": "acme/fw", "clone_url": "https://git.example.com/acme/fw.git"}})
    .to_string();
    let first = app.hook(&body, Some("4f3b-delivery-1")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let q = first.json();
    for _ in 0..3 {
        let again = app.hook(&body, Some("4f3b-delivery-1")).await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.json(), q);
        assert_eq!(
            again.headers[header::LOCATION],
            first.headers[header::LOCATION]
        );
    }
    let list = app.get("/api/v1/queues").await.json();
    assert_eq!(list["queues"].as_array().unwrap().len(), 1);
    // Another delivery of the same push is another queue; so is one without an id.
    assert_eq!(
        app.hook(&body, Some("4f3b-delivery-2")).await.status,
        StatusCode::CREATED
    );
    assert_eq!(app.hook(&body, None).await.status, StatusCode::CREATED);
    let list = app.get("/api/v1/queues").await.json();
    assert_eq!(list["queues"].as_array().unwrap().len(), 3);
    let bad = app.hook(&body, Some(&"x".repeat(200))).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_code(), "invalid_input");
}

/// A queue with one task of `n` cases, made through the worker's side of the store.
async fn queue_with_cases(app: &TestApp, n: usize) -> (i64, i64) {
    let id = app.new_queue(&["big.xml", "small.xml"]).await;
    let store = &app.state.store;
    store.claim("w", 60_000).await.unwrap().unwrap();
    let detail = store.queue(id).await.unwrap();
    let (big, small) = (detail.tasks[0].0.id, detail.tasks[1].0.id);
    let cases: Vec<NewCase> = (0..n)
        .map(|i| NewCase {
            key: format!("TC_{i:06}"),
            name: format!("case number {i} of a very long scenario"),
        })
        .collect();
    store
        .create_cases(big, &testarena_store::Holder::new("w", 1), &cases)
        .await
        .unwrap();
    let few = [NewCase {
        key: "TC_ONE".into(),
        name: "one".into(),
    }];
    store
        .create_cases(small, &testarena_store::Holder::new("w", 1), &few)
        .await
        .unwrap();
    (id, big)
}

#[tokio::test]
async fn a_queue_of_100000_cases_answers_in_pages() {
    let app = app().await;
    let (id, task) = queue_with_cases(&app, 100_000).await;
    let a = app.get(&format!("/api/v1/queues/{id}")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.len() < 1_000_000, "{} bytes", a.body.len());
    let q = a.json();
    assert_eq!(q["summary"]["total"], 100_001);
    let big = &q["tasks"][0];
    assert_eq!(big["cases"].as_array().unwrap().len(), 500);
    assert_eq!(big["cases_total"], 100_000);
    let next = big["cases_next"].as_str().unwrap().to_string();
    assert_eq!(
        next,
        format!("/api/v1/queues/{id}/tasks/{task}/cases?after=499")
    );
    // The small task is complete.
    assert_eq!(q["tasks"][1]["cases"].as_array().unwrap().len(), 1);
    assert_eq!(q["tasks"][1]["cases_next"], Value::Null);
    // Follow the pages to the end.
    let mut url = format!("{next}&limit=1000");
    let mut seen = 500;
    let mut pages = 0;
    loop {
        let page = app.get(&url).await;
        assert_eq!(page.status, StatusCode::OK, "{url}");
        assert!(page.body.len() < 400_000);
        let p = page.json();
        assert_eq!(p["total"], 100_000);
        let cases = p["cases"].as_array().unwrap();
        assert_eq!(cases[0]["id"], format!("TC_{seen:06}"));
        seen += cases.len();
        pages += 1;
        match p["next"].as_i64() {
            Some(after) => {
                url = format!("/api/v1/queues/{id}/tasks/{task}/cases?after={after}&limit=1000")
            }
            None => break,
        }
    }
    assert_eq!((seen, pages), (100_000, 100));
    // The list is bounded per queue too.
    let list = app.get("/api/v1/queues?limit=500").await;
    assert!(list.body.len() < 100_000, "{} bytes", list.body.len());
    let l = list.json();
    assert_eq!(
        l["queues"][0]["tasks"][0]["cases"]
            .as_array()
            .unwrap()
            .len(),
        50
    );
    assert_eq!(l["queues"][0]["summary"]["total"], 100_001);
    for bad in ["after=-1", "after=x", "limit=0", "limit=1001"] {
        let a = app
            .get(&format!("/api/v1/queues/{id}/tasks/{task}/cases?{bad}"))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(a.error_code(), "bad_query");
    }
    for missing in [
        format!("/api/v1/queues/{id}/tasks/999999/cases"),
        format!("/api/v1/queues/{id}/tasks/abc/cases"),
        format!("/api/v1/queues/999999/tasks/{task}/cases"),
    ] {
        let a = app.get(&missing).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(a.error_code(), "not_found");
    }
    // A case's log is still found by its id, past the cap.
    let a = app
        .get(&format!("/api/v1/queues/{id}/cases/TC_099999/log"))
        .await;
    assert_eq!(a.status, StatusCode::OK);
}

/// Appends `text` at `start` of queue `id`'s log, as the worker holding it would.
pub(crate) async fn put_log(
    store: &testarena_store::Store,
    id: i64,
    holder: &testarena_store::Holder,
    start: i64,
    text: &str,
) {
    let chunk = testarena_store::Chunk {
        name: "queue.log".into(),
        start,
        data: text.as_bytes().to_vec(),
    };
    store.put_chunks(id, holder, &[chunk]).await.unwrap();
}
