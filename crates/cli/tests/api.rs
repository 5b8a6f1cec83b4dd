//! The REST API, through the real binary on a random port with a fresh SQLite file. Requests a
//! user's program would make go through the typed client (`testarena-client`); malformed
//! bodies, wrong methods, answer headers and live streams go as raw HTTP.

mod common;

use common::{assert_refused, App};
use reqwest::StatusCode;
use serde_json::{json, Value};
use testarena_client::{NewQueue, Queue, QueueListQuery, QueueStatus, Rerun, Summary, WorkerList};

fn serve(dir: &tempfile::TempDir) -> App {
    App::start("serve", dir.path(), &["--allow-local-repos", "/srv/git"])
}

async fn post(app: &App, body: Value) -> (StatusCode, Value) {
    app.post_queue(&body).await
}

async fn get(app: &App, path: &str) -> (StatusCode, Value) {
    app.get_json(path).await
}

async fn count(app: &App) -> usize {
    let all = QueueListQuery::default().with_limit(500);
    app.api.queues(&all).await.unwrap().queues.len()
}

fn good() -> NewQueue {
    NewQueue::new("https://example.com/fw.git", "main")
}

fn assert_error(body: &Value, code: &str, mentions: &str) {
    assert!(!mentions.is_empty(), "say what the message must mention");
    assert_eq!(body["error"]["code"], code, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(mentions),
        "message {msg:?} should mention {mentions:?}"
    );
}

#[tokio::test]
async fn health_answers() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let (s, _) = get(&app, "/api/v1/health").await;
    assert_eq!(s, StatusCode::OK);
    let health = app.api.health().await.unwrap();
    assert_eq!(health.status, "ok");
    assert_eq!(health.database, "ok");
    assert_eq!(health.version, env!("CARGO_PKG_VERSION"));
    let page = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("TestArena"));
}

#[tokio::test]
async fn create_then_get_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let new = NewQueue {
        scenarios: Some(vec!["scenarios/a.xml".into(), "b.xml".into()]),
        name: Some("nightly".into()),
        priority: Some(7),
        commit: Some("0123456789ABCDEF0123456789abcdef01234567".into()),
        ..NewQueue::new("https://example.com/fw.git", "feature/x")
    };
    let created = app.api.create_queue_answer(&new).await.unwrap();
    assert_eq!(created.status, StatusCode::CREATED.as_u16());
    let q = created.value;
    let id = q.id;
    let location = created.location.expect("a Location header");
    assert_eq!(location, format!("/api/v1/queues/{id}"));
    assert_eq!(q.status, QueueStatus::Waiting);
    assert_eq!(q.phase, None);
    assert_eq!(
        q.commit, None,
        "commit stays null until the worker resolves it"
    );
    assert_eq!(q.priority, 7);
    assert_eq!(q.name, "nightly");
    assert_eq!(q.summary, Summary::default());
    assert_eq!(q.tasks.len(), 2);
    assert_eq!(q.tasks[0].scenario, "scenarios/a.xml");
    assert_eq!(q.tasks[0].status, testarena_client::CaseStatus::Pending);
    assert!(q.created_at.ends_with('Z'));
    assert_eq!(q.started_at, None);

    let fetched: Queue = app.api.fetch_json(&location, "a queue").await.unwrap();
    assert_eq!(fetched, q);

    // Defaults: priority 5, name = branch.
    let d = app.api.create_queue_answer(&good()).await.unwrap();
    assert_eq!(d.status, StatusCode::CREATED.as_u16());
    let d = d.value;
    assert_eq!((d.priority, d.name.as_str()), (5, "main"));
    assert_eq!(d.tasks, vec![]);

    let list = app
        .api
        .queues_answer(&QueueListQuery::default())
        .await
        .unwrap();
    assert_eq!(list.status, StatusCode::OK.as_u16());
    let ids: Vec<i64> = list.value.queues.iter().map(|q| q.id).collect();
    assert_eq!(ids, vec![d.id, id], "newest first");
    assert_eq!(list.value.next, None);
}

