//! The deployment files of `deploy/`, for real: the systemd units through `systemd-analyze
//! verify` and their command lines through the binary, the nginx site in a real nginx in front
//! of the real server (live streams unbuffered, body limit, gzip), `install.sh` run twice, and
//! the example config accepted by the binary.
//!
//! Needs `systemd-analyze` (Debian package `systemd`) and `nginx` (Debian package `nginx`, or
//! `nginx-light`); a missing tool fails the test, it does not skip it.

mod common;

use common::free_port;

use common::App;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the units put the binary; the tests point it at the one cargo built.
const INSTALLED_BIN: &str = "/usr/local/bin/testarena";
/// The config path in the units' command lines.
const INSTALLED_CONFIG: &str = "/etc/testarena/config.toml";
const UNITS: [&str; 3] = [
    "testarena-app.service",
    "testarena-worker.service",
    "testarena-worker@.service",
];
/// How long a live-stream line may take from the file to the client through nginx.
const LIVE_LIMIT: Duration = Duration::from_secs(1);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_testarena")
}

/// A program from PATH or the sbin directories; panics naming the Debian package if absent.
fn tool(name: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if let Ok(meta) = std::fs::metadata(&p) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return p;
            }
        }
    }
    panic!("`{name}` is needed by this test: install the Debian package `{package}` (apt-get install {package}); `make test` does");
}

/// A command for the binary with no TESTARENA_* variables of the caller's environment.
fn testarena() -> Command {
    let mut cmd = Command::new(bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TESTARENA_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

// --- systemd -------------------------------------------------------------------------------

/// `key -> values` of one unit file's section (comments and blank lines skipped).
fn unit_section(text: &str, section: &str) -> HashMap<String, Vec<String>> {
    let mut current = String::new();
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            current = line.trim_matches(['[', ']']).to_string();
            continue;
        }
        if current == section {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {line}"));
            map.entry(k.trim().to_string())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    map
}

fn one<'a>(map: &'a HashMap<String, Vec<String>>, key: &str, unit: &str) -> &'a str {
    match map.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("{unit}: expected exactly one {key}=, found {other:?}"),
    }
}

/// Seconds of a systemd time span like "30s", "1min", "1min 30s" or "45".
fn seconds(span: &str) -> u64 {
    span.split_whitespace()
        .map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            let n: u64 = digits
                .parse()
                .unwrap_or_else(|_| panic!("bad time span {span:?}"));
            match &part[digits.len()..] {
                "" | "s" | "sec" => n,
                "m" | "min" => n * 60,
                "h" => n * 3600,
                unit => panic!("unexpected unit {unit:?} in {span:?}"),
            }
        })
        .sum()
}

/// Runs `systemd-analyze verify` on unit files; returns its exit status and the output lines
/// that concern our units (systemd-analyze mostly warns and still exits 0).
fn verify(files: &[PathBuf]) -> (std::process::ExitStatus, Vec<String>, String) {
    let out = Command::new(tool("systemd-analyze", "systemd"))
        .arg("verify")
        .args(files)
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_PAGER", "")
        .stdin(Stdio::null())
        .output()
        .expect("run systemd-analyze");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = all
        .lines()
        .filter(|l| l.contains("testarena"))
        .map(String::from)
        .collect();
    (out.status, ours, all)
}

/// Copies the units into `dir` with ExecStart pointing at the binary cargo built (verify
/// insists that it exists and is executable).
fn stage_units(dir: &Path) -> Vec<PathBuf> {
    UNITS
        .iter()
        .map(|u| {
            let text = read(&deploy(&format!("systemd/{u}")));
            assert!(
                text.contains(INSTALLED_BIN),
                "{u} does not run {INSTALLED_BIN}"
            );
            let p = dir.join(u);
            std::fs::write(&p, text.replace(INSTALLED_BIN, bin())).unwrap();
            p
        })
        .collect()
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = stage_units(dir.path());
    // The template as an instance, so the %i specifiers are expanded as well.
    let instance = dir.path().join("testarena-worker@1.service");
    std::fs::copy(dir.path().join("testarena-worker@.service"), &instance).unwrap();
    files.push(instance);
    let (status, ours, all) = verify(&files);
    assert!(
        status.success() && ours.is_empty(),
        "systemd-analyze verify complained ({status}):\n{all}"
    );

    // The check itself must be able to fail: a misspelt key and a bad value are reported.
    let bad = tempfile::tempdir().unwrap();
    let good = read(&dir.path().join("testarena-app.service"));
    for (from, to) in [
        ("\nProtectHome=yes\n", "\nProtectHom=yes\n"),
        ("\nKillMode=control-group\n", "\nKillMode=control-grup\n"),
    ] {
        assert!(good.contains(from), "{from:?}");
        let p = bad.path().join("testarena-app.service");
        std::fs::write(&p, good.replacen(from, to, 1)).unwrap();
        let (_, ours, all) = verify(&[p]);
        assert!(
            !ours.is_empty(),
            "systemd-analyze verify did not notice {to:?}:\n{all}"
        );
    }
}

