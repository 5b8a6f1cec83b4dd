//! A farm spread over network namespaces (issue 12): two `serve` replicas on the host and two
//! `worker` processes, each in a network namespace of its own (`ip netns`, a veth pair) with its
//! own data directory, reaching PostgreSQL only over its veth address. PostgreSQL listens on
//! 127.0.0.1 only and is left as it is: the test forwards TCP from the host end of each veth to
//! it. A real QEMU queue of the example firmware runs, and its console streams live, identical,
//! from both replicas, which share nothing with the workers or each other but the database.
//!
//! The setup and the verdict are asserted at once; the checks of what the replicas serve (the
//! live stream, the plain log, case logs, JUnit) are collected and reported together at the end.
//!
//! Needs root (`ip netns`), PostgreSQL, the Xtensa cross compiler and QEMU (`make deps`): it
//! fails, never skips, without them.

mod common;

use common::{App, Database};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testarena_client::{CaseStatus, NewQueue, QueueStatus};

/// Where PostgreSQL listens (on the host's loopback only).
const POSTGRES: &str = "127.0.0.1:5432";

/// How long the queue may take, from submit to its verdict.
const QUEUE_WITHIN: Duration = Duration::from_secs(150);

/// Console lines the example firmware prints during [`SCENARIOS`], in this order.
const CONSOLE_LINES: &[&str] = &[
    " | ready",
    " | pong",
    " | hello from testarena",
    " | line 1 the quick brown fox jumps over the lazy dog",
    " | line 100 the quick brown fox jumps over the lazy dog",
    " | spam done",
    " | ERROR: unknown command 'frobnicate'",
    " | live start",
    " | live end",
];

/// Runs `program args`; its output, or a panic saying what could not be run.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} {args:?}: {e}"))
}

/// Runs `ip args`; panics with `why` and ip's own words unless it succeeds.
fn ip(args: &[&str], why: &str) -> String {
    let out = run("ip", args);
    assert!(
        out.status.success(),
        "{why}: `ip {}` failed ({}): {}. This test needs `ip netns` (root, iproute2, veth): it \
         does not skip without it",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The prefix of this test's namespace names; the pid that made one follows it.
const NS_PREFIX: &str = "tarena-";

/// A network namespace with `lo` and one end of a veth pair (`ns_ip`/24); the other end
/// (`host_ip`/24) stays on the host. Dropping it kills every process inside, deletes the
/// namespace and the veth pair.
struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

impl Netns {
    /// Namespace number `k` (0 or 1) of this test process.
    fn create(k: u8) -> Netns {
        let pid = std::process::id();
        // Interface names have at most 15 bytes; the subnet follows the pid, so two test
        // processes at once do not clash.
        let tag = format!("{}{k}", pid % 10_000_000);
        let octet = (pid % 100) as u8 * 2 + k;
        let ns = Netns {
            name: format!("{NS_PREFIX}{pid}-{k}"),
            host_if: format!("tah{tag}"),
            ns_if: format!("tan{tag}"),
            host_ip: Ipv4Addr::new(10, 213, octet, 1),
            ns_ip: Ipv4Addr::new(10, 213, octet, 2),
        };
        let why = format!("creating network namespace {}", ns.name);
        ip(&["netns", "add", &ns.name], &why);
        // From here on, Drop cleans up whatever exists.
        ip(
            &[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns.ns_if,
            ],
            &why,
        );
        ip(&["link", "set", &ns.ns_if, "netns", &ns.name], &why);
        ip(
            &[
                "addr",
                "add",
                &format!("{}/24", ns.host_ip),
                "dev",
                &ns.host_if,
            ],
            &why,
        );
        ip(&["link", "set", &ns.host_if, "up"], &why);
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", ns.name.as_str()];
            all.extend_from_slice(args);
            ip(&all, &why);
        };
        inside(&["addr", "add", &format!("{}/24", ns.ns_ip), "dev", &ns.ns_if]);
        inside(&["link", "set", &ns.ns_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }

    /// A command run inside the namespace (`ip netns exec NAME program`).
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// The interfaces inside the namespace.
    fn links(&self) -> Vec<String> {
        ip(
            &["-n", &self.name, "-o", "link", "show"],
            "listing the namespace's links",
        )
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|name| name.trim().split('@').next().unwrap_or("").to_string())
        .collect()
    }

    /// Whether a TCP connection to `addr` succeeds from inside the namespace.
    fn can_connect(&self, addr: SocketAddr) -> bool {
        let script = format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port());
        let out = self
            .command("timeout")
            .args(["5", "bash", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec");
        out.status.success()
    }

    /// (device, inode) of the namespace, as `/proc/PID/ns/net` of a process inside shows it.
    fn id(&self) -> (u64, u64) {
        let m = std::fs::metadata(format!("/run/netns/{}", self.name)).unwrap();
        (m.dev(), m.ino())
    }

    /// Pids of the processes inside.
    fn pids(&self) -> Vec<i32> {
        let out = run("ip", &["netns", "pids", &self.name]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for _ in 0..20 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = run("ip", &["netns", "del", &self.name]);
        // Gone with the namespace's end of the pair; removed here too in case it lingers.
        let _ = run("ip", &["link", "del", &self.host_if]);
    }
}

/// Deletes the namespaces (and their veth pairs) an earlier run of this test left behind when
/// it was killed before its clean-up: those whose pid is gone.
fn remove_stale_namespaces() {
    let out = run("ip", &["netns", "list"]);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some((pid, k)) = rest.split_once('-') else {
            continue;
        };
        if pid.parse::<u32>().is_err() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let pid: u32 = pid.parse().unwrap();
        drop(Netns {
            name: name.to_string(),
            host_if: format!("tah{}{k}", pid % 10_000_000),
            ns_if: String::new(),
            host_ip: Ipv4Addr::UNSPECIFIED,
            ns_ip: Ipv4Addr::UNSPECIFIED,
        });
    }
}

/// A TCP forwarder on the host: accepts on `addr` (a veth's host end) and pipes each
/// connection to PostgreSQL. Stops when dropped.
struct Forwarder {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(ip: Ipv4Addr) -> Forwarder {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("forwarder cannot listen on {ip}: {e}"));
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                pipes.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(POSTGRES).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                // Forget the pipes that ended.
                while pipes.try_join_next().is_some() {}
            }
        });
        Forwarder {
            addr,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // Dropping the task drops its JoinSet, which aborts every pipe.
        self.task.abort();
    }
}

