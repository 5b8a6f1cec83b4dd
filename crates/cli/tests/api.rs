//! The REST API, through the real binary on a random port with a fresh SQLite file.

mod common;

use common::App;
use reqwest::StatusCode;
use serde_json::{json, Value};

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
    get(app, "/api/v1/queues?limit=500").await.1["queues"]
        .as_array()
        .unwrap()
        .len()
}

fn good() -> Value {
    json!({"repo": "https://example.com/fw.git", "branch": "main"})
}

fn assert_error(body: &Value, code: &str, mentions: &str) {
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
    let (s, body) = get(&app, "/api/v1/health").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let page = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("TestArena"));
}

#[tokio::test]
async fn create_then_get_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let r = app
        .client
        .post(app.url("/api/v1/queues"))
        .json(&json!({"repo": "https://example.com/fw.git", "branch": "feature/x", "scenarios": ["scenarios/a.xml", "b.xml"],
                      "name": "nightly", "priority": 7, "commit": "0123456789ABCDEF0123456789abcdef01234567"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let q: Value = r.json().await.unwrap();
    let id = q["id"].as_i64().unwrap();
    assert_eq!(location, format!("/api/v1/queues/{id}"));
    assert_eq!(q["status"], "waiting");
    assert_eq!(q["phase"], Value::Null);
    assert_eq!(
        q["commit"],
        Value::Null,
        "commit stays null until the worker resolves it"
    );
    assert_eq!(q["priority"], 7);
    assert_eq!(q["name"], "nightly");
    assert_eq!(
        q["summary"],
        json!({"total": 0, "passed": 0, "failed": 0, "error": 0, "skipped": 0})
    );
    let tasks = q["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["scenario"], "scenarios/a.xml");
    assert_eq!(tasks[0]["status"], "pending");
    assert!(q["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(q["started_at"], Value::Null);

    let (s, fetched) = get(&app, &location).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(fetched, q);

    // Defaults: priority 5, name = branch.
    let (s, d) = post(&app, good()).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        (d["priority"].as_i64(), d["name"].as_str()),
        (Some(5), Some("main"))
    );
    assert_eq!(d["tasks"], json!([]));

    let (s, list) = get(&app, "/api/v1/queues").await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<i64> = list["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![d["id"].as_i64().unwrap(), id], "newest first");
    assert_eq!(list["next"], Value::Null);
}

#[tokio::test]
async fn list_paginates_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    for _ in 0..7 {
        assert_eq!(post(&app, good()).await.0, StatusCode::CREATED);
    }
    let (_, p1) = get(&app, "/api/v1/queues?limit=3").await;
    assert_eq!(p1["queues"].as_array().unwrap().len(), 3);
    let next = p1["next"].as_i64().unwrap();
    let (_, p2) = get(&app, &format!("/api/v1/queues?limit=3&before={next}")).await;
    let (_, p3) = get(
        &app,
        &format!(
            "/api/v1/queues?limit=3&before={}",
            p2["next"].as_i64().unwrap()
        ),
    )
    .await;
    assert_eq!(p3["queues"].as_array().unwrap().len(), 1);
    assert_eq!(p3["next"], Value::Null);
    let first = p1["queues"][0]["id"].as_i64().unwrap();
    assert_eq!(
        app.client
            .post(app.url(&format!("/api/v1/queues/{first}/abort")))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let (_, aborted) = get(&app, "/api/v1/queues?status=aborted").await;
    assert_eq!(aborted["queues"].as_array().unwrap().len(), 1);
    let (_, waiting) = get(&app, "/api/v1/queues?status=waiting&limit=500").await;
    assert_eq!(waiting["queues"].as_array().unwrap().len(), 6);
    for bad in [
        "status=bogus",
        "limit=0",
        "limit=501",
        "limit=x",
        "before=abc",
        "before=-1",
    ] {
        let (s, body) = get(&app, &format!("/api/v1/queues?{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"]["code"], "bad_query", "{bad}");
    }
}

/// Each class of bad input: the status, the field named in the message, and nothing stored.
#[tokio::test]
async fn bad_input_is_refused_by_class() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let with = |k: &str, v: Value| {
        let mut b = good();
        b[k] = v;
        b
    };
    let cases: Vec<(&str, Value, &str)> = vec![
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
        ("empty scenarios", with("scenarios", json!([])), "scenarios"),
        (
            "absolute scenario",
            with("scenarios", json!(["/etc/x.xml"])),
            "scenarios[0]",
        ),
        (
            "dotdot scenario",
            with("scenarios", json!(["ok.xml", "../../x.xml"])),
            "scenarios[1]",
        ),
        (
            "nul scenario",
            with("scenarios", json!(["a\u{0}.xml"])),
            "scenarios[0]",
        ),
        (
            "not xml",
            with("scenarios", json!(["a.txt"])),
            "scenarios[0]",
        ),
        ("branch dotdot", with("branch", json!("a..b")), "branch"),
        ("branch dash", with("branch", json!("-rf")), "branch"),
        ("branch space", with("branch", json!("my branch")), "branch"),
        ("branch special", with("branch", json!("a~1")), "branch"),
        ("branch reflog", with("branch", json!("a@{1}")), "branch"),
        ("branch colon", with("branch", json!("a:b")), "branch"),
        ("repo ftp", with("repo", json!("ftp://h/r")), "repo"),
        ("repo relative", with("repo", json!("some/dir")), "repo"),
        (
            "repo local outside roots",
            with("repo", json!("/etc")),
            "repo",
        ),
        (
            "repo file url outside",
            with("repo", json!("file:///tmp/r")),
            "repo",
        ),
        (
            "repo escape root",
            with("repo", json!("/srv/git/../../etc")),
            "repo",
        ),
        ("commit short", with("commit", json!("abc123")), "commit"),
        (
            "commit not hex",
            with("commit", json!("z".repeat(40))),
            "commit",
        ),
        ("priority high", with("priority", json!(10)), "priority"),
        ("priority negative", with("priority", json!(-1)), "priority"),
        ("name long", with("name", json!("n".repeat(201))), "name"),
    ];
    for (what, body, field) in cases {
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
    assert_eq!(count(&app).await, 0, "nothing stored");

    // Accepted: a local path under the allowed root.
    let (s, q) = post(&app, with("repo", json!("file:///srv/git/fw"))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(q["repo"], "/srv/git/fw");
}

#[tokio::test]
async fn malformed_body_type_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let url = app.url("/api/v1/queues");
    let r = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"repo\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_error(&r.json().await.unwrap(), "malformed_json", "");
    let r = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body(good().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_error(&r.json().await.unwrap(), "unsupported_media_type", "");
    let r = app
        .client
        .post(&url)
        .body(good().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "no content type"
    );
    let r = app
        .client
        .post(&url)
        .json(&json!([1, 2]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Last: the server may close the connection without reading the whole oversized body.
    let huge =
        json!({"repo": "https://h/r.git", "branch": "main", "name": "x".repeat(2 * 1024 * 1024)});
    let r = reqwest::Client::new()
        .post(&url)
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&r.json().await.unwrap(), "payload_too_large", "larger");
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
            .client
            .post(app.url(&format!("/api/v1/queues/{bad}/abort")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = app
            .client
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
        .client
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
    let (_, q) = post(&app, good()).await;
    let id = q["id"].as_i64().unwrap();
    let abort = app.url(&format!("/api/v1/queues/{id}/abort"));
    let r = app.client.post(&abort).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "aborted");
    assert!(body["finished_at"].is_string());
    let r = app.client.post(&abort).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_error(&r.json().await.unwrap(), "conflict", "finished");

    let files = app.data_dir.join("queues").join(id.to_string());
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("queue.log"), "x").unwrap();
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/queues/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!files.exists(), "queue files removed");
    assert_eq!(
        get(&app, &format!("/api/v1/queues/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/queues/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn queues_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let (_, q) = post(&app, good()).await;
    assert!(app.stop().success(), "SIGTERM is a clean shutdown");
    let app = serve(&dir);
    let (s, again) = get(&app, &format!("/api/v1/queues/{}", q["id"])).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again, q);
}

#[tokio::test]
async fn concurrent_posts_get_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let mut handles = Vec::new();
    for i in 0..200 {
        let client = app.client.clone();
        let url = app.url("/api/v1/queues");
        handles.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&json!({"repo": "https://h/r.git", "branch": format!("b{i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
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
    let (s, _) = post(&app, json!({"repo": "/opt/repos/fw", "branch": "main"})).await;
    assert_eq!(s, StatusCode::CREATED);
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
        .client
        .get(app.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert!(events.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (_, q) = post(&app, good()).await;
    let id = q["id"].as_i64().unwrap();
    let mut seen = String::new();
    read_sse_until(&mut events, &mut seen, &format!("\"id\":{id},")).await;
    assert!(seen.contains("event: queue"), "{seen}");
    app.client
        .post(app.url(&format!("/api/v1/queues/{id}/abort")))
        .send()
        .await
        .unwrap();
    read_sse_until(&mut events, &mut seen, "\"status\":\"aborted\"").await;
    app.client
        .delete(app.url(&format!("/api/v1/queues/{id}")))
        .send()
        .await
        .unwrap();
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
    let (_, q) = post(
        &app,
        json!({"repo": "https://h/r.git", "branch": "dev", "scenarios": ["a.xml"], "priority": 8}),
    )
    .await;
    let id = q["id"].as_i64().unwrap();
    let r = app
        .client
        .post(app.url(&format!("/api/v1/queues/{id}/rerun")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let again: Value = r.json().await.unwrap();
    assert_ne!(again["id"], q["id"]);
    for k in ["repo", "branch", "scenarios", "priority", "name"] {
        assert_eq!(again[k], q[k], "{k}");
    }
    let r = app
        .client
        .post(app.url(&format!("/api/v1/queues/{id}/rerun")))
        .json(&json!({"only_failed": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT, "nothing failed yet");
    let r = app
        .client
        .post(app.url(&format!("/api/v1/queues/{id}/rerun")))
        .json(&json!({"bogus": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.client
            .post(app.url("/api/v1/queues/999/rerun"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    let (s, w) = get(&app, "/api/v1/workers").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(w, json!({"workers": []}), "serve alone runs no worker");

    for path in [
        format!("/api/v1/queues/{id}/junit.xml"),
        format!("/api/v1/queues/{id}/cases/TC_X/log"),
        "/api/v1/queues/abc/junit.xml".into(),
    ] {
        let (s, body) = get(&app, &path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let r = app
        .client
        .get(app.url(&format!("/api/v1/queues/{id}/log")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-next-offset"], "0");
    let r = app
        .client
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
    let (_, q) = post(&app, good()).await;
    app.client
        .get(app.url(&format!("/api/v1/queues/{}", q["id"])))
        .send()
        .await
        .unwrap();
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
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
    "/api/v1/events",
    "/api/v1/health",
    "/api/v1/hooks/gitea",
    "/api/v1/queues",
    "/api/v1/queues/{id}",
    "/api/v1/queues/{id}/abort",
    "/api/v1/queues/{id}/archive",
    "/api/v1/queues/{id}/cases/{case}/log",
    "/api/v1/queues/{id}/cases/{case}/log.html",
    "/api/v1/queues/{id}/junit.xml",
    "/api/v1/queues/{id}/log",
    "/api/v1/queues/{id}/log/stream",
    "/api/v1/queues/{id}/rerun",
    "/api/v1/workers",
    "/metrics",
];

#[tokio::test]
async fn openapi_spec_validates_and_lists_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let app = serve(&dir);
    let (s, spec) = get(&app, "/api/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
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
        let url = app.url(&p.replace("{id}", "1").replace("{case}", "TC"));
        let r = app.client.get(&url).send().await.unwrap();
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
    // Every operation documents its error body where it has errors.
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (code, resp) in op["responses"].as_object().unwrap() {
                if code.starts_with('4') {
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
        .client
        .get(app.url("/api/docs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/api/docs/swagger-ui-bundle.js") && page.contains("/api/openapi.json"));
    for asset in ["/api/docs/swagger-ui-bundle.js", "/api/docs/swagger-ui.css"] {
        let r = app.client.get(app.url(asset)).send().await.unwrap();
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
    let (s, err) = post(&app, json!({"repo": root.join("escape"), "branch": "main"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not under an allowed root"),
        "{err}"
    );
    let (s, q) = post(&app, json!({"repo": root.join("fw"), "branch": "main"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, body) = get(
        &app,
        &format!("/api/v1/queues/{}/cases/TC/log?task=abc", q["id"]),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "bad_query");
    // Credentials in a clone URL are never shown.
    let (s, q) = post(
        &app,
        json!({"repo": "https://bot:hunter2@git.example.com/fw.git", "branch": "main"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(q["repo"], "https://***@git.example.com/fw.git");
    let (_, status_err) = get(&app, "/api/v1/queues?status=bogus").await;
    assert!(status_err["error"]["message"]
        .as_str()
        .unwrap()
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
