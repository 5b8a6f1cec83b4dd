//! Tests of `console`.

use super::*;

fn spec(command: &str) -> EmulatorSpec {
    // As the worker does: orphaned group members become ours to reap, so stops are quick.
    let _ = process::become_subreaper();
    EmulatorSpec {
        command: command.to_string(),
        console: ConsoleKind::Stdio,
        ready: None,
        boot_timeout: Duration::from_secs(10),
        cwd: std::env::temp_dir(),
        sandbox: Sandbox::unconfined(),
    }
}

fn re(p: &str) -> Regex {
    Regex::new(p).unwrap()
}

const T: Duration = Duration::from_secs(5);

/// Starts `command` as a stdio console that logs to a file in `dir`; returns it and the file.
async fn start_logged(
    command: &str,
    dir: &tempfile::TempDir,
    cancel: &CancellationToken,
) -> (Console, PathBuf) {
    let log = dir.path().join("q.log");
    let logs = Logs::new(Some(LogFile::create(&log, 1 << 30).unwrap()));
    let c = Console::start(&spec(command), logs, cancel).await.unwrap();
    (c, log)
}

#[tokio::test]
async fn expect_consumes_through_its_match_and_keeps_the_rest() {
    let cancel = CancellationToken::new();
    // An "emulator" that prints three lines (CRLF), a prompt without newline, then echoes input.
    let c = Console::start(
        &spec("printf 'one\\r\\ntwo\\nthree\\nprompt> '; cat"),
        Logs::new(None),
        &cancel,
    )
    .await
    .unwrap();
    assert_eq!(
        c.expect(&re("^two$"), T, None, &cancel).await.unwrap(),
        "two",
        "\\r is not part of the line"
    );
    // "one" was consumed by the match on "two" (output up to and including it).
    let again = c
        .expect(&re("^one$"), Duration::from_millis(200), None, &cancel)
        .await;
    assert!(
        matches!(again, Err(StepFailure::Timeout { .. })),
        "{again:?}"
    );
    // "three" arrived earlier and is still there; then the prompt, a partial line.
    assert_eq!(
        c.expect(&re("^three$"), T, None, &cancel).await.unwrap(),
        "three"
    );
    assert_eq!(
        c.expect(&re("^prompt> $"), T, None, &cancel).await.unwrap(),
        "prompt> "
    );
    // The matched prompt is not matched again; what follows it on the line is.
    c.send("hello", true).await.unwrap();
    assert_eq!(
        c.expect(&re("^hello$"), T, None, &cancel).await.unwrap(),
        "hello"
    );
    c.stop().await;
}

#[tokio::test]
async fn expect_not_idle_and_fail_pattern() {
    let cancel = CancellationToken::new();
    let c = Console::start(&spec("cat"), Logs::new(None), &cancel)
        .await
        .unwrap();
    c.send("calm", true).await.unwrap();
    assert!(matches!(
        c.expect_not(&re("PANIC"), Duration::from_millis(300), &cancel)
            .await,
        Ok(())
    ));
    c.send("PANIC now", true).await.unwrap();
    assert!(matches!(
        c.expect_not(&re("PANIC"), T, &cancel).await,
        Err(StepFailure::Seen { .. })
    ));
    let idle = c
        .expect(&re("^never$"), T, Some(Duration::from_millis(300)), &cancel)
        .await;
    assert_eq!(idle, Err(StepFailure::Idle(Duration::from_millis(300))));
    c.set_fail_pattern(Some(re("Guru Meditation")));
    c.send("Guru Meditation Error: boom", true).await.unwrap();
    let hit = c.expect(&re("^never$"), T, None, &cancel).await;
    let Err(StepFailure::FailPattern(seq)) = hit else {
        panic!("{hit:?}")
    };
    assert!(c.context(seq).contains("> Guru Meditation Error: boom"));
    c.set_fail_pattern(None);
    cancel.cancel();
    assert_eq!(
        c.expect(&re("^never$"), T, None, &cancel).await,
        Err(StepFailure::Cancelled)
    );
    c.stop().await;
}