#[test]
fn systemd_units_have_the_required_settings() {
    for unit in UNITS {
        let text = read(&deploy(&format!("systemd/{unit}")));
        let u = unit_section(&text, "Unit");
        let s = unit_section(&text, "Service");
        let i = unit_section(&text, "Install");
        let is_worker = unit.starts_with("testarena-worker");
        let sub = if is_worker { "worker" } else { "serve" };
        assert_eq!(
            one(&s, "ExecStart", unit),
            format!("{INSTALLED_BIN} {sub} --config {INSTALLED_CONFIG}"),
            "{unit}"
        );
        for (key, want) in [
            ("User", "testarena"),
            ("Group", "testarena"),
            ("StateDirectory", "testarena"),
            ("ReadWritePaths", "/var/lib/testarena"),
            ("Restart", "on-failure"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("PrivateTmp", "yes"),
            ("ProtectHome", "yes"),
            ("ProtectKernelTunables", "yes"),
            ("ProtectKernelModules", "yes"),
            ("ProtectControlGroups", "yes"),
            ("RestrictSUIDSGID", "yes"),
            ("LockPersonality", "yes"),
        ] {
            assert_eq!(one(&s, key, unit), want, "{unit}: {key}");
        }
        let env_files = s.get("EnvironmentFile").cloned().unwrap_or_default();
        assert!(
            env_files.iter().any(|e| e == "-/etc/testarena/env"),
            "{unit}: EnvironmentFile=-/etc/testarena/env missing: {env_files:?}"
        );
        for key in ["After", "Wants"] {
            let v = u.get(key).cloned().unwrap_or_default().join(" ");
            assert!(
                v.split_whitespace().any(|t| t == "network-online.target"),
                "{unit}: {key}= lacks network-online.target: {v:?}"
            );
        }
        assert_eq!(one(&i, "WantedBy", unit), "multi-user.target", "{unit}");
        // A worker gets SIGTERM alone (its queues may finish within the grace period), the
        // rest of its control group SIGKILL at TimeoutStopSec; the server's group gets SIGTERM.
        let kill_mode = if is_worker { "mixed" } else { "control-group" };
        assert_eq!(one(&s, "KillMode", unit), kill_mode, "{unit}");
        let stop = seconds(one(&s, "TimeoutStopSec", unit));
        if is_worker {
            // QEMU's TCG JIT needs writable+executable memory.
            assert!(
                !s.contains_key("MemoryDenyWriteExecute"),
                "{unit}: MemoryDenyWriteExecute breaks QEMU"
            );
            // Room for the grace period (30s by default), then TERM -> KILL of each group.
            assert!(stop >= 40, "{unit}: TimeoutStopSec={stop}s is too short");
        } else {
            assert!(stop >= 5, "{unit}: TimeoutStopSec={stop}s is too short");
        }
    }
    let template = read(&deploy("systemd/testarena-worker@.service"));
    assert!(
        one(&unit_section(&template, "Unit"), "Description", "template").contains("%i"),
        "the template's Description should name the instance"
    );
}

/// The example config, with its paths moved into `dir` and the server on a free port.
fn example_config(dir: &Path) -> PathBuf {
    let text = read(&deploy("config.example.toml"));
    assert!(text.contains("/var/lib/testarena"));
    assert!(text.contains("listen = \"127.0.0.1:8080\""));
    let data = dir.join("data");
    let text = text
        .replace("/var/lib/testarena", &data.display().to_string())
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The unit's ExecStart arguments (after the program), with the config path replaced.
fn unit_args(unit: &str, config: &Path) -> Vec<String> {
    let text = read(&deploy(&format!("systemd/{unit}")));
    let s = unit_section(&text, "Service");
    let exec = one(&s, "ExecStart", unit);
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some(INSTALLED_BIN));
    words
        .map(|w| {
            if w == INSTALLED_CONFIG {
                config.display().to_string()
            } else {
                w.to_string()
            }
        })
        .collect()
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

fn wait_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills a child's process group when dropped, whatever the test did.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's process group has no memory effects.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Starts the unit's command line with the example config; returns it once it runs.
fn start_unit_command(unit: &str, config: &Path) -> Group {
    let mut cmd = testarena();
    cmd.args(unit_args(unit, config))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env("NO_COLOR", "1")
        .process_group(0);
    let mut g = Group(cmd.spawn().expect("start testarena"));
    if unit == "testarena-app.service" {
        let mut lines = BufReader::new(g.0.stdout.take().unwrap()).lines();
        let line = lines
            .find_map(|l| l.ok().filter(|l| l.starts_with("testarena listening on ")))
            .expect("the app unit's command did not start listening");
        assert!(line.contains("127.0.0.1:"), "{line}");
        std::thread::spawn(move || for _ in lines {});
    }
    // Running for a moment; also lets it install its signal handlers, which it does only
    // after announcing the address (a SIGTERM at once would meet the default action).
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        g.0.try_wait().unwrap().is_none(),
        "{unit}: the command exited at once"
    );
    g
}

#[test]
fn example_config_and_unit_command_lines_work() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let out = testarena()
        .args(["migrate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "migrate with the example config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dir.path().join("data/testarena.db").exists(),
        "database_url of the example config is not under data_dir"
    );
    assert_eq!(
        unit_args("testarena-worker.service", &config),
        unit_args("testarena-worker@.service", &config)
    );
    for unit in ["testarena-app.service", "testarena-worker.service"] {
        let mut g = start_unit_command(unit, &config);
        let text = read(&deploy(&format!("systemd/{unit}")));
        let limit = seconds(one(&unit_section(&text, "Service"), "TimeoutStopSec", unit));
        let t = Instant::now();
        sigterm(&g.0);
        let st = wait_within(&mut g.0, Duration::from_secs(limit)).unwrap_or_else(|| {
            panic!("{unit}: still running {limit}s (TimeoutStopSec) after SIGTERM")
        });
        assert!(st.success(), "{unit}: exit {st} after SIGTERM");
        eprintln!("{unit}: stopped {:?} after SIGTERM", t.elapsed());
    }
}

/// `systemctl stop testarena-app` while a dashboard is open: the server must end its live
/// streams and exit, not sit out TimeoutStopSec and be SIGKILLed.
#[tokio::test]
async fn app_stops_promptly_with_live_streams_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let mut cmd = testarena();
    cmd.args(unit_args("testarena-app.service", &config))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    let mut g = Group(cmd.spawn().unwrap());
    let mut lines = BufReader::new(g.0.stdout.take().unwrap()).lines();
    let base = lines
        .find_map(|l| {
            l.ok()
                .and_then(|l| l.strip_prefix("testarena listening on ").map(String::from))
        })
        .expect("listening line");
    std::thread::spawn(move || for _ in lines {});
    let client = reqwest::Client::new();
    let events = client
        .get(format!("{base}/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    // Signal handlers are installed after the address is announced.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    sigterm(&g.0);
    let st = wait_within(&mut g.0, Duration::from_secs(5));
    drop(events);
    let st = st.unwrap_or_else(|| {
        panic!("testarena serve still runs 5 s after SIGTERM with an open /api/v1/events stream: systemd would wait TimeoutStopSec, then SIGKILL it")
    });
    assert!(st.success(), "exit {st}");
    eprintln!(
        "stopped {:?} after SIGTERM with a live stream open",
        t.elapsed()
    );
}

// --- nginx ---------------------------------------------------------------------------------

/// The site file with its upstream and listen lines rewritten; each must occur exactly once.
fn rewrite_site(text: &str, upstream: &str, listen_port: u16) -> String {
    let (mut n_up, mut n_listen) = (0, 0);
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            let indent = &line[..line.len() - line.trim_start().len()];
            match line.trim() {
                "server 127.0.0.1:8080;" => {
                    n_up += 1;
                    format!("{indent}server {upstream};")
                }
                "listen 80;" => {
                    n_listen += 1;
                    format!("{indent}listen 127.0.0.1:{listen_port};")
                }
                _ => line.to_string(),
            }
        })
        .collect();
    assert_eq!(
        n_up, 1,
        "expected one `server 127.0.0.1:8080;` line in the site file"
    );
    assert_eq!(
        n_listen, 1,
        "expected one `listen 80;` line in the site file"
    );
    out.join("\n") + "\n"
}

