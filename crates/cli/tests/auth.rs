//! API tokens, scopes and sign-in sessions (issue 13), through the real binary: tokens made and
//! revoked with `testarena token`, every route × every kind of caller with auth required (with
//! and without anonymous reading) and off, a submitter aborting its own queue but not
//! another's, the dashboard's session cookie and its CSRF value, the default on an address
//! other hosts can reach, the CLI's advice on 401/403, and a revoke that takes effect at once
//! on two `serve` replicas on PostgreSQL.

mod common;

use common::{App, Database};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A repository on a host the server accepts (nothing fetches it: no worker runs).
const REPO: &str = "https://git.example.com/fw.git";

/// Runs the real binary with `args` and no config file or environment of the machine.
fn testarena(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_testarena"))
        .args(args)
        .env("TESTARENA_CONFIG", "/dev/null")
        .env_remove("TESTARENA_DATABASE_URL")
        .env_remove("TESTARENA_URL")
        .env_remove("TESTARENA_TOKEN")
        .env_remove("TESTARENA_AUTH")
        .env("TESTARENA_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run testarena")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `testarena token create` on the database `db` names (`--data-dir DIR` or `--database URL`);
/// returns the token from the last line of its output.
fn make_token(db: &[&str], name: &str, scope: &str, expires: Option<&str>) -> String {
    let mut args = vec!["token", "create", "--name", name, "--scope", scope];
    if let Some(e) = expires {
        args.extend(["--expires", e]);
    }
    args.extend(db);
    let o = testarena(&args);
    assert!(o.status.success(), "token create: {}", err(&o));
    let text = out(&o);
    let last = text.lines().last().expect("output").trim().to_string();
    assert!(
        last.starts_with("ta_"),
        "the last line ends with the token: {text}"
    );
    last
}

fn revoke(db: &[&str], which: &str) -> Output {
    let mut args = vec!["token", "revoke", which];
    args.extend(db);
    testarena(&args)
}

/// A config file with `text`, in `dir`.
fn config(dir: &Path, text: &str) -> String {
    let path = dir.join("auth.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cred {
    None,
    Read,
    Submit,
    Admin,
    Revoked,
    Expired,
    /// `Authorization: Bearer` with something that is no token at all.
    Garbage,
}

const CREDS: [Cred; 7] = [
    Cred::None,
    Cred::Read,
    Cred::Submit,
    Cred::Admin,
    Cred::Revoked,
    Cred::Expired,
    Cred::Garbage,
];

/// The tokens of one server's database.
struct Tokens {
    read: String,
    submit: String,
    admin: String,
    revoked: String,
    expired: String,
}

impl Tokens {
    /// Makes one token of each kind in the database of the app at `data` (`ci` submits).
    fn make(data: &Path) -> Tokens {
        let d = data.display().to_string();
        let db = ["--data-dir", d.as_str()];
        let revoked = make_token(&db, "gone", "admin", None);
        let o = revoke(&db, "gone");
        assert!(o.status.success(), "{}", err(&o));
        let expired = make_token(&db, "old", "admin", Some("1ms"));
        Tokens {
            read: make_token(&db, "viewer", "read", None),
            submit: make_token(&db, "ci", "submit", None),
            admin: make_token(&db, "root", "admin", None),
            revoked,
            expired,
        }
    }

    fn header(&self, cred: Cred) -> Option<String> {
        let t = match cred {
            Cred::None => return None,
            Cred::Read => &self.read,
            Cred::Submit => &self.submit,
            Cred::Admin => &self.admin,
            Cred::Revoked => &self.revoked,
            Cred::Expired => &self.expired,
            Cred::Garbage => "not-a-token",
        };
        Some(format!("Bearer {t}"))
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    Open,
    Read,
    Submit,
    Admin,
}

/// What a caller should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allowed,
    Unauthorized,
    Forbidden,
}

fn expect(need: Need, cred: Cred, off: bool, anonymous_read: bool) -> Expect {
    if off || need == Need::Open {
        return Expect::Allowed;
    }
    let has = match cred {
        Cred::Revoked | Cred::Expired | Cred::Garbage => return Expect::Unauthorized,
        Cred::None if need == Need::Read && anonymous_read => return Expect::Allowed,
        Cred::None => return Expect::Unauthorized,
        Cred::Read => Need::Read,
        Cred::Submit => Need::Submit,
        Cred::Admin => Need::Admin,
    };
    if has >= need {
        Expect::Allowed
    } else {
        Expect::Forbidden
    }
}

/// A raw request with an optional `Authorization` value; the status, headers and body.
async fn call(
    app: &App,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = app
        .http
        .request(method.clone(), app.url(path))
        .timeout(Duration::from_secs(20));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    let is_stream = headers
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
    // A live stream never ends: its status is enough.
    let body = if is_stream || method == Method::HEAD {
        Value::Null
    } else {
        resp.json().await.unwrap_or(Value::Null)
    };
    (status, headers, body)
}

/// Submits a queue as `auth`; returns its JSON.
async fn submit(app: &App, auth: Option<&str>) -> Value {
    let body = json!({"repo": REPO, "branch": "main", "scenarios": ["a.xml"]});
    let (status, _, v) = call(app, Method::POST, "/api/v1/queues", auth, Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v
}

/// Asserts that an answer is the API's refusal with `status` and `code`.
fn assert_refusal(
    what: &str,
    (status, headers, body): &(StatusCode, reqwest::header::HeaderMap, Value),
    want: StatusCode,
    code: &str,
) {
    assert_eq!(*status, want, "{what}: {body}");
    if body.is_null() {
        return; // HEAD: no body.
    }
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        !body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{what}: {body}"
    );
    if want == StatusCode::UNAUTHORIZED {
        assert_eq!(
            headers.get("www-authenticate").map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "{what}"
        );
    }
}

/// Every route × every caller against `app`, expecting what the contract says.
async fn check_every_route(app: &App, tokens: &Tokens, off: bool, anonymous_read: bool) {
    let admin = tokens.header(Cred::Admin);
    let base = submit(app, admin.as_deref()).await;
    let id = base["id"].as_i64().unwrap();
    let task = base["tasks"][0]["id"].as_i64().unwrap();
    let mut checked = 0;
    for cred in CREDS {
        let auth = tokens.header(cred);
        // Fresh queues of another token (root) to abort and delete.
        let other = submit(app, admin.as_deref()).await["id"].as_i64().unwrap();
        let doomed = submit(app, admin.as_deref()).await["id"].as_i64().unwrap();
        let new_queue = json!({"repo": REPO, "branch": "main", "scenarios": ["b.xml"]});
        let empty = json!({});
        let q = format!("/api/v1/queues/{id}");
        let routes: Vec<(Method, String, Option<&Value>, Need)> = vec![
            (Method::GET, "/api/v1/health".into(), None, Need::Open),
            (Method::GET, "/".into(), None, Need::Open),
            (Method::GET, "/assets/app.js".into(), None, Need::Open),
            (Method::GET, "/api/openapi.json".into(), None, Need::Open),
            (Method::GET, "/api/docs".into(), None, Need::Open),
            (
                Method::POST,
                "/api/v1/hooks/gitea".into(),
                Some(&empty),
                Need::Open,
            ),
            (Method::GET, "/api/v1/session".into(), None, Need::Open),
            (Method::GET, "/api/v1/queues".into(), None, Need::Read),
            (Method::GET, q.clone(), None, Need::Read),
            (Method::HEAD, q.clone(), None, Need::Read),
            (
                Method::GET,
                format!("{q}/tasks/{task}/cases"),
                None,
                Need::Read,
            ),
            (Method::GET, format!("{q}/log"), None, Need::Read),
            (Method::GET, format!("{q}/log/stream"), None, Need::Read),
            (Method::GET, format!("{q}/cases/TC_1/log"), None, Need::Read),
            (
                Method::GET,
                format!("{q}/cases/TC_1/log.html"),
                None,
                Need::Read,
            ),
            (Method::GET, format!("{q}/junit.xml"), None, Need::Read),
            (Method::GET, format!("{q}/archive"), None, Need::Read),
            (Method::GET, "/api/v1/workers".into(), None, Need::Read),
            (Method::GET, "/api/v1/events".into(), None, Need::Read),
            (Method::GET, "/metrics".into(), None, Need::Read),
            (
                Method::POST,
                "/api/v1/queues".into(),
                Some(&new_queue),
                Need::Submit,
            ),
            (
                Method::POST,
                format!("{q}/rerun"),
                Some(&empty),
                Need::Submit,
            ),
            // Another token's queue: a submitter may not abort it.
            (
                Method::POST,
                format!("/api/v1/queues/{other}/abort"),
                None,
                Need::Admin,
            ),
            (
                Method::DELETE,
                format!("/api/v1/queues/{doomed}"),
                None,
                Need::Admin,
            ),
            // A method no route has: a write, so admin; then 405.
            (Method::PUT, q.clone(), Some(&empty), Need::Admin),
        ];
        for (method, path, body, need) in routes {
            let what =
                format!("{cred:?} {method} {path} (off {off}, anonymous_read {anonymous_read})");
            let answer = call(app, method.clone(), &path, auth.as_deref(), body).await;
            match expect(need, cred, off, anonymous_read) {
                Expect::Allowed => {
                    let s = answer.0;
                    assert!(
                        s != StatusCode::UNAUTHORIZED
                            && s != StatusCode::FORBIDDEN
                            && !s.is_server_error(),
                        "{what}: {s} {}",
                        answer.2
                    );
                }
                Expect::Unauthorized => {
                    assert_refusal(&what, &answer, StatusCode::UNAUTHORIZED, "unauthorized")
                }
                Expect::Forbidden => {
                    assert_refusal(&what, &answer, StatusCode::FORBIDDEN, "forbidden");
                    if method != Method::HEAD {
                        let m = answer.2["error"]["message"].as_str().unwrap().to_string();
                        assert!(
                            m.contains("needs scope") && m.contains("has scope"),
                            "{what}: {m}"
                        );
                    }
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= CREDS.len() * 25, "{checked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_caller_with_auth_required_and_no_anonymous_reading() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[auth]\nanonymous_read = false\n");
    let data = dir.path().join("data");
    let app = App::start("serve", &data, &["--config", &cfg, "--auth", "required"]);
    let tokens = Tokens::make(&data);
    check_every_route(&app, &tokens, false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_caller_with_anonymous_reading() {
    let dir = tempfile::tempdir().unwrap();
    // From the environment this time; anonymous_read defaults to true.
    let app = App::start_with_env("serve", dir.path(), &[], &[("TESTARENA_AUTH", "required")]);
    let tokens = Tokens::make(dir.path());
    check_every_route(&app, &tokens, false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_caller_with_auth_off_and_tokens_still_name_submitters() {
    let dir = tempfile::tempdir().unwrap();
    // Loopback: off by default.
    let app = App::start("serve", dir.path(), &[]);
    let tokens = Tokens::make(dir.path());
    check_every_route(&app, &tokens, true, true).await;
    let anonymous = submit(&app, None).await;
    assert_eq!(anonymous["submitted_by"], Value::Null);
    let named = submit(&app, tokens.header(Cred::Submit).as_deref()).await;
    assert_eq!(named["submitted_by"], "ci");
    let revoked = submit(&app, tokens.header(Cred::Revoked).as_deref()).await;
    assert_eq!(revoked["submitted_by"], Value::Null);
    let (_, _, s) = call(&app, Method::GET, "/api/v1/session", None, None).await;
    assert_eq!(
        s,
        json!({"auth": "off", "anonymous_read": true, "signed_in": false, "name": null,
               "scope": "admin", "csrf": null})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_aborts_its_own_queues_only_and_aborts_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("serve", dir.path(), &["--auth", "required"]);
    let d = dir.path().display().to_string();
    let db = ["--data-dir", d.as_str()];
    let ci = format!("Bearer {}", make_token(&db, "ci", "submit", None));
    let other = format!("Bearer {}", make_token(&db, "other", "submit", None));
    let root = format!("Bearer {}", make_token(&db, "root", "admin", None));

    let own = submit(&app, Some(&ci)).await;
    assert_eq!(own["submitted_by"], "ci");
    let own_id = own["id"].as_i64().unwrap();
    let path = |id: i64| format!("/api/v1/queues/{id}/abort");
    // Somebody else's submitter token may not abort it.
    let answer = call(&app, Method::POST, &path(own_id), Some(&other), None).await;
    assert_refusal(
        "other aborts ci's",
        &answer,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let m = answer.2["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("needs scope admin") && m.contains("'other' has scope submit"),
        "{m}"
    );
    // Its own token may, and the abort is named.
    let (status, _, q) = call(&app, Method::POST, &path(own_id), Some(&ci), None).await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert_eq!(q["status"], "aborted");
    assert_eq!(q["error"], "aborted before it started (by ci)");

    // An admin's queue, and an anonymous one (auth off earlier): only an admin aborts them.
    let roots = submit(&app, Some(&root)).await["id"].as_i64().unwrap();
    let answer = call(&app, Method::POST, &path(roots), Some(&ci), None).await;
    assert_refusal(
        "ci aborts root's",
        &answer,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let theirs = submit(&app, Some(&ci)).await["id"].as_i64().unwrap();
    let (status, _, q) = call(&app, Method::POST, &path(theirs), Some(&root), None).await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert_eq!(q["error"], "aborted before it started (by root)");
    assert_eq!(q["submitted_by"], "ci");
    // The list shows who submitted each.
    let (_, _, list) = call(&app, Method::GET, "/api/v1/queues", Some(&root), None).await;
    let by: Vec<&Value> = list["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| &q["submitted_by"])
        .collect();
    assert_eq!(by, [&json!("ci"), &json!("root"), &json!("ci")]);
}

/// The `Set-Cookie` values of an answer.
fn cookies(headers: &reqwest::header::HeaderMap) -> Vec<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// A request with the session cookie (and a CSRF header, if given).
async fn with_cookie(
    app: &App,
    method: Method,
    path: &str,
    token: &str,
    csrf: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .request(method, app.url(path))
        .header("cookie", format!("theme=dark; testarena_session={token}"));
    if let Some(c) = csrf {
        req = req.header("x-csrf-token", c);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_sessions_use_an_httponly_cookie_and_a_csrf_value() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[auth]\nmode = \"required\"\nanonymous_read = false\n",
    );
    let data = dir.path().join("data");
    let app = App::start("serve", &data, &["--config", &cfg]);
    let d = data.display().to_string();
    let db = ["--data-dir", d.as_str()];
    let ci = make_token(&db, "ci", "submit", None);
    let brief = make_token(&db, "brief", "read", Some("1h"));

    // Not signed in.
    let (status, _, s) = call(&app, Method::GET, "/api/v1/session", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        s,
        json!({"auth": "required", "anonymous_read": false, "signed_in": false, "name": null,
               "scope": null, "csrf": null})
    );
    // A bad token does not sign in.
    let bad = json!({"token": "ta_1_0000"});
    let answer = call(&app, Method::POST, "/api/v1/session", None, Some(&bad)).await;
    assert_refusal(
        "bad sign-in",
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert!(cookies(&answer.1).is_empty());

    // Sign in: the cookie holds the session, where scripts cannot read it.
    let (status, headers, signed) = call(
        &app,
        Method::POST,
        "/api/v1/session",
        None,
        Some(&json!({"token": ci})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{signed}");
    assert_eq!(signed["name"], "ci");
    assert_eq!(signed["scope"], "submit");
    assert_eq!(signed["expires_at"], Value::Null);
    let csrf = signed["csrf"].as_str().unwrap().to_string();
    assert_eq!(csrf.len(), 64);
    assert_eq!(
        cookies(&headers),
        [format!(
            "testarena_session={ci}; HttpOnly; SameSite=Strict; Path=/"
        )]
    );
    // Behind a proxy on HTTPS the cookie is Secure; an expiring token's cookie expires with it.
    let resp = app
        .http
        .post(app.url("/api/v1/session"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"token": brief}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let c = cookies(resp.headers()).join("");
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("; Secure"),
        "{c}"
    );
    let max_age: i64 = c
        .split("Max-Age=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&max_age), "{c}");
    let v: Value = resp.json().await.unwrap();
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'), "{v}");

    // The cookie signs requests in: reads need no CSRF value.
    let (status, s) = with_cookie(&app, Method::GET, "/api/v1/session", &ci, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        s,
        json!({"auth": "required", "anonymous_read": false, "signed_in": true, "name": "ci",
               "scope": "submit", "csrf": csrf})
    );
    let (status, _) = with_cookie(&app, Method::GET, "/api/v1/queues", &ci, None, None).await;
    assert_eq!(status, StatusCode::OK);
    // Writes by cookie need the CSRF value; bearer writes do not.
    let body = json!({"repo": REPO, "branch": "main", "scenarios": ["a.xml"]});
    for wrong in [None, Some("0".repeat(64))] {
        let (status, v) = with_cookie(
            &app,
            Method::POST,
            "/api/v1/queues",
            &ci,
            wrong.as_deref(),
            Some(&body),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(v["error"]["code"], "csrf", "{v}");
    }
    let (status, q) = with_cookie(
        &app,
        Method::POST,
        "/api/v1/queues",
        &ci,
        Some(&csrf),
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{q}");
    assert_eq!(q["submitted_by"], "ci");
    let bearer = format!("Bearer {ci}");
    submit(&app, Some(&bearer)).await;
    // The scope still counts: deleting needs admin.
    let path = format!("/api/v1/queues/{}", q["id"]);
    let (status, v) = with_cookie(&app, Method::DELETE, &path, &ci, Some(&csrf), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "forbidden");

    // Sign out clears the cookie.
    let resp = app
        .http
        .delete(app.url("/api/v1/session"))
        .header("cookie", format!("testarena_session={ci}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let c = cookies(resp.headers()).join("");
    assert!(
        c.starts_with("testarena_session=;") && c.contains("Max-Age=0"),
        "{c}"
    );

    // A revoked token's cookie signs nobody in (and is cleared); writes and reads are refused.
    let o = revoke(&db, "ci");
    assert!(o.status.success(), "{}", err(&o));
    let resp = app
        .http
        .get(app.url("/api/v1/session"))
        .header("cookie", format!("testarena_session={ci}"))
        .send()
        .await
        .unwrap();
    assert!(cookies(resp.headers()).join("").contains("Max-Age=0"));
    let s: Value = resp.json().await.unwrap();
    assert_eq!(s["signed_in"], false);
    let (status, v) = with_cookie(&app, Method::GET, "/api/v1/queues", &ci, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (status, _) = with_cookie(
        &app,
        Method::POST,
        "/api/v1/queues",
        &ci,
        Some(&csrf),
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_other_hosts_can_reach_requires_tokens_unless_told_off() {
    let body = json!({"repo": REPO, "branch": "main", "scenarios": ["a.xml"]});
    let dir = tempfile::tempdir().unwrap();
    let app = App::start_on("serve", "0.0.0.0:0", dir.path(), &[]);
    assert!(app.base.contains("0.0.0.0:"), "{}", app.base);
    let answer = call(&app, Method::POST, "/api/v1/queues", None, Some(&body)).await;
    assert_refusal(
        "anonymous POST on 0.0.0.0",
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    // Reading stays open by default.
    let (status, _, _) = call(&app, Method::GET, "/api/v1/queues", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, s) = call(&app, Method::GET, "/api/v1/session", None, None).await;
    assert_eq!(s["auth"], "required");
    drop(app);

    let dir = tempfile::tempdir().unwrap();
    let app = App::start_on("serve", "0.0.0.0:0", dir.path(), &["--auth", "off"]);
    let (status, _, v) = call(&app, Method::POST, "/api/v1/queues", None, Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
}

/// Runs a client command of the binary against `app` with `token` (if any) in the environment.
fn client(app: &App, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_testarena"));
    cmd.args(args)
        .args(["--server", &app.base])
        .env("TESTARENA_CONFIG", "/dev/null")
        .env_remove("TESTARENA_URL")
        .env_remove("TESTARENA_TOKEN")
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("TESTARENA_TOKEN", t);
    }
    cmd.output().expect("run testarena")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_says_what_to_do_about_401_and_403_and_tokens_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("serve", dir.path(), &["--auth", "required"]);
    let d = dir.path().display().to_string();
    let db = ["--data-dir", d.as_str()];
    let submit_args = [
        "submit",
        "--repo",
        REPO,
        "--branch",
        "main",
        "--scenario",
        "a.xml",
    ];

    // No token: 401, and how to pass one and make one.
    let o = client(&app, None, &submit_args);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    let e = err(&o);
    for want in [
        "unauthorized",
        "--token",
        "TESTARENA_TOKEN",
        "testarena token create",
    ] {
        assert!(e.contains(want), "{want} missing in: {e}");
    }
    // A read token: 403, naming the scope needed and the one it has.
    let read = make_token(&db, "viewer", "read", None);
    let o = client(&app, Some(&read), &submit_args);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    let e = err(&o);
    for want in [
        "forbidden",
        "needs scope submit",
        "has scope read",
        "--scope submit",
    ] {
        assert!(e.contains(want), "{want} missing in: {e}");
    }
    // A submit token submits; the queue shows who did.
    let ci = make_token(&db, "ci", "submit", Some("30d"));
    let o = client(&app, Some(&ci), &submit_args);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let o = client(&app, Some(&read), &["queues"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let table = out(&o);
    assert!(table.lines().next().unwrap().contains(" BY "), "{table}");
    assert!(table.lines().nth(1).unwrap().contains(" ci "), "{table}");
    let id = table
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let o = client(&app, Some(&read), &["show", &id]);
    assert!(out(&o).contains("by        ci"), "{}", out(&o));
    // Deleting needs admin.
    let o = client(&app, Some(&ci), &["rm", &id]);
    assert_eq!(o.status.code(), Some(3));
    assert!(err(&o).contains("--scope admin"), "{}", err(&o));

    // `token list` shows every token and never a secret.
    let o = testarena(&["token", "list", "--data-dir", &d]);
    assert!(o.status.success(), "{}", err(&o));
    let list = out(&o);
    let header = list.lines().next().unwrap();
    for col in ["ID", "NAME", "SCOPE", "CREATED", "LAST USED", "EXPIRES"] {
        assert!(header.contains(col), "{col} in {header}");
    }
    for (token, name, scope) in [(&read, "viewer", "read"), (&ci, "ci", "submit")] {
        let secret = token.rsplit('_').next().unwrap();
        assert!(
            !list.contains(secret) && !list.contains(&secret[..16]),
            "{list}"
        );
        let line = list.lines().find(|l| l.contains(name)).expect(name);
        assert!(line.contains(scope), "{line}");
    }
    let ci_line = list.lines().find(|l| l.contains(" ci ")).unwrap();
    assert!(!ci_line.contains("never"), "expires in 30 days: {ci_line}");
    // The server recorded the tokens' use.
    assert!(
        !ci_line.split_whitespace().nth(4).unwrap().starts_with('-'),
        "{ci_line}"
    );

    // Revoke by name, then by id; unknown ones are refused.
    let o = revoke(&db, "viewer");
    assert!(
        o.status.success() && out(&o).contains("viewer"),
        "{}",
        err(&o)
    );
    let ci_id = ci_line.split_whitespace().next().unwrap();
    let o = revoke(&db, ci_id);
    assert!(
        o.status.success() && out(&o).contains("'ci'"),
        "{}",
        err(&o)
    );
    let o = revoke(&db, "ci");
    assert!(!o.status.success());
    assert!(
        err(&o).contains("no token has the id or name 'ci'"),
        "{}",
        err(&o)
    );
    let o = testarena(&["token", "list", "--data-dir", &d]);
    assert!(
        out(&o).is_empty() && err(&o).contains("no tokens"),
        "{}",
        out(&o)
    );
    let o = client(&app, Some(&ci), &["queues"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(err(&o).contains("not valid"), "{}", err(&o));

    // Bad names and scopes are refused before anything is made.
    let o = testarena(&[
        "token",
        "create",
        "--name",
        "42",
        "--scope",
        "read",
        "--data-dir",
        &d,
    ]);
    assert!(
        !o.status.success() && err(&o).contains("--name"),
        "{}",
        err(&o)
    );
    let o = testarena(&[
        "token",
        "create",
        "--name",
        "x",
        "--scope",
        "owner",
        "--data-dir",
        &d,
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));

    // An expired token: 401.
    let soon = make_token(&db, "soon", "admin", Some("1s"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let o = client(&app, Some(&soon), &["queues"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(err(&o).contains("unauthorized"), "{}", err(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_working_at_once_on_two_replicas_on_postgres() {
    let db = Database::new("auth").await;
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let admin_dir = tempfile::tempdir().unwrap();
    let admin_data = admin_dir.path().display().to_string();
    // The admin's commands: on the database, with a data directory of their own.
    let on_db = [
        "--database",
        db.url.as_str(),
        "--data-dir",
        admin_data.as_str(),
    ];
    let mut migrate = vec!["migrate"];
    migrate.extend(on_db);
    let migrated = testarena(&migrate);
    assert!(migrated.status.success(), "{}", err(&migrated));
    let args = ["--database", db.url.as_str(), "--auth", "required"];
    let a = App::start("serve", a_dir.path(), &args);
    let b = App::start("serve", b_dir.path(), &args);
    let token = make_token(&on_db, "ci", "submit", None);
    let bearer = format!("Bearer {token}");
    for (name, app) in [("a", &a), ("b", &b)] {
        let q = submit(app, Some(&bearer)).await;
        assert_eq!(q["submitted_by"], "ci", "replica {name}");
        let (status, _, _) = call(app, Method::GET, "/api/v1/queues", Some(&bearer), None).await;
        assert_eq!(status, StatusCode::OK, "replica {name}");
    }
    let o = revoke(&on_db, "ci");
    assert!(o.status.success(), "{}", err(&o));
    for (name, app) in [("a", &a), ("b", &b)] {
        let answer = call(app, Method::GET, "/api/v1/queues", Some(&bearer), None).await;
        assert_refusal(
            &format!("replica {name} after revoke"),
            &answer,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
        let body = json!({"repo": REPO, "branch": "main"});
        let answer = call(
            app,
            Method::POST,
            "/api/v1/queues",
            Some(&bearer),
            Some(&body),
        )
        .await;
        assert_refusal(
            &format!("replica {name} after revoke"),
            &answer,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
    }
    drop(a);
    drop(b);
    db.drop_now().await;
}
