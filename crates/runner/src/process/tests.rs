//! Tests of `process`.

use super::lines::LineSplitter;
use super::run::*;
use super::*;
use std::sync::{Arc, Mutex};

const GRACE: Duration = Duration::from_millis(500);

fn setup() {
    // Orphans of our test children must come to us to be reaped; otherwise a non-reaping
    // init in a container keeps them as zombies and the group looks alive forever.
    let _ = become_subreaper();
}

/// Runs a shell command collecting its lines.
async fn run_sh(cmd: &str, timeout: Duration) -> (Outcome, Vec<Vec<u8>>) {
    setup();
    let mut lines = Vec::new();
    let mut cb = |l: &[u8]| lines.push(l.to_vec());
    let outcome = run(
        &Spec::shell(cmd),
        timeout,
        &CancellationToken::new(),
        &mut cb,
        GRACE,
    )
    .await;
    match outcome {
        Ok(o) => (o, lines),
        Err(e) => panic!("run failed: {e}"),
    }
}

/// Pids of live (non-zombie) processes in `pgid`, read from /proc.
fn live_members(pgid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            found.push(pid);
        }
    }
    found
}

/// Runs `cmd`, records its pgid via a marker line, and returns (outcome, pgid, elapsed).
async fn run_tracking(
    cmd: &str,
    timeout: Duration,
    cancel: &CancellationToken,
) -> (Outcome, i32, Duration) {
    setup();
    let pgid = Arc::new(Mutex::new(0));
    let p2 = pgid.clone();
    let mut cb = move |l: &[u8]| {
        if let Some(rest) = l.strip_prefix(b"pgid=") {
            if let Ok(n) = String::from_utf8_lossy(rest).trim().parse::<i32>() {
                *p2.lock().unwrap() = n;
            }
        }
    };
    let start = std::time::Instant::now();
    let full = format!("echo pgid=$$; {cmd}");
    let outcome = run(&Spec::shell(&full), timeout, cancel, &mut cb, GRACE)
        .await
        .unwrap();
    let pgid = *pgid.lock().unwrap();
    assert!(pgid > 1, "no pgid seen");
    (outcome, pgid, start.elapsed())
}

#[tokio::test]
async fn exit_codes() {
    assert_eq!(
        run_sh("exit 0", Duration::from_secs(10)).await.0,
        Outcome::Exited(0)
    );
    assert_eq!(
        run_sh("exit 3", Duration::from_secs(10)).await.0,
        Outcome::Exited(3)
    );
    assert_eq!(
        run_sh("kill -9 $$", Duration::from_secs(10)).await.0,
        Outcome::Exited(128 + 9)
    );
}

#[tokio::test]
async fn missing_program_is_a_spawn_error() {
    let err = run(
        &Spec::new("/nonexistent/testarena-program", Vec::<String>::new()),
        Duration::from_secs(5),
        &CancellationToken::new(),
        &mut |_: &[u8]| {},
        GRACE,
    )
    .await;
    assert!(matches!(err, Err(ProcessError::Spawn { .. })), "{err:?}");
}

#[tokio::test]
async fn output_is_streamed_before_exit() {
    setup();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut cb = move |l: &[u8]| {
        let _ = tx.send((l.to_vec(), std::time::Instant::now()));
    };
    let start = std::time::Instant::now();
    let outcome = run(
        &Spec::shell("echo first; sleep 1; echo second"),
        Duration::from_secs(10),
        &CancellationToken::new(),
        &mut cb,
        GRACE,
    )
    .await
    .unwrap();
    let end = std::time::Instant::now();
    assert_eq!(outcome, Outcome::Exited(0));
    let (first, t_first) = rx.recv().await.unwrap();
    let (second, _) = rx.recv().await.unwrap();
    assert_eq!(first, b"first");
    assert_eq!(second, b"second");
    assert!(end - start >= Duration::from_millis(900));
    assert!(
        end - t_first >= Duration::from_millis(700),
        "first line arrived only {:?} before the end",
        end - t_first
    );
}

#[tokio::test]
async fn stderr_is_merged_and_lines_are_split() {
    let (o, lines) = run_sh(
        "printf 'a\\r\\nb\\n'; echo err 1>&2; echo c; echo d 1>&2; printf 'tail-without-newline'",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o, Outcome::Exited(0));
    assert_eq!(
        lines,
        vec![
            b"a".to_vec(),
            b"b".to_vec(),
            b"err".to_vec(),
            b"c".to_vec(),
            b"d".to_vec(),
            b"tail-without-newline".to_vec()
        ]
    );
}

