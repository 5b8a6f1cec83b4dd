//! Tests of `sandbox`.

use super::*;
use crate::process::{self, Outcome};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A data dir with a "database" and a workspace inside it, as the worker lays them out.
struct Layout {
    _root: tempfile::TempDir,
    data: PathBuf,
    work: PathBuf,
}

fn layout() -> Layout {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let work = data.join("queues/1/work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(data.join("testarena.db"), "secret rows").unwrap();
    std::fs::create_dir_all(data.join("queues/2/work")).unwrap();
    std::fs::write(data.join("queues/2/work/other.txt"), "other queue").unwrap();
    Layout {
        _root: root,
        data,
        work,
    }
}

fn sandbox(l: &Layout, network: Network) -> Sandbox {
    let cfg = SandboxConfig::bwrap(l.data.clone());
    cfg.check()
        .expect("bubblewrap must work here (make test installs it)");
    Sandbox::new(
        Arc::new(cfg),
        Jail {
            writable: vec![l.work.clone()],
            readable: Vec::new(),
            network,
            env: vec![("FROM_JAIL".into(), "yes".into())],
        },
    )
}

/// Runs `script` in the sandbox; its exit code and output lines.
async fn run(sb: &Sandbox, l: &Layout, script: &str) -> (i32, String) {
    let spec = sb.wrap(Spec::shell(script).with_cwd(&l.work));
    let mut out = String::new();
    let mut on_line = |b: &[u8]| {
        out.push_str(&String::from_utf8_lossy(b));
        out.push('\n');
    };
    let outcome = process::run(
        &spec,
        Duration::from_secs(20),
        &CancellationToken::new(),
        &mut on_line,
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    match outcome {
        Outcome::Exited(code) => (code, out),
        other => panic!("{other:?}: {out}"),
    }
}

#[tokio::test]
async fn the_environment_is_an_allow_list_plus_the_jail() {
    let l = layout();
    // cargo sets this for the test process; it stands for any secret of the worker's.
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
    let (code, out) = run(&sandbox(&l, Network::Host), &l, "env").await;
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("CARGO_MANIFEST_DIR"), "{out}");
    assert!(out.contains("FROM_JAIL=yes"), "{out}");
    assert!(out.contains("PATH="), "{out}");
    assert!(out.contains("HOME=/tmp/home"), "{out}");
}

#[tokio::test]
async fn only_the_workspace_is_visible_and_writable() {
    let l = layout();
    let sb = sandbox(&l, Network::Host);
    let db = l.data.join("testarena.db");
    let other = l.data.join("queues/2/work/other.txt");
    let script = format!(
        "cat /etc/shadow; cat {db}; cat {other}; ls /etc/testarena; \
         touch /usr/x /etc/x /x; echo made > inside.txt; echo tmp > /tmp/t && cat /tmp/t; id -u",
        db = db.display(),
        other = other.display()
    );
    let (_, out) = run(&sb, &l, &script).await;
    assert!(!out.contains("secret rows"), "{out}");
    assert!(!out.contains("other queue"), "{out}");
    assert!(!out.contains("root:"), "{out}");
    assert!(out.contains("tmp"), "{out}");
    assert_eq!(
        std::fs::read_to_string(l.work.join("inside.txt")).unwrap(),
        "made\n"
    );
    assert!(!Path::new("/usr/x").exists() && !Path::new("/x").exists());
    assert_eq!(std::fs::read_to_string(&db).unwrap(), "secret rows");
}

#[tokio::test]
async fn nothing_outlives_the_command_not_even_a_new_session() {
    let l = layout();
    let marker = "sleep 9876";
    let (code, out) = run(
        &sandbox(&l, Network::Host),
        &l,
        &format!("setsid {marker} & nohup {marker} >/dev/null 2>&1 & echo started"),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(processes_running(marker), 0);
}

/// Processes whose command line is `cmd` (words separated by spaces).
fn processes_running(cmd: &str) -> usize {
    let want = cmd.replace(' ', "\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).trim_end_matches('\0') == want)
                .unwrap_or(false)
        })
        .count()
}

#[tokio::test]
async fn no_network_reaches_nothing_and_a_shared_namespace_reaches_the_worker() {
    let l = layout();
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let probe = format!("bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' && echo reached");
    let (_, out) = run(&sandbox(&l, Network::Host), &l, &probe).await;
    assert!(out.contains("reached"), "host network: {out}");
    host.accept().unwrap();
    let (_, out) = run(&sandbox(&l, Network::None), &l, &probe).await;
    assert!(!out.contains("reached"), "no network: {out}");

    // A listener the worker makes inside a shared namespace is reached from the sandbox,
    // and the host's listener on the same port is not.
    let ns = Arc::new(NetNs::create().expect("root can create network namespaces"));
    let inside = ns
        .run(move || std::net::TcpListener::bind(("127.0.0.1", port)))
        .unwrap();
    let (_, out) = run(&sandbox(&l, Network::Shared(ns.clone())), &l, &probe).await;
    assert!(out.contains("reached"), "shared namespace: {out}");
    inside.set_nonblocking(true).unwrap();
    assert!(
        inside.accept().is_ok(),
        "the connection went to the namespace"
    );
    host.set_nonblocking(true).unwrap();
    assert!(host.accept().is_err(), "not to the host");
}