/// A crash during a `<sleep>`, followed by a reboot banner longer than the recent-lines
/// ring: the sleep fails at once, and the message quotes the crash, not the banner.
#[tokio::test]
async fn a_crash_during_sleep_fails_at_once_with_its_own_lines() {
    let cancel = CancellationToken::new();
    let script = "sleep 0.3; echo 'Guru Meditation Error: Core 0 panic'; \
                  echo 'Backtrace: 0x400d1234:0x3ffb1f00'; \
                  for i in $(seq 1 100); do echo \"boot banner $i\"; done; cat";
    let c = Console::start(&spec(script), Logs::new(None), &cancel)
        .await
        .unwrap();
    c.set_fail_pattern(Some(re("Guru Meditation")));
    let started = Instant::now();
    let r = c.sleep(Duration::from_secs(10), &cancel).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let Err(f @ StepFailure::FailPattern(_)) = r else {
        panic!("{r:?}")
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = c.describe(&f);
    assert!(
        text.contains("> Guru Meditation Error: Core 0 panic"),
        "{text}"
    );
    assert!(text.contains("Backtrace: 0x400d1234"), "{text}");
    assert!(!text.contains("boot banner 90"), "{text}");
    c.stop().await;
}

#[tokio::test]
async fn non_utf8_is_kept_and_an_exit_is_reported() {
    let cancel = CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (c, log) = start_logged("printf 'bad \\377\\376 bytes\\nbye\\n'", &dir, &cancel).await;
    assert!(c
        .expect(&re("^bad .* bytes$"), T, None, &cancel)
        .await
        .is_ok());
    let closed = c.expect(&re("^never$"), T, None, &cancel).await;
    assert!(
        matches!(closed, Err(StepFailure::Closed(ref m)) if m.contains("bye")),
        "{closed:?}"
    );
    c.stop().await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("| bad \\xff\\xfe bytes"), "{text}");
}

#[tokio::test]
async fn ready_pattern_and_boot_failures() {
    let cancel = CancellationToken::new();
    let mut s = spec("printf 'booting\\nready> '; cat");
    s.ready = Some(re("^ready> $"));
    let c = Console::start(&s, Logs::new(None), &cancel).await.unwrap();
    c.stop().await;
    let mut s = spec("sleep 30");
    s.ready = Some(re("^ready$"));
    s.boot_timeout = Duration::from_millis(300);
    let err = Console::start(&s, Logs::new(None), &cancel)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not seen within"), "{err}");
    // TCP console: the command gets a port; nobody listens there, so connecting times out.
    let mut s = spec("sleep 30 # {console_port}");
    s.console = ConsoleKind::Tcp;
    s.boot_timeout = Duration::from_millis(300);
    let err = Console::start(&s, Logs::new(None), &cancel)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("did not accept a connection"), "{err}");
}

#[tokio::test]
async fn a_flood_reaches_the_log_whole_and_in_order_and_stop_keeps_the_last_words() {
    let cancel = CancellationToken::new();
    let dir = tempfile::tempdir().unwrap();
    // 200,000 numbered lines in large writes (the pipe reader pauses between large reads),
    // then a prompt; the last words come after stdin closes, as the emulator stops.
    let command = "seq 1 200000; printf 'done> '; cat >/dev/null; echo last words";
    let (c, log) = start_logged(command, &dir, &cancel).await;
    assert_eq!(
        c.expect(&re("^done> $"), T, None, &cancel).await.unwrap(),
        "done> "
    );
    c.stop().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let numbers: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split_once(" | ").and_then(|(_, t)| t.parse().ok()))
        .collect();
    assert_eq!(numbers.len(), 200_000);
    assert!(numbers.iter().enumerate().all(|(i, n)| *n == i as u64 + 1));
    assert!(
        text.contains("| done> last words\n"),
        "{}",
        &text[text.len() - 200..]
    );
}

#[tokio::test]
async fn a_tcp_console_is_read_and_written() {
    let cancel = CancellationToken::new();
    // An "emulator" serving its console on the port it is given: a greeting, a prompt, then it
    // echoes one line back and closes.
    let server = r#"python3 -c "
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', {console_port})); s.listen(1)
c, _ = s.accept(); c.sendall(b'hello\nprompt> ')
d = b''
while not d.endswith(b'\n'): d += c.recv(100)
c.sendall(b'got ' + d); c.close()
""#;
    let mut s = spec(server);
    s.console = ConsoleKind::Tcp;
    let c = Console::start(&s, Logs::new(None), &cancel).await.unwrap();
    assert_eq!(
        c.expect(&re("^prompt> $"), T, None, &cancel).await.unwrap(),
        "prompt> "
    );
    c.send("ping", true).await.unwrap();
    assert_eq!(
        c.expect(&re("got ping"), T, None, &cancel).await.unwrap(),
        "got ping"
    );
    let closed = c.expect(&re("^never$"), T, None, &cancel).await;
    assert!(matches!(closed, Err(StepFailure::Closed(_))), "{closed:?}");
    c.stop().await;
}