#[tokio::test]
async fn list_paginates_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    for _ in 0..7 {
        app.submit(&good()).await;
    }
    let page = |before: Option<i64>| {
        let mut query = QueueListQuery::default().with_limit(3);
        if let Some(b) = before {
            query = query.with_before(b);
        }
        let api = app.api.clone();
        async move { api.queues(&query).await.unwrap() }
    };
    let p1 = page(None).await;
    assert_eq!(p1.queues.len(), 3);
    let p2 = page(Some(p1.next.unwrap())).await;
    let p3 = page(Some(p2.next.unwrap())).await;
    assert_eq!(p3.queues.len(), 1);
    assert_eq!(p3.next, None);
    let first = p1.queues[0].id;
    assert_eq!(
        app.api.abort_answer(first).await.unwrap().status,
        StatusCode::OK.as_u16()
    );
    let with_status = |status| QueueListQuery::default().with_status(status);
    let aborted = app.api.queues(&with_status(QueueStatus::Aborted)).await;
    assert_eq!(aborted.unwrap().queues.len(), 1);
    let waiting = with_status(QueueStatus::Waiting).with_limit(500);
    assert_eq!(app.api.queues(&waiting).await.unwrap().queues.len(), 6);
    for (status, limit, before) in [
        (Some("bogus"), None, None),
        (None, Some("0"), None),
        (None, Some("501"), None),
        (None, Some("x"), None),
        (None, None, Some("abc")),
        (None, None, Some("-1")),
    ] {
        let bad = QueueListQuery {
            status: status.map(String::from),
            limit: limit.map(String::from),
            before: before.map(String::from),
            ..Default::default()
        };
        let field = match (status, limit) {
            (Some(_), _) => "status:",
            (None, Some(_)) => "limit:",
            (None, None) => "before:",
        };
        assert_refused(&app.api.queues(&bad).await, 400, "bad_query", field);
    }
}

/// Each class of bad input: the status, the field named in the message, and nothing stored.
#[tokio::test]
async fn bad_input_is_refused_by_class() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    // Bodies that are not a queue request at all: only raw JSON can say them.
    let with = |k: &str, v: Value| {
        let mut b = serde_json::to_value(good()).unwrap();
        b[k] = v;
        b
    };
    let shapeless: Vec<(&str, Value, &str)> = vec![
        ("missing repo", json!({"branch": "main"}), "repo"),
        (
            "missing branch",
            json!({"repo": "https://h/r.git"}),
            "branch",
        ),
        ("wrong type", with("priority", json!("high")), "priority"),
        (
            "wrong type scenarios",
            with("scenarios", json!("a.xml")),
            "scenarios",
        ),
        ("unknown field", with("colour", json!("red")), "colour"),
    ];
    for (what, body, field) in shapeless {
        let (s, err) = post(&app, body).await;
        assert!(
            s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::BAD_REQUEST,
            "{what}: {s}"
        );
        assert!(
            err["error"]["message"].as_str().unwrap().contains(field),
            "{what}: {err}"
        );
        assert!(!err["error"]["code"].as_str().unwrap().is_empty());
    }
    // Well-formed requests that break a rule.
    let scenarios = |list: &[&str]| NewQueue {
        scenarios: Some(list.iter().map(|s| s.to_string()).collect()),
        ..good()
    };
    let branch = |b: &str| NewQueue {
        branch: b.into(),
        ..good()
    };
    let repo = |r: &str| NewQueue {
        repo: r.into(),
        ..good()
    };
    let commit = |c: &str| NewQueue {
        commit: Some(c.into()),
        ..good()
    };
    let priority = |p: i64| NewQueue {
        priority: Some(p),
        ..good()
    };
    let retries = |n: i64| NewQueue {
        retries: Some(n),
        ..good()
    };
    let cases: Vec<(&str, NewQueue, &str)> = vec![
        ("empty scenarios", scenarios(&[]), "scenarios"),
        (
            "absolute scenario",
            scenarios(&["/etc/x.xml"]),
            "scenarios[0]",
        ),
        (
            "dotdot scenario",
            scenarios(&["ok.xml", "../../x.xml"]),
            "scenarios[1]",
        ),
        ("nul scenario", scenarios(&["a\u{0}.xml"]), "scenarios[0]"),
        ("not xml", scenarios(&["a.txt"]), "scenarios[0]"),
        ("branch dotdot", branch("a..b"), "branch"),
        ("branch dash", branch("-rf"), "branch"),
        ("branch space", branch("my branch"), "branch"),
        ("branch special", branch("a~1"), "branch"),
        ("branch reflog", branch("a@{1}"), "branch"),
        ("branch colon", branch("a:b"), "branch"),
        ("repo ftp", repo("ftp://h/r"), "repo"),
        ("repo relative", repo("some/dir"), "repo"),
        ("repo local outside roots", repo("/etc"), "repo"),
        ("repo file url outside", repo("file:///tmp/r"), "repo"),
        ("repo escape root", repo("/srv/git/../../etc"), "repo"),
        ("commit short", commit("abc123"), "commit"),
        ("commit not hex", commit(&"z".repeat(40)), "commit"),
        ("priority high", priority(10), "priority"),
        ("priority negative", priority(-1), "priority"),
        ("retries high", retries(6), "retries"),
        ("retries negative", retries(-1), "retries"),
        (
            "name long",
            NewQueue {
                name: Some("n".repeat(201)),
                ..good()
            },
            "name",
        ),
    ];
    for (what, new, field) in cases {
        let e = app.api.create_queue(&new).await.unwrap_err();
        assert!(matches!(e.status(), Some(422 | 400)), "{what}: {e}");
        assert!(
            e.api_message().unwrap_or_default().contains(field),
            "{what}: {e}"
        );
        assert!(!e.code().unwrap_or_default().is_empty());
    }
    assert_eq!(count(&app).await, 0, "nothing stored");
    // Retries (issue 16): over 5 is refused, saying what the field is for.
    assert_refused(
        &app.api.create_queue(&retries(6)).await,
        422,
        "invalid_input",
        "retries: must be between 0 and 5 (how many times a failed case is tried again), got 6",
    );
    let (s, err) = post(&app, with("retries", json!("2"))).await;
    assert!(s.is_client_error(), "{s}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retries"),
        "{err}"
    );
    assert_eq!(count(&app).await, 0, "nothing stored");
    assert_eq!(app.submit(&retries(5)).await.retries, 5);
    assert_eq!(app.submit(&good()).await.retries, 0);

    // Accepted: a local path under the allowed root.
    let q = app.submit(&repo("file:///srv/git/fw")).await;
    assert_eq!(q.repo, "/srv/git/fw");
}

