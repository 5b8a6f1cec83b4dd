//! `testarena run`: the real binary runs the example firmware (built with the real Xtensa
//! cross-compiler, booted in real QEMU) from a local git work tree with no server, and exits
//! with the verdict; its reports land in `--out`; the developer's repository is never
//! changed; nothing is left running or lying in the temporary directory.

mod common;

use common::{git, processes_under};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a run may take here (a build and a few boots take seconds).
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// A temporary directory with the example firmware committed in `fw/` and a `tmp/` that the
/// run takes as its TMPDIR (so what it leaves there is seen).
struct Desk {
    root: tempfile::TempDir,
}

impl Desk {
    fn new() -> Desk {
        let root = tempfile::tempdir().unwrap();
        let fw = root.path().join("fw");
        common::copy_demo_firmware(&fw);
        git(&fw, &["init", "-q", "-b", "main"]);
        git(&fw, &["add", "-A"]);
        git(&fw, &["commit", "-qm", "demo firmware"]);
        std::fs::create_dir_all(root.path().join("tmp")).unwrap();
        Desk { root }
    }

    fn fw(&self) -> PathBuf {
        self.root.path().join("fw")
    }

    fn out(&self) -> PathBuf {
        self.root.path().join("out")
    }

    /// `testarena run ARGS` in `fw/`, in a process group of its own, its output piped.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_testarena"));
        cmd.arg("run")
            .args(args)
            .current_dir(self.fw())
            .env("TMPDIR", self.tmp())
            // Never read the machine's /etc/testarena/config.toml.
            .env("TESTARENA_CONFIG", "/dev/null")
            .env_remove("TESTARENA_DATA_DIR")
            .env_remove("TESTARENA_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd
    }

    fn tmp(&self) -> PathBuf {
        self.root.path().join("tmp")
    }

    /// Runs `testarena run ARGS` in `fw/`; its exit code, stdout and stderr. Asserts that it
    /// left no process and nothing in its temporary directory.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let child = self.command(args).spawn().expect("start testarena run");
        let killed = watchdog(child.id() as i32, RUN_LIMIT);
        let out = child.wait_with_output().expect("wait for testarena run");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !killed.join().unwrap(),
            "testarena run took longer than {RUN_LIMIT:?}:\n{stdout}\n{stderr}"
        );
        self.assert_nothing_left();
        (out.status.code().unwrap_or(-1), stdout, stderr)
    }

    /// No process works in the run's temporary directory, and nothing is left in it.
    fn assert_nothing_left(&self) {
        let left = processes_under(&self.tmp());
        assert!(left.is_empty(), "processes left running: {left:?}");
        let files: Vec<_> = std::fs::read_dir(self.tmp()).unwrap().flatten().collect();
        assert!(files.is_empty(), "left in TMPDIR: {files:?}");
    }

    fn write(&self, path: &str, text: &str) {
        let p = self.fw().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn read_out(&self, name: &str) -> String {
        let p = self.out().join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }
}

/// Kills process group `pid` if it still runs after `limit`; says (joined) whether it had to.
fn watchdog(pid: i32, limit: Duration) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: kill(2) with signal 0 only asks whether the group exists.
            if unsafe { libc::kill(-pid, 0) } != 0 {
                return false;
            }
        }
        // SAFETY: kill(2) on our own child's process group has no memory effects.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        true
    })
}

/// What the developer's repository is: HEAD, status, stashes, index bytes and object count.
fn repo_state(fw: &Path) -> (String, String, String, Vec<u8>, String) {
    (
        git(fw, &["rev-parse", "HEAD"]),
        git(fw, &["status", "--porcelain", "--untracked-files=all"]),
        git(fw, &["stash", "list"]),
        std::fs::read(fw.join(".git/index")).unwrap(),
        git(fw, &["count-objects", "-v"]),
    )
}