#[tokio::test]
async fn non_utf8_output_is_preserved() {
    let (o, lines) = run_sh("printf '\\377\\376ok\\200\\n'", Duration::from_secs(10)).await;
    assert_eq!(o, Outcome::Exited(0));
    assert_eq!(lines, vec![vec![0xff, 0xfe, b'o', b'k', 0x80]]);
}

#[tokio::test]
async fn very_long_lines_come_in_bounded_pieces() {
    // 200 000 bytes without a newline, then a newline, then a short line.
    let (o, lines) = run_sh(
        "head -c 200000 /dev/zero | tr '\\0' x; echo; echo end",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(o, Outcome::Exited(0));
    assert!(lines.iter().all(|l| l.len() <= MAX_LINE));
    let total: usize = lines[..lines.len() - 1].iter().map(Vec::len).sum();
    assert_eq!(total, 200_000);
    assert_eq!(lines.last().map(Vec::as_slice), Some(&b"end"[..]));
}

#[test]
fn splitter_edges() {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut emit = |l: &[u8]| out.push(l.to_vec());
    let mut s = LineSplitter::default();
    // A line of exactly MAX_LINE bytes followed by its newline is one line.
    let exact = vec![b'a'; MAX_LINE];
    s.push(&exact[..100], &mut emit);
    s.push(&exact[100..], &mut emit);
    s.push(b"\nx", &mut emit);
    s.push(b"y\r\n\n", &mut emit);
    s.finish(&mut emit);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].len(), MAX_LINE);
    assert_eq!(out[1], b"xy");
    assert_eq!(out[2], b"");
    assert!(s.partial.capacity() <= MAX_LINE * 2);
}

#[tokio::test]
async fn timeout_kills_the_whole_tree() {
    let (o, pgid, elapsed) = run_tracking(
        "sleep 1000 & sleep 1000; wait",
        Duration::from_millis(300),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(o, Outcome::TimedOut(Duration::from_millis(300)));
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert!(!group_alive(pgid));
    assert!(live_members(pgid).is_empty());
}

#[tokio::test]
async fn cancel_is_prompt() {
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c2.cancel();
    });
    let (o, pgid, elapsed) =
        run_tracking("sleep 1000 & sleep 1000", Duration::from_secs(60), &cancel).await;
    assert_eq!(o, Outcome::Cancelled);
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert!(!group_alive(pgid));
}