/// A real nginx in the foreground, in its own process group, all files under one directory.
struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
    stopped: bool,
}

impl Nginx {
    fn start(dir: &Path, upstream: &str) -> Nginx {
        let nginx = tool("nginx", "nginx");
        let port = free_port();
        let site = rewrite_site(&read(&deploy("nginx/testarena.conf")), upstream, port);
        std::fs::write(dir.join("testarena.conf"), site).unwrap();
        // SAFETY: geteuid(2) has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            // Workers must be able to use the temp directories, which only root may enter.
            "user root;"
        } else {
            ""
        };
        let d = dir.display();
        let conf = format!(
            "daemon off;\n{user}\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 256; }}\n\
             http {{\n    access_log {d}/access.log;\n    default_type text/plain;\n\
             \x20   client_body_temp_path {d}/client_body;\n    proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n    include {d}/testarena.conf;\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let check = Command::new(&nginx)
            .arg("-t")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "nginx -t rejects the site:\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let mut cmd = Command::new(&nginx);
        cmd.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0);
        let child = cmd.spawn().expect("start nginx");
        let mut n = Nginx {
            child,
            dir: dir.to_path_buf(),
            port,
            stopped: false,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = n.child.try_wait().unwrap() {
                panic!("nginx exited ({st}):\n{}", n.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx does not listen:\n{}",
                n.error_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// TERM to the master (it stops its workers first), KILL to the group if that takes
    /// over 5 s; returns true if nothing of the group is left.
    fn stop(&mut self) -> bool {
        if !self.stopped {
            self.stopped = true;
            let pgid = self.child.id() as i32;
            sigterm(&self.child);
            if wait_within(&mut self.child, Duration::from_secs(5)).is_none() {
                // SAFETY: kill(2) on our own child's process group has no memory effects.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let _ = self.child.wait();
            }
        }
        let pgid = self.child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            // SAFETY: signal 0 only checks for existence.
            let gone = unsafe { libc::kill(-pgid, 0) } == -1
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if gone || Instant::now() > deadline {
                return gone;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if !self.stop() {
            // SAFETY: kill(2) on our own child's process group has no memory effects.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        }
    }
}

/// Reads an SSE response until `want` appears; returns how long that took from `since`.
async fn read_until(
    resp: &mut reqwest::Response,
    seen: &mut String,
    want: &str,
    since: Instant,
) -> Duration {
    let deadline = since + Duration::from_secs(10);
    while !seen.contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(other) => panic!("stream ended: {other:?}; seen: {seen}"),
            Err(_) => panic!("{want:?} did not arrive within 10 s; seen: {seen}"),
        }
    }
    since.elapsed()
}

fn assert_event_stream(resp: &reqwest::Response, what: &str) {
    assert_eq!(resp.status(), StatusCode::OK, "{what}");
    let h = resp.headers();
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "{what}: {h:?}"
    );
    assert!(
        h.get("content-encoding").is_none(),
        "{what} must not be compressed: {h:?}"
    );
    assert_eq!(
        h.get("x-accel-buffering").map(|v| v.to_str().unwrap()),
        Some("no"),
        "{what}: {h:?}"
    );
}

/// A queue body of exactly `len` bytes (its name too long to be accepted).
fn body_of_len(len: usize) -> String {
    let head = r#"{"repo":"https://git.example.com/fw.git","branch":"main","name":""#;
    let tail = r#""}"#;
    let body = format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()));
    assert_eq!(body.len(), len);
    body
}