/// A `testarena worker` inside a namespace, its stderr in a file; SIGKILLed with its process
/// group when dropped.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(ns: &Netns, database: &str, data: &Path, repos: &Path, log: PathBuf) -> Worker {
        let file = std::fs::File::create(&log).unwrap();
        // `ip netns exec` execs the program: the child's pid is the worker's.
        let mut cmd = ns.command(env!("CARGO_BIN_EXE_testarena"));
        cmd.arg("worker")
            .arg("--data-dir")
            .arg(data)
            .args(["--database", database, "--concurrency", "1"])
            .arg("--allow-local-repos")
            .arg(repos)
            .env_remove("TESTARENA_DATABASE_URL")
            .env_remove("TESTARENA_DATA_DIR")
            .env("TESTARENA_CONFIG", "/dev/null")
            .env("TESTARENA_LOG", "info,sqlx=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file));
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("start the worker");
        Worker { child, log }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's process group has no memory effects.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Kills every process working under a directory when dropped.
struct KillUnder(PathBuf);

impl Drop for KillUnder {
    fn drop(&mut self) {
        common::kill_processes_under(&self.0);
    }
}

/// (device, inode) of the network namespace process `pid` is in.
fn netns_of(pid: i32) -> Option<(u64, u64)> {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    Some((m.dev(), m.ino()))
}

/// A scenario beside the example's own: a console line, then seconds of quiet before the
/// queue ends, so a line that streams live arrives while the queue still runs.
const LIVE_SCENARIO: &str = r#"<scenario name="live" timeout="60">
  <testcase id="TC_LIVE" timeout="30">
    <send>echo live start</send><expect timeout="5">^live start$</expect>
    <sleep ms="4000"/>
    <send>echo live end</send><expect timeout="5">^live end$</expect>
  </testcase>
</scenario>"#;

/// Lines that must stream while the queue still runs: the first console line (the first
/// boot's), and the live scenario's first, 4 s before the queue ends.
const LIVE_MARKERS: &[&str] = &[" | ", " | live start"];

/// The scenarios the queue runs: the example's smoke test (5 cases), then the live one.
const SCENARIOS: &[&str] = &["scenarios/smoke.xml", "checks/live.xml"];

/// The example firmware, with [`LIVE_SCENARIO`] added, committed on `main` of a local
/// repository under `repos/fw`.
fn firmware_repo(repos: &Path) -> PathBuf {
    let dir = repos.join("fw");
    common::copy_demo_firmware(&dir);
    common::git_repo(&dir, &[("checks/live.xml", LIVE_SCENARIO)]);
    dir
}

/// A process on the host: its pid, parent, command line, working directory and the
/// `TESTARENA_WORKSPACE` it was given.
#[derive(Debug, Clone)]
struct Proc {
    pid: i32,
    ppid: i32,
    cmdline: String,
    cwd: Option<PathBuf>,
    workspace: Option<String>,
}

fn processes() -> Vec<Proc> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command name in parentheses: state, ppid, ...
        let mut rest = stat.rsplit(')').next().unwrap_or("").split_whitespace();
        let state = rest.next().unwrap_or("");
        if state == "Z" {
            continue;
        }
        let ppid = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let workspace = String::from_utf8_lossy(&environ)
            .split('\0')
            .find_map(|v| v.strip_prefix("TESTARENA_WORKSPACE="))
            .map(str::to_string);
        found.push(Proc {
            pid,
            ppid,
            cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
            cwd: std::fs::read_link(entry.path().join("cwd")).ok(),
            workspace,
        });
    }
    found
}

