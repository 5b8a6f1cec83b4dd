//! The spawner's protocol, with `serve` on a thread of this test process (no bubblewrap: the
//! sandboxed path runs in the end-to-end tests, through the real binary).

use super::*;
use crate::process::group_alive;
use std::os::unix::process::ExitStatusExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A spawner served by a thread of this process; the thread's result comes back on join.
async fn spawner() -> (Spawner, std::thread::JoinHandle<io::Result<()>>) {
    let (ours, theirs) = control_pair().unwrap();
    let served = std::thread::spawn(move || serve(theirs, true));
    (Spawner::attach(ours, None).await.unwrap(), served)
}

fn sh(script: &str) -> Spec {
    Spec::new("/bin/sh", ["-c", script]).with_env("PATH", "/usr/bin:/bin")
}

async fn read_all<R: AsyncReadExt + Unpin>(r: Option<R>) -> String {
    let mut text = String::new();
    r.unwrap().read_to_string(&mut text).await.unwrap();
    text
}

#[tokio::test]
async fn a_started_command_has_only_the_given_environment_its_directory_and_its_exit_code() {
    let (spawner, _) = spawner().await;
    let dir = tempfile::tempdir().unwrap();
    // Set here, so it would show if the command inherited this process's environment.
    std::env::set_var("TESTARENA_SPAWNER_LEAK", "leaked");
    let spec =
        sh("echo ${GREETING}; echo ${TESTARENA_SPAWNER_LEAK:-none}; pwd; echo oops >&2; exit 3")
            .with_env("GREETING", "hello")
            .with_cwd(dir.path());
    let mut g = spawner.spawn(&spec).await.unwrap();
    assert!(g.stdin.is_none(), "stdin is /dev/null unless asked for");
    let out = read_all(g.stdout.take()).await;
    let err = read_all(g.stderr.take()).await;
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(out, format!("hello\nnone\n{}\n", cwd.display()));
    assert_eq!(err, "oops\n");
    assert_eq!(g.wait().await.unwrap().code(), Some(3));
}

#[tokio::test]
async fn stdin_is_piped_when_asked_for() {
    let (spawner, _) = spawner().await;
    let mut g = spawner.spawn(&sh("cat").with_stdin(true)).await.unwrap();
    let mut stdin = g.stdin.take().unwrap();
    stdin.write_all(b"ping\n").await.unwrap();
    drop(stdin);
    assert_eq!(read_all(g.stdout.take()).await, "ping\n");
    assert!(g.wait().await.unwrap().success());
}

#[tokio::test]
async fn a_program_that_cannot_start_is_an_error_and_the_spawner_goes_on() {
    let (spawner, _) = spawner().await;
    let err = spawner
        .spawn(&Spec::new("/nonexistent/emulator", ["-x"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/emulator"), "{err}");
    assert!(err.to_string().contains("No such file"), "{err}");
    let mut g = spawner.spawn(&sh("exit 0")).await.unwrap();
    assert!(g.wait().await.unwrap().success());
}

#[tokio::test]
async fn terminate_stops_the_whole_group_of_a_started_command() {
    let (spawner, _) = spawner().await;
    let mut g = spawner.spawn(&sh("sleep 1000 & sleep 1000")).await.unwrap();
    let pgid = g.pgid;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(group_alive(pgid));
    let status = g.terminate(Duration::from_secs(2)).await;
    assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGTERM));
    assert!(!group_alive(pgid));
}

#[tokio::test]
async fn closing_the_spawner_kills_what_it_started() {
    let (spawner, served) = spawner().await;
    // `exec`: a shell's child would be orphaned by the KILL and, this test process being a
    // subreaper once the process tests ran, stay a zombie in the group with nobody to reap it
    // (in a sandbox, bubblewrap's init reaps orphans).
    let mut g = spawner.spawn(&sh("exec sleep 1000")).await.unwrap();
    let pgid = g.pgid;
    assert!(group_alive(pgid));
    drop(spawner);
    served.join().unwrap().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), g.wait()).await;
    // The exit report may not have made it before the socket closed; either way it is gone.
    if let Ok(Ok(s)) = status {
        assert_eq!(s.signal(), Some(libc::SIGKILL));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while group_alive(pgid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!group_alive(pgid));
}

#[tokio::test]
async fn commands_that_exit_at_once_still_report_their_group_and_exit_code() {
    // The worker reads the pid from the pidfd after the command may already have exited; the
    // spawner keeps it unreaped until then.
    let (spawner, _) = spawner().await;
    for i in 0..50 {
        let mut g = spawner.spawn(&sh(&format!("exit {i}"))).await.unwrap();
        assert!(g.pgid > 1);
        assert_eq!(g.wait().await.unwrap().code(), Some(i));
    }
}