/// Decompresses gzip data with the `gzip` program.
fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gzip");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "not valid gzip");
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_site_proxies_live_streams_limits_bodies_and_compresses() {
    let data = tempfile::tempdir().unwrap();
    let app = App::start("serve", data.path(), &[]);
    let upstream = app.base.trim_start_matches("http://").to_string();
    let ngdir = tempfile::tempdir().unwrap();
    let mut nginx = Nginx::start(ngdir.path(), &upstream);
    let ng = nginx.base();
    // No overall timeout: streams stay open; every wait below has its own limit.
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let health = client
        .get(format!("{ng}/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK, "{}", nginx.error_log());

    // 1. Dashboard events: a queue created through nginx shows up within a second.
    let mut events = client
        .get(format!("{ng}/api/v1/events"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_event_stream(&events, "/api/v1/events");
    let t = Instant::now();
    let created = client
        .post(format!("{ng}/api/v1/queues"))
        .json(&json!({"repo": "https://git.example.com/fw.git", "branch": "main", "scenarios": ["a.xml"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let q: Value = created.json().await.unwrap();
    let id = q["id"].as_i64().unwrap();
    let mut seen = String::new();
    let took = read_until(&mut events, &mut seen, &format!("\"id\":{id},"), t).await;
    assert!(seen.contains("event: queue"), "{seen}");
    eprintln!("event: queue through nginx {took:?} after the POST");
    assert!(
        took < LIVE_LIMIT,
        "event took {took:?} through nginx (buffered?)"
    );

    // 2. A queue's live log: each line a worker ships arrives through nginx at once. This
    //    test is the worker: it claims the queue and writes its log's chunks.
    let store = testarena_store::Store::open(&format!(
        "sqlite://{}",
        data.path().join("testarena.db").display()
    ))
    .await
    .unwrap();
    let holder = store
        .claim("test-worker", 60_000)
        .await
        .unwrap()
        .unwrap()
        .holder()
        .unwrap();
    let mut at = 0;
    let mut stream = client
        .get(format!("{ng}/api/v1/queues/{id}/log/stream"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_event_stream(&stream, "the log stream");
    let mut seen = String::new();
    for i in 1..=3 {
        let line = format!("line {i} of the live log through nginx");
        let t = Instant::now();
        let chunk = testarena_store::Chunk {
            name: "queue.log".into(),
            start: at,
            data: format!("{line}\n").into_bytes(),
        };
        at += chunk.data.len() as i64;
        store.put_chunks(id, &holder, &[chunk]).await.unwrap();
        let took = read_until(&mut stream, &mut seen, &line, t).await;
        eprintln!("log line {i} through nginx after {took:?}");
        assert!(
            took < LIVE_LIMIT,
            "log line {i} took {took:?} through nginx (buffered?)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(stream);
    drop(events);

    // 3. Body limit: nginx takes exactly what the server takes (256 KiB) and refuses one byte
    //    more itself, with the API's JSON error.
    let limit = 256 * 1024;
    let at_limit = client
        .post(format!("{ng}/api/v1/queues"))
        .header("content-type", "application/json")
        .body(body_of_len(limit))
        .send()
        .await
        .unwrap();
    assert_eq!(
        at_limit.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "a 256 KiB body must reach the server"
    );
    let v: Value = at_limit.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_input", "{v}");
    let over = client
        .post(format!("{ng}/api/v1/queues"))
        .header("content-type", "application/json")
        .body(body_of_len(limit + 1))
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(over.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = over.json().await.unwrap();
    assert_eq!(v["error"]["code"], "payload_too_large", "{v}");
    assert_eq!(
        v["error"]["message"], "request body is larger than 256 KiB",
        "the 413 should come from nginx, not the server: {v}"
    );

    // 4. Compression of the dashboard's assets and of JSON; the server itself sends plain.
    let mut paths = Vec::new();
    for e in std::fs::read_dir(repo().join("web"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let big = e.metadata().map(|m| m.len() >= 1024).unwrap_or(false);
        if big && (name.ends_with(".css") || name.ends_with(".js")) {
            paths.push(format!("/assets/{name}"));
        }
    }
    for _ in 0..5 {
        let r = client
            .post(format!("{ng}/api/v1/queues"))
            .json(&json!({"repo": "https://git.example.com/fw.git", "branch": "main", "scenarios": ["a.xml", "b.xml"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    paths.push("/api/v1/queues".to_string());
    let mut compressed = 0;
    for path in &paths {
        let direct = client
            .get(app.url(path))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        if direct.status() == StatusCode::NOT_FOUND && path.starts_with("/assets/") {
            eprintln!("{path}: not embedded in this binary, skipped");
            continue;
        }
        assert_eq!(direct.status(), StatusCode::OK, "{path}");
        assert!(
            direct.headers().get("content-encoding").is_none(),
            "{path}: the server compresses itself"
        );
        let ctype = direct.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        let plain = direct.bytes().await.unwrap();
        let r = client
            .get(format!("{ng}{path}"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers().clone();
        assert_eq!(
            h.get("content-encoding").map(|v| v.to_str().unwrap()),
            Some("gzip"),
            "{path} ({ctype}, {} bytes) is not gzipped by nginx: {h:?}",
            plain.len()
        );
        assert!(
            h.get("vary")
                .is_some_and(|v| v.to_str().unwrap().contains("Accept-Encoding")),
            "{path}: {h:?}"
        );
        let body = r.bytes().await.unwrap();
        if path.starts_with("/assets/") {
            assert_eq!(gunzip(&body), plain.to_vec(), "{path}");
        } else {
            let v: Value = serde_json::from_slice(&gunzip(&body)).expect("gzipped JSON");
            assert!(v["queues"].as_array().unwrap().len() >= 6, "{v}");
        }
        eprintln!(
            "{path} ({ctype}): {} -> {} bytes through nginx",
            plain.len(),
            body.len()
        );
        compressed += 1;
    }
    assert!(compressed >= 1);
    // Without Accept-Encoding, plain.
    let r = client
        .get(format!("{ng}/api/v1/queues"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());

    // 5. nginx goes away entirely: master and workers.
    assert!(nginx.stop(), "nginx processes are left after stopping it");
}

// --- install.sh ----------------------------------------------------------------------------

fn run_install(root: &Path, binary: &Path) -> std::process::Output {
    let out = Command::new("bash")
        .arg(deploy("install.sh"))
        .arg(binary)
        .env("ROOT", root)
        .env_remove("DESTDIR")
        .stdin(Stdio::null())
        .output()
        .expect("run install.sh");
    eprintln!(
        "install.sh: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn install_sh_stages_everything_and_is_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let out = run_install(r, Path::new(bin()));
    assert!(out.status.success(), "first run failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("systemctl enable --now testarena-app testarena-worker"),
        "no next steps: {stdout}"
    );

    let installed = r.join("usr/local/bin/testarena");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(bin()).unwrap()
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "binary mode {mode:o}");
        let mode = std::fs::metadata(r.join("etc/testarena/config.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o007,
            0,
            "config.toml must not be world-readable: {mode:o}"
        );
    }
    for u in UNITS {
        assert_eq!(
            read(&r.join("etc/systemd/system").join(u)),
            read(&deploy(&format!("systemd/{u}"))),
            "{u}"
        );
    }
    assert_eq!(
        read(&r.join("etc/testarena/config.toml")),
        read(&deploy("config.example.toml"))
    );
    assert!(r.join("etc/testarena/env").is_file());
    assert!(r.join("var/lib/testarena").is_dir());

    // The admin's edits survive a second run; the units and the binary are refreshed.
    let edited = "# edited by the admin\nlisten = \"127.0.0.1:9999\"\n";
    std::fs::write(r.join("etc/testarena/config.toml"), edited).unwrap();
    std::fs::write(r.join("etc/testarena/env"), "TESTARENA_LOG=debug\n").unwrap();
    std::fs::write(r.join("etc/systemd/system/testarena-app.service"), "stale").unwrap();
    std::fs::write(&installed, "old binary").unwrap();
    let out = run_install(r, Path::new(bin()));
    assert!(out.status.success(), "second run failed");
    assert_eq!(read(&r.join("etc/testarena/config.toml")), edited);
    assert_eq!(read(&r.join("etc/testarena/env")), "TESTARENA_LOG=debug\n");
    assert_eq!(
        read(&r.join("etc/systemd/system/testarena-app.service")),
        read(&deploy("systemd/testarena-app.service"))
    );
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(bin()).unwrap()
    );
    // A third run with nothing to do changes nothing.
    let out = run_install(r, Path::new(bin()));
    assert!(out.status.success(), "third run failed");
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    assert_eq!(read(&r.join("etc/testarena/config.toml")), edited);
    // No stray temporary files.
    for d in ["etc/testarena", "usr/local/bin"] {
        for e in std::fs::read_dir(r.join(d)).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(
                !n.ends_with(".tmp") && !n.ends_with(".new"),
                "left behind: {d}/{n}"
            );
        }
    }

    // A missing binary is an error, not a half installation.
    let empty = tempfile::tempdir().unwrap();
    let out = run_install(empty.path(), &r.join("no-such-binary"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-binary"));
    assert!(
        !empty.path().join("etc").exists(),
        "wrote files before failing"
    );
}