/// The QEMU processes working for a queue under `root` (by working directory or workspace).
fn qemus_under(all: &[Proc], root: &Path) -> Vec<Proc> {
    all.iter()
        .filter(|p| p.cmdline.contains("qemu-system"))
        .filter(|p| {
            p.cwd.as_ref().is_some_and(|c| c.starts_with(root))
                || p.workspace
                    .as_ref()
                    .is_some_and(|w| Path::new(w).starts_with(root))
        })
        .cloned()
        .collect()
}

/// Whether `ancestor` is `pid` or one of its ancestors.
fn descends_from(all: &[Proc], mut pid: i32, ancestor: i32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        match all.iter().find(|p| p.pid == pid) {
            Some(p) if p.ppid > 1 => pid = p.ppid,
            _ => return false,
        }
    }
    false
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
}

/// What a live log stream delivered, as it arrived.
#[derive(Debug, Default)]
struct Followed {
    events: Vec<SseEvent>,
    /// The queue's status (asked from the same replica) when the first line with each of
    /// [`LIVE_MARKERS`] arrived.
    status_at: Vec<(&'static str, Option<QueueStatus>)>,
    /// Whether the `end` event came.
    ended: bool,
    /// Why the stream stopped otherwise.
    error: Option<String>,
}

impl Followed {
    /// The log text the `log` events carried: each event's lines, each with its newline.
    fn text(&self) -> String {
        self.events
            .iter()
            .filter(|e| e.event == "log")
            .map(|e| format!("{}\n", e.data))
            .collect()
    }
}

/// Splits complete events off the front of `buf` (the SSE wire format: fields, then a blank
/// line; `:` starts a comment, the keep-alives).
fn take_events(buf: &mut Vec<u8>) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
        let block: Vec<u8> = buf.drain(..end + 2).collect();
        let block = String::from_utf8_lossy(&block);
        let mut event = SseEvent {
            event: "message".into(),
            id: None,
            data: String::new(),
        };
        let mut data: Vec<&str> = Vec::new();
        let mut any = false;
        for line in block.split('\n').filter(|l| !l.is_empty()) {
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            any = true;
            match field {
                "event" => event.event = value.to_string(),
                "id" => event.id = Some(value.to_string()),
                "data" => data.push(value),
                _ => {}
            }
        }
        if any {
            event.data = data.join("\n");
            events.push(event);
        }
    }
    events
}