#[tokio::test]
async fn malformed_body_type_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let url = app.url("/api/v1/queues");
    let good = serde_json::to_value(good()).unwrap();
    let r = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"repo\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_error(&r.json().await.unwrap(), "malformed_json", "JSON");
    let r = app
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_error(
        &r.json().await.unwrap(),
        "unsupported_media_type",
        "Content-Type: application/json",
    );
    let r = app
        .http
        .post(&url)
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "no content type"
    );
    let r = app
        .http
        .post(&url)
        .json(&json!([1, 2]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Last: the server may close the connection without reading the whole oversized body.
    let huge = NewQueue {
        name: Some("x".repeat(2 * 1024 * 1024)),
        ..NewQueue::new("https://h/r.git", "main")
    };
    let fresh = testarena_client::Client::new(&app.base).unwrap();
    assert_refused(
        &fresh.create_queue(&huge).await,
        413,
        "payload_too_large",
        "larger",
    );
    assert_eq!(count(&app).await, 0);
}

#[tokio::test]
async fn ids_routes_and_methods() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    for bad in [
        "abc",
        "0",
        "-1",
        "1%3Bdrop",
        "99999999999999999999999",
        "12345",
    ] {
        let (s, body) = get(&app, &format!("/api/v1/queues/{bad}")).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{bad}");
        assert_eq!(body["error"]["code"], "not_found");
        let r = app
            .http
            .post(app.url(&format!("/api/v1/queues/{bad}/abort")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = app
            .http
            .delete(app.url(&format!("/api/v1/queues/{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let (s, body) = get(&app, "/api/v1/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let r = app
        .http
        .put(app.url("/api/v1/queues"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&r.json().await.unwrap(), "method_not_allowed", "method");
}

#[tokio::test]
async fn abort_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let id = app.submit(&good()).await.id;
    let aborted = app.api.abort_answer(id).await.unwrap();
    assert_eq!(aborted.status, StatusCode::OK.as_u16());
    assert_eq!(aborted.value.status, QueueStatus::Aborted);
    assert!(aborted.value.finished_at.is_some());
    assert_refused(&app.api.abort(id).await, 409, "conflict", "finished");

    // Raw, for its status: the typed call only says it succeeded.
    let r = app
        .http
        .delete(app.url(&format!("/api/v1/queues/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(app.api.queue(id).await.unwrap_err().is_not_found());
    assert_refused(&app.api.delete(id).await, 404, "not_found", "not found");
}

#[tokio::test]
async fn queues_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let q = app.submit(&good()).await;
    assert!(app.stop().success(), "SIGTERM is a clean shutdown");
    let app = serve(&dir);
    let again = app.api.queue_answer(q.id).await.unwrap();
    assert_eq!(again.status, StatusCode::OK.as_u16());
    assert_eq!(again.value, q);
}

#[tokio::test]
async fn concurrent_posts_get_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let mut handles = Vec::new();
    for i in 0..200 {
        let api = app.api.clone();
        handles.push(tokio::spawn(async move {
            let new = NewQueue::new("https://h/r.git", format!("b{i}"));
            let created = api.create_queue_answer(&new).await.unwrap();
            assert_eq!(created.status, StatusCode::CREATED.as_u16());
            created.value.id
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    assert_eq!(count(&app).await, 200);
}

#[tokio::test]
async fn config_file_env_and_flag_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let file_data = dir.path().join("from-file");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\nallow_local_repos = [\"/opt/repos\"]\n",
            file_data.display()
        ),
    )
    .unwrap();
    // The file's data_dir is overridden by the flag App::start passes; its allow_local_repos applies.
    let app = App::start("serve", dir.path(), &["--config", cfg.to_str().unwrap()]);
    app.submit(&NewQueue::new("/opt/repos/fw", "main")).await;
    assert!(dir.path().join("testarena.db").exists(), "flag beats file");
    assert!(!file_data.exists());
    drop(app);
    std::fs::write(&cfg, "bogus_key = 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_testarena"))
        .args(["migrate", "--config", cfg.to_str().unwrap(), "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus_key"));
}

/// Reads an SSE response until `want` shows up in it (or panics after 10 s).
async fn read_sse_until(resp: &mut reqwest::Response, seen: &mut String, want: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.contains(want) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {want:?} in SSE stream: {seen}"
        );
        match tokio::time::timeout(std::time::Duration::from_secs(10), resp.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("SSE stream ended: {other:?}; seen {seen}"),
        }
    }
}

#[tokio::test]
async fn events_stream_queue_changes() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let mut events = app
        .http
        .get(app.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert!(events.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let id = app.submit(&good()).await.id;
    let mut seen = String::new();
    read_sse_until(&mut events, &mut seen, &format!("\"id\":{id},")).await;
    assert!(seen.contains("event: queue"), "{seen}");
    app.api.abort(id).await.unwrap();
    read_sse_until(&mut events, &mut seen, "\"status\":\"aborted\"").await;
    app.api.delete(id).await.unwrap();
    read_sse_until(
        &mut events,
        &mut seen,
        &format!("event: deleted\ndata: {{\"id\":{id}}}"),
    )
    .await;
}

#[tokio::test]
async fn rerun_workers_and_missing_reports() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let q = app
        .submit(&NewQueue {
            scenarios: Some(vec!["a.xml".into()]),
            priority: Some(8),
            ..NewQueue::new("https://h/r.git", "dev")
        })
        .await;
    let id = q.id;
    // Raw: the body is optional, and a re-run without one is what this checks.
    let r = app
        .http
        .post(app.url(&format!("/api/v1/queues/{id}/rerun")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let again: Queue = r.json().await.unwrap();
    assert_ne!(again.id, q.id);
    assert_eq!(
        (
            &again.repo,
            &again.branch,
            &again.scenarios,
            again.priority,
            &again.name
        ),
        (&q.repo, &q.branch, &q.scenarios, q.priority, &q.name)
    );
    let only_failed = Rerun { only_failed: true };
    let nothing_failed = app.api.rerun(id, &only_failed).await;
    assert_eq!(
        nothing_failed.unwrap_err().status(),
        Some(409),
        "nothing failed yet"
    );
    let r = app
        .http
        .post(app.url(&format!("/api/v1/queues/{id}/rerun")))
        .json(&json!({"bogus": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let missing = app.api.rerun(999, &Rerun::default()).await;
    assert_eq!(missing.unwrap_err().status(), Some(404));

    let w = app.api.workers().await.unwrap();
    assert_eq!(
        w,
        WorkerList { workers: vec![] },
        "serve alone runs no worker"
    );

    assert_refused(&app.api.junit(id).await, 404, "not_found", "junit.xml");
    assert_refused(
        &app.api.case_log(id, "TC_X", None).await,
        404,
        "not_found",
        "TC_X",
    );
    let (s, body) = get(&app, "/api/v1/queues/abc/junit.xml").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    // Raw, for the answers' headers.
    let r = app
        .http
        .get(app.url(&format!("/api/v1/queues/{id}/log")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-next-offset"], "0");
    let r = app
        .http
        .get(app.url(&format!("/api/v1/queues/{id}/archive")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/gzip");
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let q = app.submit(&good()).await;
    app.api.queue(q.id).await.unwrap();
    let text = app.api.metrics().await.unwrap();
    for name in [
        "testarena_queues{status=\"waiting\"} 1",
        "testarena_workers ",
        "testarena_worker_heartbeat_age_seconds",
        "testarena_queue_wait_seconds_bucket",
        "testarena_queue_run_seconds_bucket",
        "testarena_case_results",
        "testarena_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/queues/{id}\",status=\"200\"} 1",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    let path = dir.path().join("metrics.txt");
    std::fs::write(&path, &text).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .expect("promtool (Debian package prometheus) must be installed: make test installs it");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every routed API path, as the router in crates/server/src/lib.rs declares them.
const ROUTED_PATHS: &[&str] = &[
    "/api/v1/bisects",
    "/api/v1/bisects/{id}",
    "/api/v1/bisects/{id}/abort",
    "/api/v1/events",
    "/api/v1/health",
    "/api/v1/history",
    "/api/v1/hooks/gitea",
    "/api/v1/queues",
    "/api/v1/queues/{id}",
    "/api/v1/queues/{id}/abort",
    "/api/v1/queues/{id}/archive",
    "/api/v1/queues/{id}/cases/{case}/log",
    "/api/v1/queues/{id}/cases/{case}/log.html",
    "/api/v1/queues/{id}/cases/{case}/repro",
    "/api/v1/queues/{id}/compare/previous",
    "/api/v1/queues/{id}/compare/{other}",
    "/api/v1/queues/{id}/history",
    "/api/v1/queues/{id}/junit.xml",
    "/api/v1/queues/{id}/log",
    "/api/v1/queues/{id}/log/stream",
    "/api/v1/queues/{id}/rerun",
    "/api/v1/queues/{id}/tasks/{task}/cases",
    "/api/v1/session",
    "/api/v1/workers",
    "/metrics",
];

#[tokio::test]
async fn openapi_spec_validates_and_lists_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let spec = app.api.openapi().await.unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    let mut paths: Vec<&str> = spec["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort();
    assert_eq!(paths, ROUTED_PATHS);
    // Every routed path answers something other than the router's 404 fallback.
    for p in ROUTED_PATHS {
        let url = app.url(
            &p.replace("{id}", "1")
                .replace("{case}", "TC")
                .replace("{task}", "1")
                .replace("{other}", "1"),
        );
        let r = app.http.get(&url).send().await.unwrap();
        if *p == "/api/v1/events" {
            // A live stream never ends: its status is enough.
            assert_eq!(r.status(), StatusCode::OK);
            continue;
        }
        let body = r.text().await.unwrap_or_default();
        assert!(
            !body.contains("no such endpoint"),
            "{p} is documented but not routed"
        );
    }
    // Every operation documents its error body where it has errors, including the answers
    // of the layers before the handlers (400, 414, 431) and of transient trouble (503).
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for code in ["400", "414", "431", "500", "503"] {
                assert!(
                    op["responses"][code].is_object(),
                    "{method} {path} does not list {code}"
                );
            }
            for (code, resp) in op["responses"].as_object().unwrap() {
                if code.starts_with('4') || (code.starts_with('5') && path != "/api/v1/health") {
                    let schema = &resp["content"]["application/json"]["schema"]["$ref"];
                    assert!(
                        schema.is_string(),
                        "{method} {path} {code} has no error body"
                    );
                }
            }
        }
    }
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("openapi-spec-validator (PyPI) must be installed: make test installs it");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let page = app
        .http
        .get(app.url("/api/docs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/api/docs/swagger-ui-bundle.js") && page.contains("/api/openapi.json"));
    for asset in ["/api/docs/swagger-ui-bundle.js", "/api/docs/swagger-ui.css"] {
        let r = app.http.get(app.url(asset)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
        assert!(
            r.bytes().await.unwrap().len() > 10_000,
            "{asset} is the real viewer"
        );
    }
}

#[tokio::test]
async fn symlinks_out_of_an_allowed_root_and_bad_case_queries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    std::fs::create_dir_all(root.join("fw")).unwrap();
    let app = App::start(
        "serve",
        &dir.path().join("data"),
        &["--allow-local-repos", root.to_str().unwrap()],
    );
    let local = |dir: &str| NewQueue::new(root.join(dir).to_str().unwrap(), "main");
    let escape = app.api.create_queue(&local("escape")).await;
    assert_refused(&escape, 422, "invalid_input", "not under an allowed root");
    let q = app.submit(&local("fw")).await;
    // Raw: a task that is not a number.
    let (s, body) = get(
        &app,
        &format!("/api/v1/queues/{}/cases/TC/log?task=abc", q.id),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "bad_query");
    // Credentials in a clone URL are never shown.
    let q = app
        .submit(&NewQueue::new(
            "https://bot:hunter2@git.example.com/fw.git",
            "main",
        ))
        .await;
    assert_eq!(q.repo, "https://***@git.example.com/fw.git");
    let bogus = QueueListQuery {
        status: Some("bogus".into()),
        ..Default::default()
    };
    let status_err = app.api.queues(&bogus).await.unwrap_err();
    assert!(status_err
        .api_message()
        .unwrap_or_default()
        .contains("unknown queue status 'bogus'"));
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_testarena"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("TESTARENA_CONFIG", "/dev/null")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("listening"))
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["fields"]["message"], "listening");
}

/// Sends raw bytes to the server and reads its whole answer (it closes the connection).
async fn raw_exchange(app: &App, request: &[u8]) -> (u16, String, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer before it read everything: a failed write is fine.
    let _ = tcp.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut answer),
    )
    .await
    .expect("the server answers and closes the connection");
    let text = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer head in {text:?}"));
    let status = head[9..12].parse().unwrap();
    let body: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: not JSON: {text:?}"));
    (status, head.to_ascii_lowercase(), body)
}

/// Errors of the HTTP layer, before any route: unparsable requests, heads too large.
#[tokio::test]
async fn errors_before_routing_are_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let long_target = format!(
        "GET /api/v1/queues?status={} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "x".repeat(10_000)
    );
    // Exactly 64 KiB of head that never ends: the server reads all of it, then refuses.
    let mut huge_head = b"GET /api/v1/health HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    huge_head.resize(64 * 1024, b'a');
    let mut many_headers = String::from("GET /api/v1/health HTTP/1.1\r\nhost: x\r\n");
    for i in 0..120 {
        many_headers.push_str(&format!("x-h{i}: {i}\r\n"));
    }
    many_headers.push_str("\r\n");
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        (
            "garbage request line",
            b"\x01\x02 what\r\n\r\n".to_vec(),
            400,
            "bad_request",
            "not valid HTTP",
        ),
        (
            "space in the target",
            b"GET /a b HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
            400,
            "bad_request",
            "not valid HTTP",
        ),
        (
            "bad header",
            b"GET / HTTP/1.1\r\nhost x\r\n\r\n".to_vec(),
            400,
            "bad_request",
            "not valid HTTP",
        ),
        (
            "target over 8 KiB",
            long_target.into_bytes(),
            414,
            "uri_too_long",
            "8192",
        ),
        (
            "head over 64 KiB",
            huge_head,
            431,
            "headers_too_large",
            "64 KiB",
        ),
        (
            "more than 100 headers",
            many_headers.into_bytes(),
            431,
            "headers_too_large",
            "100 headers",
        ),
        (
            "path not UTF-8",
            b"GET /api/v1/queues/%FF HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
            400,
            "bad_request",
            "Invalid UTF-8",
        ),
        (
            "unknown path",
            b"GET /nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
            404,
            "not_found",
            "no such endpoint",
        ),
        (
            "wrong method",
            b"POST /api/v1/health HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .to_vec(),
            405,
            "method_not_allowed",
            "method not allowed",
        ),
    ];
    for (what, request, status, code, mentions) in cases {
        let (got, head, body) = raw_exchange(&app, &request).await;
        assert_eq!(got, status, "{what}: {body}");
        assert!(
            head.contains("content-type: application/json"),
            "{what}: {head}"
        );
        assert_error(&body, code, mentions);
    }
    // The server is still fine.
    assert_eq!(get(&app, "/api/v1/health").await.0, StatusCode::OK);
}

#[tokio::test]
async fn huge_log_offsets_are_refused_not_a_500() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let id = app.submit(&good()).await.id;
    let too_far = app.api.queue_log(id, 1 << 63).await;
    assert_refused(&too_far, 400, "bad_query", "offset");
    // Raw, for the header itself (the typed chunk would fall back to the offset asked for).
    let r = app
        .http
        .get(app.url(&format!(
            "/api/v1/queues/{id}/log?offset=9223372036854775807"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-next-offset"], "9223372036854775807");
}

/// Raises this process's soft open-file limit to its hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// Whether the server closed this connection (without blocking to find out).
fn closed_by_peer(c: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match c.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// This process's hard open-file limit (the server started by the test inherits it).
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
fn hard_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_max as u64
}

/// Opens up to `n` TCP connections to `addr` that send nothing, 500 at a time.
async fn open_idle(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let mut open = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let batch = left.min(500);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..batch {
            set.spawn(tokio::time::timeout(
                std::time::Duration::from_secs(10),
                tokio::net::TcpStream::connect(addr),
            ));
        }
        while let Some(r) = set.join_next().await {
            if let Ok(Ok(Ok(tcp))) = r {
                open.push(tcp);
            }
        }
        left -= batch;
    }
    open
}

/// A number from the Prometheus text `metrics`: the sample whose name and labels are `series`.
fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Not a test of its own: a process of its own (with an open-file limit of its own) that holds
/// idle connections for `twenty_thousand_idle_connections_leave_the_api_answering`. Without
/// its environment it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process of twenty_thousand_idle_connections_leave_the_api_answering"]
async fn idle_connection_holder() {
    let (Ok(addr), Ok(n)) = (
        std::env::var("TESTARENA_HOLD_ADDR"),
        std::env::var("TESTARENA_HOLD_COUNT"),
    ) else {
        return;
    };
    raise_fd_limit();
    let conns = open_idle(&addr, n.parse().unwrap()).await;
    println!("\nHOLDING {}", conns.len());
    // "check" asks how many the server closed; end of input ends the helper.
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim() == "check" {
                let closed = conns.iter().filter(|c| closed_by_peer(c)).count();
                println!("\nCLOSED {closed}");
            }
        }
    });
    lines.await.unwrap();
}

/// Waits (at most `secs`) for a helper's line `PREFIX n`; returns n.
async fn helper_says(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    prefix: &str,
    secs: u64,
) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = tokio::time::timeout(left, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no {prefix} from the helper in {secs}s"))
            .unwrap()
            .unwrap_or_else(|| panic!("the helper ended before {prefix}"));
        if let Some(n) = line.trim().strip_prefix(prefix) {
            return n.trim().parse().unwrap();
        }
    }
}

/// 20,000 connections that never send a byte (loopback only) cannot keep others out: the
/// server serves at most its cap (10,000 here) and makes room by closing the oldest idle ones.
/// The connections are held by two helper processes, so no process needs more than 10,000
/// file descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_idle_connections_leave_the_api_answering() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    const WANT: usize = 20_000;
    let per_helper = (WANT / 2).min((hard_fd_limit() as usize).saturating_sub(500));
    if per_helper * 2 < WANT {
        eprintln!(
            "open-file limit {}: holding {} idle connections instead of {WANT}",
            hard_fd_limit(),
            per_helper * 2
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let cap = 10_000.min(hard_fd_limit().saturating_sub(256) as usize);
    let addr = app.base.trim_start_matches("http://").to_string();
    let started = std::time::Instant::now();
    let mut helpers = Vec::new();
    for _ in 0..2 {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "idle_connection_holder",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TESTARENA_HOLD_ADDR", &addr)
            .env("TESTARENA_HOLD_COUNT", per_helper.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        helpers.push((child, lines));
    }
    let mut held = 0;
    for (_, lines) in &mut helpers {
        held += helper_says(lines, "HOLDING", 120).await;
    }
    eprintln!("{held} idle connections open after {:?}", started.elapsed());
    assert!(
        held >= per_helper * 2 * 95 / 100,
        "only {held} connections opened"
    );
    let fresh = testarena_client::Client::builder(&app.base)
        .timeout(Some(std::time::Duration::from_secs(10)))
        .build()
        .unwrap();
    for _ in 0..3 {
        // A degraded (503) health would say so; any other refusal is an error.
        let health = fresh.health().await.unwrap();
        assert_eq!(
            (health.status.as_str(), health.database.as_str()),
            ("ok", "ok")
        );
    }
    let created = fresh.create_queue_answer(&good()).await.unwrap();
    assert_eq!(created.status, StatusCode::CREATED.as_u16());
    // The server never served more than its cap: it closed the oldest idle connections.
    let text = fresh.metrics().await.unwrap();
    let open = metric(&text, "testarena_http_connections");
    let evicted = metric(
        &text,
        "testarena_http_connections_closed_total{reason=\"evicted\"}",
    );
    eprintln!("server: {open} connections open, {evicted} evicted");
    assert!(open <= (cap + 5) as f64, "{open} open, cap {cap}");
    if held > cap {
        assert!(evicted >= 1.0, "nothing evicted:\n{text}");
    }
    let mut closed = 0;
    for (child, lines) in &mut helpers {
        let stdin = child.stdin.as_mut().unwrap();
        stdin.write_all(b"check\n").await.unwrap();
        stdin.flush().await.unwrap();
        closed += helper_says(lines, "CLOSED", 30).await;
    }
    eprintln!("the helpers saw {closed} of {held} connections closed by the server");
    if held > cap {
        assert!(closed >= 1, "the server closed none of {held}");
    }
    for (mut child, _) in helpers {
        drop(child.stdin.take());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await;
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(180));
    assert_eq!(get(&app, "/api/v1/health").await.0, StatusCode::OK);
}

/// 200 clients that send a request head one byte a second are closed after the header
/// timeout (here 2 s), and the API answers meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(
        "serve",
        dir.path(),
        &["--header-timeout", "2s", "--idle-timeout", "30s"],
    );
    let addr = app.base.trim_start_matches("http://").to_string();
    let started = std::time::Instant::now();
    let mut clients = Vec::new();
    for _ in 0..200 {
        let addr = addr.clone();
        clients.push(tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let opened = std::time::Instant::now();
            let head = b"GET /api/v1/health HTTP/1.1\r\nhost: slow\r\nx-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
            for b in head {
                if tcp.write_all(&[*b]).await.is_err() {
                    break;
                }
                let mut buf = [0u8; 256];
                // Wait a second, unless the server closes the connection.
                match tokio::time::timeout(std::time::Duration::from_secs(1), tcp.read(&mut buf))
                    .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => panic!("the slow client got an answer"),
                    Err(_) => {}
                }
            }
            opened.elapsed()
        }));
    }
    // Meanwhile the API answers others.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(get(&app, "/api/v1/health").await.0, StatusCode::OK);
    for c in clients {
        let lasted = c.await.unwrap();
        assert!(
            lasted >= std::time::Duration::from_millis(1_500)
                && lasted < std::time::Duration::from_secs(8),
            "a slow client lasted {lasted:?}"
        );
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(get(&app, "/api/v1/health").await.0, StatusCode::OK);
    let text = app.api.metrics().await.unwrap();
    let timed_out = metric(
        &text,
        "testarena_http_connections_closed_total{reason=\"header_timeout\"}",
    );
    assert!(
        timed_out >= 200.0,
        "{timed_out} closed for the header timeout"
    );
}

#[tokio::test]
async fn repositories_on_hosts_outside_allowed_hosts_are_refused_at_submit() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(
        "serve",
        dir.path(),
        &["--allowed-hosts", "git.example.com,*.corp.example"],
    );
    for (repo, ok) in [
        ("https://git.example.com/fw.git", true),
        ("ssh://git@build.corp.example/fw.git", true),
        ("https://evil.example/fw.git", false),
        ("git@evil.example:fw.git", false),
        ("http://169.254.169.254/latest/meta-data", false),
    ] {
        let answer = app
            .api
            .create_queue_answer(&NewQueue::new(repo, "main"))
            .await;
        if ok {
            assert_eq!(answer.map(|a| a.status).ok(), Some(201), "{repo}");
        } else {
            assert_refused(&answer, 422, "invalid_input", "repo");
        }
    }
}

#[tokio::test]
async fn labels_are_validated_shown_and_a_queue_no_worker_can_take_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    for (labels, field) in [
        (json!(["esp32", "Bad Label"]), "labels[1]"),
        (json!([""]), "labels[0]"),
        (
            json!((0..17).map(|i| format!("l{i}")).collect::<Vec<_>>()),
            "labels",
        ),
    ] {
        let (s, body) = post(
            &app,
            json!({"repo": "https://example.com/fw.git", "branch": "main", "labels": labels}),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_error(&body, "invalid_input", field);
    }
    let (s, body) = post(
        &app,
        json!({"repo": "https://example.com/fw.git", "branch": "main", "labels": "esp32"}),
    )
    .await;
    assert!(s.is_client_error(), "{s} {body}");
    let new = NewQueue {
        labels: Some(vec!["sim".into(), "esp32".into()]),
        ..good()
    };
    let q = app.api.create_queue(&new).await.unwrap();
    assert_eq!(q.labels, ["esp32", "sim"]);
    // No worker at all: it says so, and so does an unlabelled queue.
    assert_eq!(
        q.waiting_reason.as_deref(),
        Some("waiting for a worker with labels esp32, sim")
    );
    let plain = app.api.create_queue(&good()).await.unwrap();
    assert_eq!(
        plain.waiting_reason.as_deref(),
        Some("waiting for a worker (none is alive)")
    );
    drop(app);
    // A live worker with other labels takes the plain queue but not the labelled one.
    let app = App::start(
        "up",
        dir.path(),
        &["--labels", "lab-2,fast", "--allow-local-repos", "/srv/git"],
    );
    // The worker registers once it found this host's emulators.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let w = loop {
        let w = app.api.workers().await.unwrap();
        if !w.workers.is_empty() || std::time::Instant::now() > deadline {
            break w;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let got = app.api.queue(q.id).await.unwrap();
    assert_eq!(got.status, QueueStatus::Waiting);
    assert_eq!(
        got.waiting_reason.as_deref(),
        Some("waiting for a worker with labels esp32, sim")
    );
    let (_, list) = get(&app, "/api/v1/queues").await;
    let listed = list["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == q.id)
        .unwrap();
    assert_eq!(listed["labels"], json!(["esp32", "sim"]));
    assert_eq!(
        listed["waiting_reason"],
        "waiting for a worker with labels esp32, sim"
    );
    assert_eq!(w.workers.len(), 1, "{w:?}");
    let w = &w.workers[0];
    assert!(
        app.api
            .queue(plain.id)
            .await
            .unwrap()
            .waiting_reason
            .is_none(),
        "a live worker can take the plain queue"
    );
    assert_eq!(w.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(w.concurrency, 1);
    assert!(
        w.labels.contains(&"lab-2".to_string()) && w.labels.contains(&"fast".to_string()),
        "{w:?}"
    );
    // A bad label is refused at start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_testarena"))
        .args(["worker", "--labels", "Not/A/Label", "--data-dir"])
        .arg(dir.path())
        .env("TESTARENA_CONFIG", "/dev/null")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--labels"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