#[tokio::test]
async fn term_ignoring_process_is_killed_after_grace() {
    let (o, pgid, elapsed) = run_tracking(
        "trap '' TERM; sleep 1000",
        Duration::from_millis(200),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(o, Outcome::TimedOut(Duration::from_millis(200)));
    assert!(elapsed >= GRACE, "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert!(!group_alive(pgid));
    assert!(live_members(pgid).is_empty());
}

#[tokio::test]
async fn leftover_background_process_is_killed_after_exit() {
    // The subshell exits at once, leaving `sleep 1000` orphaned but still in the group and
    // still holding our stdout.
    let (o, pgid, elapsed) = run_tracking(
        "(sleep 1000 &) ; exit 0",
        Duration::from_secs(60),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(o, Outcome::Exited(0));
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert!(!group_alive(pgid));
    assert!(live_members(pgid).is_empty());
}

#[tokio::test]
async fn leftover_with_closed_output_is_killed_too() {
    let (o, pgid, _) = run_tracking(
        "(sleep 1000 >/dev/null 2>&1 &) ; exit 7",
        Duration::from_secs(60),
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(o, Outcome::Exited(7));
    assert!(!group_alive(pgid));
    assert!(live_members(pgid).is_empty());
}

#[tokio::test]
async fn terminate_kills_group_and_daemonized_grandchild() {
    setup();
    let mut g = spawn(&Spec::shell("(sleep 1000 &) ; sleep 1000")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pgid = g.pgid;
    assert!(group_alive(pgid));
    let status = g.terminate(GRACE).await;
    assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGTERM));
    assert!(!group_alive(pgid));
    assert!(live_members(pgid).is_empty());
}

#[tokio::test]
async fn terminate_after_leader_exit_still_kills_the_group() {
    setup();
    let mut g = spawn(&Spec::shell("(sleep 1000 >/dev/null 2>&1 &) ; exit 0")).unwrap();
    let pgid = g.pgid;
    let status = g.wait().await.unwrap();
    assert!(status.success());
    assert!(group_alive(pgid));
    let _ = g.terminate(GRACE).await;
    assert!(!group_alive(pgid));
    assert!(live_members(pgid).is_empty());
}

#[tokio::test]
async fn dropping_a_group_kills_it() {
    setup();
    let g = spawn(&Spec::shell("sleep 1000 & sleep 1000")).unwrap();
    let pgid = g.pgid;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(live_members(pgid).len() >= 2, "the sleeps are running");
    drop(g);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !live_members(pgid).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    assert!(live_members(pgid).is_empty());
    reap_group(pgid);
}

#[tokio::test]
async fn kill_stale_groups_counts_existing_groups() {
    setup();
    let mut g = spawn(&Spec::shell("sleep 1000")).unwrap();
    let pgid = g.pgid;
    // 0, 1 and negative ids must never be signalled; a long-gone id does not count.
    assert_eq!(kill_stale_groups(&[pgid, 0, 1, -1, i32::MAX]), 1);
    let status = g.wait().await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(wait_group_gone(pgid, Instant::now() + Duration::from_secs(2)).await);
}

#[tokio::test]
async fn spec_cwd_env_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::shell("pwd; echo $TA_TEST; cat")
        .with_cwd(dir.path())
        .with_env("TA_TEST", "v1")
        .with_stdin(true);
    let mut lines = Vec::new();
    let mut cb = |l: &[u8]| lines.push(String::from_utf8_lossy(l).into_owned());
    let o = run(
        &spec,
        Duration::from_secs(10),
        &CancellationToken::new(),
        &mut cb,
        GRACE,
    )
    .await
    .unwrap();
    assert_eq!(o, Outcome::Exited(0));
    let canon = dir.path().canonicalize().unwrap();
    assert_eq!(lines, vec![canon.display().to_string(), "v1".to_string()]);
}

#[test]
fn run_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let cancel = CancellationToken::new();
    let spec = Spec::shell("true");
    let mut cb = |_: &[u8]| {};
    let fut = run(&spec, Duration::from_secs(1), &cancel, &mut cb, GRACE);
    assert_send(&fut);
}

#[test]
fn a_simple_command_line_runs_without_a_shell_and_anything_else_through_one() {
    let direct = Spec::command_line("qemu-system-xtensa -M sim -cpu lx106 -kernel build/fw.elf");
    assert_eq!(direct.program, "qemu-system-xtensa");
    assert_eq!(
        direct.args,
        ["-M", "sim", "-cpu", "lx106", "-kernel", "build/fw.elf"]
    );
    let tabs = Spec::command_line("  cat\t-u  ");
    assert_eq!(
        (tabs.program.as_str(), tabs.args.as_slice()),
        ("cat", &["-u".to_string()][..])
    );
    for cmd in [
        "cd build && qemu -kernel fw.elf",
        "qemu -kernel $FW",
        "qemu -append 'console=ttyS0'",
        "qemu -kernel fw.elf > out.txt",
        "qemu -kernel *.elf",
        "FOO=1 qemu",
        "qemu ~/fw.elf",
        "qemu; echo done",
        "qemu # comment",
        "",
    ] {
        let s = Spec::command_line(cmd);
        assert_eq!(
            (s.program.as_str(), s.args.as_slice()),
            ("sh", &["-c".to_string(), cmd.to_string()][..]),
            "{cmd}"
        );
    }
}

#[tokio::test]
async fn a_command_line_run_directly_behaves_as_through_sh() {
    setup();
    for (cmd, code, out) in [("echo one  two", 0, "one two"), ("false", 1, "")] {
        let mut lines = Vec::new();
        let mut cb = |l: &[u8]| lines.push(String::from_utf8_lossy(l).into_owned());
        let spec = Spec::command_line(cmd);
        assert_ne!(spec.program, "sh", "{cmd}");
        let outcome = run(
            &spec,
            Duration::from_secs(5),
            &CancellationToken::new(),
            &mut cb,
            GRACE,
        )
        .await
        .unwrap();
        assert!(
            matches!(outcome, Outcome::Exited(c) if c == code),
            "{cmd}: {outcome:?}"
        );
        assert_eq!(lines.join("\n"), out, "{cmd}");
    }
}