/// Follows `GET /api/v1/queues/{id}/log/stream?offset=0` of the replica at `base` until its
/// `end`, recording into `into` as events arrive.
async fn follow_log(
    base: String,
    api: testarena_client::Client,
    id: i64,
    into: Arc<Mutex<Followed>>,
) {
    // No overall timeout: the stream lasts as long as the queue (the caller bounds it).
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("{base}/api/v1/queues/{id}/log/stream?offset=0");
    let fail = |why: String| into.lock().unwrap().error = Some(why);
    let mut resp = match http.get(&url).send().await {
        Ok(r) if r.status() == 200 => r,
        Ok(r) => {
            let status = r.status();
            return fail(format!(
                "{url}: {status} {}",
                r.text().await.unwrap_or_default()
            ));
        }
        Err(e) => return fail(format!("{url}: {e}")),
    };
    let mut buf = Vec::new();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => return fail("the stream closed before its `end` event".into()),
            Err(e) => return fail(format!("reading the stream: {e}")),
        };
        buf.extend_from_slice(&chunk);
        for event in take_events(&mut buf) {
            let end = event.event == "end";
            let mut marked = Vec::new();
            {
                let mut into = into.lock().unwrap();
                if event.event == "log" {
                    for marker in LIVE_MARKERS {
                        if event.data.contains(marker)
                            && !into.status_at.iter().any(|(m, _)| m == marker)
                        {
                            marked.push(*marker);
                        }
                    }
                }
                into.events.push(event);
            }
            for marker in marked {
                let status = api.queue(id).await.map(|q| q.status).ok();
                into.lock().unwrap().status_at.push((marker, status));
            }
            if end {
                into.lock().unwrap().ended = true;
                return;
            }
        }
    }
}

/// The whole plain log of queue `id` from a replica, following `X-Next-Offset`.
async fn plain_log(app: &App, id: i64) -> Result<Vec<u8>, String> {
    let mut all = Vec::new();
    let mut offset = 0;
    for _ in 0..1_000 {
        let chunk = app
            .api
            .queue_log(id, offset)
            .await
            .map_err(|e| format!("GET /api/v1/queues/{id}/log?offset={offset}: {e}"))?;
        if chunk.data.is_empty() {
            return Ok(all);
        }
        offset = chunk.next;
        all.extend_from_slice(&chunk.data);
    }
    Err("the log did not end after 1000 chunks".into())
}

/// Raw `GET path` from a replica: the status and the body.
async fn get(app: &App, path: &str) -> (u16, String) {
    match app.http.get(app.url(path)).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, format!("GET {path}: {e}")),
    }
}

/// Assertions that are collected, not fatal at once: every failed one is reported together
/// at the end, after the clean-up.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let what = what();
            eprintln!("CHECK FAILED: {what}");
            self.failed.push(what);
        }
    }
}

/// `text` in short, for failure messages: its size and its first and last lines.
fn preview(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= 12 {
        return format!("{} bytes: {text:?}", text.len());
    }
    format!(
        "{} bytes, {} lines, first: {:?} ... last: {:?}",
        text.len(),
        lines.len(),
        &lines[..6],
        &lines[lines.len() - 6..]
    )
}