#[test]
fn a_clean_work_tree_passes_with_its_reports() {
    let desk = Desk::new();
    let out = desk.out();
    let (code, stdout, stderr) = desk.run(&["--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // The console, live, then the verdict table.
    assert!(stdout.contains("| pong"), "{stdout}");
    assert!(stdout.contains("# phase: building"), "{stdout}");
    assert!(stdout.contains("as it is (clean"), "{stdout}");
    for case in ["TC_PING", "TC_ECHO", "TC_SPAM", "TC_UNKNOWN", "TC_PROMPT"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(case) && l.contains("passed")),
            "{case} in the table:\n{stdout}"
        );
    }
    assert!(stdout.contains("\npassed (5 passed, 0 failed"), "{stdout}");
    // The reports.
    assert!(desk.read_out("queue.log").contains("| pong"));
    assert!(desk.read_out("build.log").contains("xtensa-lx106-elf-gcc"));
    let junit = desk.read_out("junit.xml");
    assert!(
        junit.contains("TC_PROMPT") && !junit.contains("<failure"),
        "{junit}"
    );
    let case_log = desk.read_out("01-smoke/TC_PING.log");
    assert!(case_log.contains("| pong") && !case_log.contains("hello from testarena"));
    assert!(desk.read_out("01-smoke/TC_PING.html").contains("pong"));
    // A second run replaces the directory the first one made.
    std::fs::write(out.join("stale.txt"), "old").unwrap();
    let (code, stdout, stderr) = desk.run(&[
        "--out",
        out.to_str().unwrap(),
        "--scenario",
        "scenarios/smoke.xml",
        "--case",
        "TC_ECHO",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!out.join("stale.txt").exists());
    let junit = desk.read_out("junit.xml");
    assert!(
        junit.contains("TC_ECHO") && !junit.contains("TC_PING"),
        "{junit}"
    );
}

#[test]
fn a_dirty_work_tree_runs_as_it_is_and_a_failure_exits_1() {
    let desk = Desk::new();
    let fw = desk.fw();
    // A tracked change (the firmware answers "pang"), an untracked scenario, and an ignored
    // one that would not even parse.
    let main_c = std::fs::read_to_string(fw.join("src/main.c")).unwrap();
    assert!(main_c.contains("con_line(\"pong\");"));
    desk.write(
        "src/main.c",
        &main_c.replace("con_line(\"pong\");", "con_line(\"pang\");"),
    );
    desk.write(
        "scenarios/extra.xml",
        r#"<scenario name="extra" timeout="60">
  <testcase id="TC_EXTRA" timeout="20"><send>echo untracked</send><expect timeout="5">^untracked$</expect></testcase>
</scenario>"#,
    );
    desk.write(".gitignore", "scenarios/ignored.xml\n");
    desk.write("scenarios/ignored.xml", "<not a scenario");
    let before = repo_state(&fw);
    let out = desk.out();
    let (code, stdout, stderr) = desk.run(&[
        "--out",
        out.to_str().unwrap(),
        "--case",
        "TC_PING",
        "--case",
        "TC_EXTRA",
    ]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("with uncommitted changes"), "{stdout}");
    assert!(stdout.contains("| pang"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("TC_PING") && l.contains("failed")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("TC_EXTRA") && l.contains("passed")),
        "{stdout}"
    );
    assert!(!stdout.contains("ignored.xml"), "{stdout}");
    assert!(!stdout.contains("TC_ECHO"), "{stdout}");
    let junit = desk.read_out("junit.xml");
    assert!(
        junit.contains("<failure") && junit.contains("TC_EXTRA"),
        "{junit}"
    );
    assert!(desk.read_out("02-smoke/TC_PING.log").contains("| pang"));
    // The developer's repository is as it was: no commit, no stash, no index change, no object.
    assert_eq!(repo_state(&fw), before);
}

#[test]
fn a_build_error_exits_2() {
    let desk = Desk::new();
    let main_c = std::fs::read_to_string(desk.fw().join("src/main.c")).unwrap();
    desk.write(
        "src/main.c",
        &format!("{main_c}\n#error broken on purpose\n"),
    );
    let out = desk.out();
    let (code, stdout, stderr) = desk.run(&["--out", out.to_str().unwrap()]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stdout.contains("broken on purpose"), "{stdout}");
    assert!(stdout.contains("\nerror ("), "{stdout}");
    assert!(desk.read_out("build.log").contains("broken on purpose"));
}

#[test]
fn a_branch_runs_as_committed_with_a_scenario_from_elsewhere() {
    let desk = Desk::new();
    // The work tree's change must not be seen: --branch tests what is committed.
    desk.write("src/main.c", "#error not committed\n");
    let outside = desk.root.path().join("outside.xml");
    std::fs::write(
        &outside,
        r#"<scenario name="outside" timeout="60">
  <testcase id="TC_OUT" timeout="20"><send>ping</send><expect timeout="5">^pong$</expect></testcase>
</scenario>"#,
    )
    .unwrap();
    let out = desk.out();
    let (code, stdout, stderr) = desk.run(&[
        "--branch",
        "main",
        "--scenario",
        outside.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("as committed"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("TC_OUT") && l.contains("passed")),
        "{stdout}"
    );
    assert!(desk.read_out("01-outside/TC_OUT.log").contains("| pong"));
}

#[test]
fn bad_input_exits_3_with_a_clear_message() {
    let desk = Desk::new();
    let root = desk.root.path();
    let out = desk.out();
    let out = out.to_str().unwrap();
    let bad = |args: &[&str], says: &str| {
        let (code, stdout, stderr) = desk.run(args);
        assert_eq!(code, 3, "{args:?}:\n{stdout}\n{stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}:\n{stderr}"
        );
    };
    let missing = root.join("nowhere");
    bad(
        &["--repo", missing.to_str().unwrap(), "--out", out],
        "no such directory",
    );
    let plain = root.join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    bad(
        &["--repo", plain.to_str().unwrap(), "--out", out],
        "not inside a git work tree",
    );
    std::fs::write(
        root.join("broken.xml"),
        "<scenario name=\"b\">\n  <testcase>\n",
    )
    .unwrap();
    let broken = root.join("broken.xml");
    bad(
        &["--scenario", broken.to_str().unwrap(), "--out", out],
        "broken.xml:",
    );
    bad(
        &["--scenario", "scenarios/nothing.xml", "--out", out],
        "no such file",
    );
    bad(
        &[
            "--scenario",
            "scenarios/smoke.xml",
            "--case",
            "TC_TYPO",
            "--out",
            out,
        ],
        "--case TC_TYPO",
    );
    bad(
        &["--repo", "https://git.example.com/fw.git", "--out", out],
        "needs --branch",
    );
    // Known only after the checkout (the default set): the run builds, then says so.
    bad(
        &["--case", "TC_NOPE", "--out", out],
        "no case matched --case TC_NOPE",
    );
    // A directory that the run did not make is never replaced.
    let mine = root.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    bad(
        &["--out", mine.to_str().unwrap()],
        "not made by `testarena run`",
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep me"
    );
}

#[test]
fn an_interrupt_stops_the_emulator_and_still_writes_the_reports() {
    use std::io::{BufRead, BufReader};
    let desk = Desk::new();
    let hang = desk.root.path().join("hang.xml");
    std::fs::write(
        &hang,
        r#"<scenario name="hang" timeout="600">
  <testcase id="TC_HANG" timeout="600"><send>hang</send><expect timeout="600">^never$</expect></testcase>
</scenario>"#,
    )
    .unwrap();
    let out = desk.out();
    let mut child = desk
        .command(&[
            "--scenario",
            hang.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .spawn()
        .expect("start testarena run");
    let pid = child.id() as i32;
    let killed = watchdog(pid, RUN_LIMIT);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("send: hang") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the case never started");
    // The emulator is up and the case waits: Ctrl-C (SIGINT to the process, as a terminal
    // sends it to the foreground group; here to the run alone, which must stop its children).
    let sent = Instant::now();
    // SAFETY: kill(2) on our own child has no memory effects.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = child.wait().unwrap();
    let stopped_in = sent.elapsed();
    assert!(!killed.join().unwrap());
    let stdout = reader.join().unwrap();
    assert_eq!(status.code(), Some(2), "{stdout}");
    assert!(stopped_in < Duration::from_secs(30), "{stopped_in:?}");
    assert!(stdout.contains("emulator stopped"), "{stdout}");
    assert!(stdout.contains("aborted"), "{stdout}");
    desk.assert_nothing_left();
    assert!(desk.read_out("01-hang/TC_HANG.log").contains("send: hang"));
}