/// Whether every one of `wanted` is in `text` (each as part of a line), in this order.
fn in_order(text: &str, wanted: &[&str]) -> Result<(), String> {
    let mut lines = text.lines();
    for w in wanted {
        if !lines.by_ref().any(|l| l.contains(w)) {
            return Err(format!("no line with {w:?} (after the ones before it)"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_stream_the_console_of_a_qemu_queue_run_by_workers_in_their_own_namespaces() {
    let started = Instant::now();
    remove_stale_namespaces();
    let root = tempfile::tempdir().unwrap();
    let root_path = std::fs::canonicalize(root.path()).unwrap();
    // Dropped after the workers and replicas (declared later), also on a failed assertion:
    // what still works in a checkout here (a sandboxed emulator outside the namespaces) dies.
    let _leftovers = KillUnder(root_path.clone());
    let repos = root_path.join("repos");
    let repo = firmware_repo(&repos);
    let db = Database::new("netns").await;

    // Two namespaces, each with only `lo` and its veth end; a forwarder on each veth's host end.
    let namespaces = [Netns::create(0), Netns::create(1)];
    let mut forwarders = Vec::new();
    for ns in &namespaces {
        forwarders.push(Forwarder::start(ns.host_ip).await);
    }
    let postgres: SocketAddr = POSTGRES.parse().unwrap();
    for (ns, fwd) in namespaces.iter().zip(&forwarders) {
        let mut links = ns.links();
        links.sort();
        let mut want = vec!["lo".to_string(), ns.ns_if.clone()];
        want.sort();
        assert_eq!(links, want, "namespace {} has other links", ns.name);
        let routes = ip(&["-n", &ns.name, "-4", "route", "show"], "routes");
        assert!(
            !routes.contains("default"),
            "namespace {} has a default route: {routes}",
            ns.name
        );
        // Its loopback is its own: PostgreSQL on the host's loopback is out of reach...
        assert!(
            !ns.can_connect(postgres),
            "{POSTGRES} is reachable from inside namespace {}: a worker there would not need \
             the veth",
            ns.name
        );
        // ...and the forwarder on the veth's host end is in reach.
        assert!(
            ns.can_connect(fwd.addr),
            "the forwarder {} is unreachable from inside namespace {} (its address {})",
            fwd.addr,
            ns.name,
            ns.ns_ip
        );
    }
    // The probes above were connections too: count the workers' from here.
    let probes: Vec<usize> = forwarders.iter().map(Forwarder::accepted).collect();

    // Two replicas on the host, each with its own data directory; the database is all they share.
    let allow = repos.to_str().unwrap();
    let serve = |name: &str| {
        App::start(
            "serve",
            &root_path.join(name),
            &["--database", &db.url, "--allow-local-repos", allow],
        )
    };
    // One after the other: the first migrates the database.
    let replicas = [serve("replica-a"), serve("replica-b")];

    // A worker in each namespace, each with its own data directory, on PostgreSQL through its
    // namespace's forwarder.
    let workers: Vec<Worker> = namespaces
        .iter()
        .zip(&forwarders)
        .enumerate()
        .map(|(k, (ns, fwd))| {
            let url = format!("postgres://postgres@{}/{}", fwd.addr, db.name);
            Worker::start(
                ns,
                &url,
                &root_path.join(format!("worker-{k}")),
                &repos,
                root_path.join(format!("worker-{k}.log")),
            )
        })
        .collect();
    // `ip netns exec` enters the namespace, then execs the worker (same pid).
    for (w, ns) in workers.iter().zip(&namespaces) {
        let since = Instant::now();
        while netns_of(w.pid()) != Some(ns.id()) {
            assert!(
                since.elapsed() < Duration::from_secs(5),
                "worker {} is not in namespace {}:\n{}",
                w.pid(),
                ns.name,
                w.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Both register, as either replica shows.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut worker_ids: Vec<String> = workers
        .iter()
        .map(|w| format!("{hostname}-{}", w.pid()))
        .collect();
    worker_ids.sort();
    for replica in &replicas {
        let since = Instant::now();
        loop {
            let mut ids: Vec<String> = match replica.api.workers().await {
                Ok(list) => list.workers.into_iter().map(|w| w.id).collect(),
                Err(_) => Vec::new(),
            };
            ids.sort();
            if ids == worker_ids {
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "{} lists workers {ids:?}, not {worker_ids:?}\nworker logs:\n{}",
                replica.base,
                workers
                    .iter()
                    .map(Worker::log)
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for ((fwd, probes), ns) in forwarders.iter().zip(&probes).zip(&namespaces) {
        assert!(
            fwd.accepted() > *probes,
            "the worker in {} never connected through its forwarder {}",
            ns.name,
            fwd.addr
        );
    }
    eprintln!(
        "[{:?}] namespaces, forwarders, 2 replicas and 2 workers up",
        started.elapsed()
    );

    // One real QEMU queue of the example firmware.
    let mut new = NewQueue::new(repo.to_str().unwrap(), "main");
    new.scenarios = Some(SCENARIOS.iter().map(|s| s.to_string()).collect());
    let id = replicas[0].submit(&new).await.id;
    // Its console, live, from both replicas, from offset 0.
    let followed: Vec<Arc<Mutex<Followed>>> = (0..2).map(|_| Arc::default()).collect();
    let mut streams = Vec::new();
    for (replica, into) in replicas.iter().zip(&followed) {
        streams.push(tokio::spawn(follow_log(
            replica.base.clone(),
            replica.api.clone(),
            id,
            into.clone(),
        )));
    }

    // Wait for the verdict (asking the other replica), watching for its emulator.
    let mut emulators: Vec<(Proc, Option<usize>)> = Vec::new();
    let since = Instant::now();
    let q = loop {
        let all = processes();
        for qemu in qemus_under(&all, &root_path) {
            if !emulators.iter().any(|(p, _)| p.pid == qemu.pid) {
                let under = workers
                    .iter()
                    .position(|w| descends_from(&all, qemu.pid, w.pid()));
                emulators.push((qemu, under));
            }
        }
        let q = replicas[1]
            .api
            .queue(id)
            .await
            .unwrap_or_else(|e| panic!("queue {id}: {e}"));
        if q.status.is_finished() {
            break q;
        }
        assert!(
            since.elapsed() < QUEUE_WITHIN,
            "queue {id} did not finish in {QUEUE_WITHIN:?}: {q:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "[{:?}] queue {id} {:?} after {:?}",
        started.elapsed(),
        q.status,
        since.elapsed()
    );

    // It passed, every case passed, on one of our workers, in real QEMU under that worker.
    let worker_logs = || {
        workers
            .iter()
            .map(Worker::log)
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert_eq!(
        q.status,
        QueueStatus::Passed,
        "{q:#?}\nworker logs:\n{}",
        worker_logs()
    );
    let cases: Vec<_> = q.tasks.iter().flat_map(|t| t.cases.iter()).collect();
    assert_eq!(cases.len(), 6, "{q:#?}");
    assert!(
        cases.iter().all(|c| c.status == CaseStatus::Passed),
        "{q:#?}"
    );
    let ran_on = q.worker.clone().expect("a finished queue keeps its worker");
    let runner = workers
        .iter()
        .position(|w| format!("{hostname}-{}", w.pid()) == ran_on)
        .unwrap_or_else(|| panic!("queue {id} ran on {ran_on}, none of {worker_ids:?}"));
    assert!(
        !emulators.is_empty(),
        "no qemu-system process was seen working for queue {id}"
    );
    for (qemu, under) in &emulators {
        assert_eq!(
            *under,
            Some(runner),
            "QEMU {qemu:?} did not run under the worker that ran the queue ({ran_on}, in {})",
            namespaces[runner].name
        );
    }
    // The other replica says the same.
    let seen_by_a = replicas[0].api.queue(id).await.unwrap();
    assert_eq!(seen_by_a.status, q.status);
    assert_eq!(seen_by_a.tasks, q.tasks);

    // No emulator is left.
    let since = Instant::now();
    loop {
        let left = qemus_under(&processes(), &root_path);
        if left.is_empty() {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "QEMU still runs after queue {id} finished: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The logs, through both replicas: collected, then reported together after the clean-up.
    let mut checks = Checks::default();
    // Each stream ends soon after the verdict.
    for (k, stream) in streams.into_iter().enumerate() {
        let waited = tokio::time::timeout(Duration::from_secs(30), stream).await;
        if waited.is_err() {
            followed[k].lock().unwrap().error =
                Some("no `end` event within 30 s after the queue finished".into());
        }
    }
    let followed: Vec<Followed> = followed
        .iter()
        .map(|f| std::mem::take(&mut *f.lock().unwrap()))
        .collect();
    let names = ["replica a", "replica b"];
    let texts: Vec<String> = followed.iter().map(Followed::text).collect();
    for (k, f) in followed.iter().enumerate() {
        eprintln!(
            "{}: {} events, {} bytes of log, ended: {}, error: {:?}, queue status when lines \
             arrived: {:?}",
            names[k],
            f.events.len(),
            texts[k].len(),
            f.ended,
            f.error,
            f.status_at
        );
        checks.check(f.ended && f.error.is_none(), || {
            format!(
                "{}: the live stream did not end with `end`: {:?}",
                names[k], f.error
            )
        });
        checks.check(!texts[k].is_empty(), || {
            format!(
                "{}: the live stream carried no log lines (events: {:?})",
                names[k], f.events
            )
        });
        for marker in LIVE_MARKERS {
            let status = f.status_at.iter().find(|(m, _)| m == marker).map(|s| s.1);
            checks.check(
                status == Some(Some(QueueStatus::Running)),
                || match status {
                    None => format!("{}: no line with {marker:?} streamed at all", names[k]),
                    Some(then) => format!(
                    "{}: the first line with {marker:?} streamed only once the queue was {then:?}, \
                     not live",
                    names[k]
                ),
                },
            );
        }
        if let Err(e) = in_order(&texts[k], CONSOLE_LINES) {
            checks.check(false, || {
                format!(
                    "{}: the live stream lacks the console lines in order: {e}; it has {}",
                    names[k],
                    preview(&texts[k])
                )
            });
        }
    }
    checks.check(texts[0] == texts[1], || {
        format!(
            "the live streams differ: replica a {}; replica b {}",
            preview(&texts[0]),
            preview(&texts[1])
        )
    });
    // Their last ids (the offset after the last line) agree too.
    let last_ids: Vec<Option<String>> = followed
        .iter()
        .map(|f| f.events.last().and_then(|e| e.id.clone()))
        .collect();
    checks.check(last_ids[0] == last_ids[1], || {
        format!("the streams end at different offsets: {last_ids:?}")
    });

    // The plain log: the same bytes from both, and what the streams carried.
    let mut plain = Vec::new();
    for (k, replica) in replicas.iter().enumerate() {
        match plain_log(replica, id).await {
            Ok(bytes) => plain.push(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) => {
                checks.check(false, || format!("{}: {e}", names[k]));
                plain.push(String::new());
            }
        }
    }
    for (k, text) in plain.iter().enumerate() {
        checks.check(!text.is_empty(), || {
            format!("{}: GET /api/v1/queues/{id}/log is empty", names[k])
        });
        if let Err(e) = in_order(text, CONSOLE_LINES) {
            checks.check(false, || {
                format!(
                    "{}: GET /api/v1/queues/{id}/log lacks the console lines in order: {e}; it \
                     has {}",
                    names[k],
                    preview(text)
                )
            });
        }
        checks.check(*text == texts[k], || {
            format!(
                "{}: the plain log and the live stream differ: plain {}; stream {}",
                names[k],
                preview(text),
                preview(&texts[k])
            )
        });
    }
    checks.check(plain[0] == plain[1], || {
        format!(
            "GET /api/v1/queues/{id}/log differs: replica a {}; replica b {}",
            preview(&plain[0]),
            preview(&plain[1])
        )
    });

    // Each case's log (text and HTML) and the JUnit report, from both.
    let mut paths: Vec<(String, &str)> = Vec::new();
    for c in &cases {
        paths.push((c.log_url.clone(), "| "));
        paths.push((c.html_url.clone(), c.id.as_str()));
    }
    paths.push((format!("/api/v1/queues/{id}/junit.xml"), "TC_LIVE"));
    for (path, says) in &paths {
        let mut bodies = Vec::new();
        for (k, replica) in replicas.iter().enumerate() {
            let (status, body) = get(replica, path).await;
            checks.check(status == 200 && body.contains(says), || {
                format!(
                    "{}: GET {path}: {status}, wanted 200 saying {says:?}: {}",
                    names[k],
                    preview(&body)
                )
            });
            bodies.push(body);
        }
        checks.check(bodies[0] == bodies[1], || {
            format!("GET {path} differs between the replicas")
        });
    }

    // Clean-up: workers first (then nothing of theirs may run), replicas, the database; the
    // namespaces and forwarders go when dropped, also on a failed assertion above.
    drop(workers);
    let left = qemus_under(&processes(), &root_path);
    assert!(left.is_empty(), "QEMU left after the workers: {left:?}");
    for replica in replicas {
        assert!(replica.stop().success());
    }
    db.drop_now().await;
    drop(forwarders);
    let names_ns: Vec<String> = namespaces.iter().map(|n| n.name.clone()).collect();
    drop(namespaces);
    let list = String::from_utf8_lossy(&run("ip", &["netns", "list"]).stdout).into_owned();
    for name in &names_ns {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "namespace {name} is still there: {list}"
        );
    }
    eprintln!("[{:?}] done", started.elapsed());
    assert!(
        checks.failed.is_empty(),
        "{} log check(s) failed:\n- {}",
        checks.failed.len(),
        checks.failed.join("\n- ")
    );
}
