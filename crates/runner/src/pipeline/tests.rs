//! The pipeline's verdict rules, fast: a temporary SQLite store, a local git repository, and a
//! shell script as the "emulator" (no sandbox: that has tests of its own).

use super::*;
use crate::git::FetchPolicy;
use crate::sandbox::SandboxMode;
use std::path::Path;
use testarena_core::validate::ValidQueue;
use testarena_core::{CaseStatus, QueueStatus};
use testarena_store::QueueDetail;

/// The firmware stand-in: `ready`, then `ping` → `pong`, `crash` → a panic line, `hang` →
/// silence, anything else echoed.
const FIRMWARE: &str = r#"echo ready
while read line; do
  case "$line" in
    ping) echo pong ;;
    crash) echo "Guru Meditation Error: Core 0 panic'ed" ;;
    hang) ;;
    *) echo "$line" ;;
  esac
done
"#;

const TOML: &str =
    "[emulator]\ncommand = \"sh fw.sh\"\nready = \"^ready$\"\nboot_timeout = \"5s\"\n";

struct Fixture {
    _dir: tempfile::TempDir,
    repos: PathBuf,
    store: Store,
    cfg: RunnerConfig,
    mirrors: MirrorCache,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let repos = dir.path().join("repos");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&repos).unwrap();
    let url = format!("sqlite://{}", data.join("t.db").display());
    let store = Store::open(&url).await.unwrap();
    let mut sandbox = SandboxConfig::bwrap(data.clone());
    sandbox.mode = SandboxMode::Off;
    let cfg = RunnerConfig {
        data_dir: data.clone(),
        worker_id: "w1".into(),
        hostname: "test".into(),
        boot_id: "boot".into(),
        queue_timeout: Duration::from_secs(60),
        clone_timeout: Duration::from_secs(30),
        log_cap: 1 << 20,
        sandbox: Arc::new(sandbox),
        local: Default::default(),
        build_cache: None,
    };
    let policy = FetchPolicy {
        allowed_roots: vec![repos.clone()],
        ..FetchPolicy::default()
    };
    let mirrors = MirrorCache::new(data.join("git")).with_policy(policy);
    Fixture {
        _dir: dir,
        repos,
        store,
        cfg,
        mirrors,
    }
}

impl Fixture {
    /// A repository with the stand-in firmware, `toml` and the scenario `scenario`.
    fn repo(&self, name: &str, toml: &str, scenario: &str) -> PathBuf {
        let dir = self.repos.join(name);
        std::fs::create_dir_all(dir.join("scenarios")).unwrap();
        std::fs::write(dir.join("fw.sh"), FIRMWARE).unwrap();
        std::fs::write(dir.join("testarena.toml"), toml).unwrap();
        std::fs::write(dir.join("scenarios/s.xml"), scenario).unwrap();
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "-A"],
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "x",
            ],
        ] {
            let ok = std::process::Command::new("git")
                .args(args)
                .current_dir(&dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "git {args:?}");
        }
        dir
    }

    /// Submits and claims a queue for `repo`.
    async fn claim(&self, repo: &Path) -> QueueRow {
        self.claim_queue(&queue_of(repo)).await
    }

    /// Submits and claims `q`.
    async fn claim_queue(&self, q: &ValidQueue) -> QueueRow {
        self.store.create_queue(q).await.unwrap();
        self.store.claim("w1", 60_000).await.unwrap().unwrap()
    }

    /// Runs a claimed queue to its end; what the store then holds.
    async fn run_claimed(&self, queue: QueueRow) -> QueueDetail {
        let id = queue.id;
        run_queue(
            &self.store,
            &self.cfg,
            &self.mirrors,
            queue,
            &QueueControl::default(),
        )
        .await;
        self.store.queue(id).await.unwrap()
    }

    /// A claimed queue whose only case waits for ever.
    async fn hanging_queue(&self) -> QueueRow {
        let repo = self.repo(
            "r",
            TOML,
            r#"<scenario name="s"><testcase id="HANG"><send>hang</send><expect timeout="30">^never$</expect></testcase></scenario>"#,
        );
        self.claim(&repo).await
    }

    /// Runs a queue of `scenario` to its end; what the store then holds.
    async fn run(&self, toml: &str, scenario: &str) -> QueueDetail {
        let repo = self.repo("r", toml, scenario);
        let queue = self.claim(&repo).await;
        self.run_claimed(queue).await
    }
}

/// A queue of `repo`'s `main` with every option at its default.
fn queue_of(repo: &Path) -> ValidQueue {
    ValidQueue {
        repo: repo.display().to_string(),
        branch: "main".into(),
        scenarios: None,
        name: "t".into(),
        priority: 5,
        commit: None,
        case_filter: None,
        labels: Vec::new(),
        origin: None,
        no_cache: false,
        retries: 0,
    }
}

/// The status and message of every case, in order.
fn cases(d: &QueueDetail) -> Vec<(String, CaseStatus, String)> {
    d.tasks
        .iter()
        .flat_map(|(_, cases)| cases.iter())
        .map(|c| {
            let m = c.message.clone().unwrap_or_default();
            (c.key.clone(), c.status, m)
        })
        .collect()
}

fn assert_case(d: &QueueDetail, id: &str, status: CaseStatus, says: &str) {
    let all = cases(d);
    let (_, s, m) = all
        .iter()
        .find(|(k, _, _)| k == id)
        .unwrap_or_else(|| panic!("no case {id}: {all:?}"));
    assert_eq!(*s, status, "{id}: {m}");
    assert!(m.contains(says), "{id}: {m:?} should say {says:?}");
}

#[tokio::test]
async fn pass_expect_timeout_idle_timeout_and_fail_pattern() {
    let f = fixture().await;
    let d = f
        .run(
            TOML,
            r#"<scenario name="s">
  <fail-pattern>Guru Meditation</fail-pattern>
  <testcase id="PASS"><send>ping</send><expect timeout="5">^pong$</expect></testcase>
  <testcase id="EXPECT"><send>ping</send><expect timeout="0.3">^nope$</expect></testcase>
  <testcase id="IDLE" idle-timeout="0.3"><send>hang</send><expect timeout="5">^never$</expect></testcase>
  <testcase id="CRASH"><send>crash</send><expect timeout="5">^never$</expect></testcase>
</scenario>"#,
        )
        .await;
    assert_eq!(d.queue.status, QueueStatus::Failed);
    assert_case(&d, "PASS", CaseStatus::Passed, "");
    assert_case(
        &d,
        "EXPECT",
        CaseStatus::Failed,
        "expected /^nope$/ within 300ms",
    );
    assert_case(&d, "IDLE", CaseStatus::Failed, "console silent for 300ms");
    assert_case(
        &d,
        "CRASH",
        CaseStatus::Failed,
        "fail pattern matched during step <expect>",
    );
}

#[tokio::test]
async fn a_reboot_boots_again_and_the_case_passes() {
    let f = fixture().await;
    let d = f
        .run(
            TOML,
            r#"<scenario name="s">
  <testcase id="REBOOT"><send>one</send><expect>^one$</expect><reboot/><send>ping</send><expect>^pong$</expect></testcase>
</scenario>"#,
        )
        .await;
    assert_eq!(d.queue.status, QueueStatus::Passed, "{:?}", cases(&d));
}

#[tokio::test]
async fn an_emulator_that_does_not_boot_is_an_error_of_every_case() {
    let f = fixture().await;
    let toml = "[emulator]\ncommand = \"echo broken; exit 3\"\nready = \"^ready$\"\n";
    let d = f
        .run(
            toml,
            r#"<scenario name="s"><testcase id="A"><send>x</send></testcase><testcase id="B"><send>x</send></testcase></scenario>"#,
        )
        .await;
    assert_eq!(d.queue.status, QueueStatus::Error);
    assert_case(&d, "A", CaseStatus::Error, "emulator did not start");
    assert_case(&d, "B", CaseStatus::Error, "emulator did not start");
}

#[tokio::test]
async fn a_failed_setup_is_an_error_and_a_failed_teardown_only_a_log_line() {
    let f = fixture().await;
    let d = f
        .run(
            TOML,
            r#"<scenario name="s">
  <setup><expect timeout="0.2">^never$</expect></setup>
  <testcase id="A"><send>ping</send><expect>^pong$</expect></testcase>
</scenario>"#,
        )
        .await;
    assert_eq!(d.queue.status, QueueStatus::Error);
    assert_case(&d, "A", CaseStatus::Error, "setup step <expect>");

    let f = fixture().await;
    let d = f
        .run(
            TOML,
            r#"<scenario name="s">
  <testcase id="A"><send>ping</send><expect>^pong$</expect></testcase>
  <teardown><expect timeout="0.2">^never$</expect></teardown>
</scenario>"#,
        )
        .await;
    assert_eq!(d.queue.status, QueueStatus::Passed, "{:?}", cases(&d));
    let log = f.store.read_file(1, "queue.log", 0, 1 << 20).await.unwrap();
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("teardown step <expect>"), "{log}");
    assert!(
        !testarena_core::paths::queue_dir(&f.cfg.data_dir, 1).exists(),
        "the scratch directory is gone: the database holds the queue's files"
    );
}

/// Starts a queue whose only case hangs, then stops it for `reason` once the case runs.
async fn stop_while_running(f: &Fixture, reason: StopReason) -> (i64, PathBuf) {
    let queue = f.hanging_queue().await;
    let id = queue.id;
    let ctl = QueueControl::default();
    let run = run_queue(&f.store, &f.cfg, &f.mirrors, queue, &ctl);
    let stop = async {
        loop {
            let d = f.store.queue(id).await.unwrap();
            if cases(&d).iter().any(|(_, s, _)| *s == CaseStatus::Running) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ctl.stop(reason);
    };
    tokio::join!(run, stop);
    (
        id,
        testarena_core::paths::attempt_dir(&f.cfg.data_dir, id, 1),
    )
}

#[tokio::test]
async fn an_abort_ends_the_running_case_and_the_queue() {
    let f = fixture().await;
    let (id, _) = stop_while_running(&f, StopReason::Aborted).await;
    let d = f.store.queue(id).await.unwrap();
    assert_eq!(d.queue.status, QueueStatus::Aborted);
    assert_eq!(d.queue.error.as_deref(), Some("aborted on request"));
    assert_case(
        &d,
        "HANG",
        CaseStatus::Error,
        "aborted during step <expect>",
    );
}

#[tokio::test]
async fn a_lost_claim_records_nothing_and_leaves_the_shipped_lines_to_the_next_attempt() {
    let f = fixture().await;
    let (id, dir) = stop_while_running(&f, StopReason::ClaimLost).await;
    let d = f.store.queue(id).await.unwrap();
    assert_eq!(
        d.queue.status,
        QueueStatus::Running,
        "the new attempt's to decide"
    );
    let log = f
        .store
        .read_file(id, "queue.log", 0, 1 << 20)
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("claimed by worker w1 (attempt 1)"), "{log}");
    assert!(!dir.exists(), "this attempt's scratch directory is gone");
}

#[tokio::test]
async fn a_local_run_reads_its_scenario_from_memory_and_runs_only_the_cases_asked_for() {
    let mut f = fixture().await;
    // The committed scenario would fail; the local one (not in the repository) passes.
    let repo = f.repo(
        "r",
        TOML,
        r#"<scenario name="s"><testcase id="A"><send>ping</send><expect timeout="0.3">^nope$</expect></testcase></scenario>"#,
    );
    let local = r#"<scenario name="local">
  <testcase id="A"><send>ping</send><expect timeout="5">^pong$</expect></testcase>
  <testcase id="B"><send>ping</send><expect timeout="0.3">^nope$</expect></testcase>
  <testcase id="C"><send>c</send><expect timeout="5">^c$</expect></testcase>
</scenario>"#;
    f.cfg.local = LocalRun {
        scenarios: [("scenarios/s.xml".to_string(), local.to_string())].into(),
        cases: vec!["A".into(), "C".into()],
        ..Default::default()
    };
    let q = ValidQueue {
        scenarios: Some(vec!["scenarios/s.xml".into()]),
        ..queue_of(&repo)
    };
    let d = f.run_claimed(f.claim_queue(&q).await).await;
    assert_eq!(d.queue.status, QueueStatus::Passed, "{:?}", cases(&d));
    let keys: Vec<String> = cases(&d).into_iter().map(|(k, _, _)| k).collect();
    assert_eq!(keys, ["A", "C"]);
}

/// A fixture whose worker has a build cache.
async fn cached_fixture() -> Fixture {
    let mut f = fixture().await;
    let root = f.cfg.data_dir.join("build-cache");
    f.cfg.build_cache = Some(crate::build_cache::BuildCache::new(root, 1 << 20));
    f
}

/// A `testarena.toml` whose build counts its runs in `count` (outside the checkout) and makes
/// `out/fw.bin`, which the "emulator" needs to boot.
fn counting_toml(count: &Path, extra_sleep: &str) -> String {
    format!(
        "[build]\ncommand = \"{extra_sleep}echo run >> {} && mkdir -p out && echo fw > out/fw.bin\"\n\
         outputs = [\"out\"]\n\
         [emulator]\ncommand = \"test -f out/fw.bin && sh fw.sh\"\nready = \"^ready$\"\nboot_timeout = \"5s\"\n",
        count.display()
    )
}

const PING: &str = r#"<scenario name="s"><testcase id="PING"><send>ping</send><expect timeout="5">^pong$</expect></testcase></scenario>"#;

fn runs(count: &Path) -> usize {
    std::fs::read_to_string(count)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

impl Fixture {
    /// Submits, claims and runs one queue of `repo`; what the store then holds, and its log.
    async fn run_repo(&self, repo: &Path, no_cache: bool) -> (QueueDetail, String) {
        let q = ValidQueue {
            no_cache,
            ..queue_of(repo)
        };
        let d = self.run_claimed(self.claim_queue(&q).await).await;
        let log = self.log(d.queue.id).await;
        (d, log)
    }

    async fn log(&self, id: i64) -> String {
        let log = self
            .store
            .read_file(id, "queue.log", 0, 1 << 20)
            .await
            .unwrap();
        String::from_utf8_lossy(&log).into_owned()
    }
}

/// Commits a change to `repo` (a new commit of the branch).
fn new_commit(repo: &Path) {
    std::fs::write(repo.join("change.txt"), "changed").unwrap();
    for args in [
        &["add", "-A"][..],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "y",
        ],
    ] {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(repo)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }
}

#[tokio::test]
async fn the_same_commit_reuses_the_build_and_no_cache_or_a_new_commit_builds() {
    let f = cached_fixture().await;
    let count = f.repos.join("count");
    let repo = f.repo("r", &counting_toml(&count, ""), PING);

    let (first, log) = f.run_repo(&repo, false).await;
    assert_eq!(first.queue.status, QueueStatus::Passed, "{log}");
    assert_eq!(first.queue.build_cached_from, None);
    assert!(log.contains("build cache: kept this build"), "{log}");
    assert_eq!(runs(&count), 1);

    let (second, log) = f.run_repo(&repo, false).await;
    assert_eq!(second.queue.status, QueueStatus::Passed, "{log}");
    assert_eq!(second.queue.commit, first.queue.commit);
    assert_eq!(second.queue.build_cached_from, Some(first.queue.id));
    let said = format!("# build: cached from queue #{}", first.queue.id);
    assert!(log.contains(&said), "{log}");
    assert!(!log.contains("build passed"), "no build ran: {log}");
    assert_eq!(runs(&count), 1, "the second queue did not build");
    let build_log = f
        .store
        .read_file(second.queue.id, "build.log", 0, 1 << 20)
        .await
        .unwrap();
    let build_log = String::from_utf8_lossy(&build_log);
    assert!(build_log.contains(&said), "{build_log}");

    let (forced, log) = f.run_repo(&repo, true).await;
    assert_eq!(forced.queue.status, QueueStatus::Passed, "{log}");
    assert_eq!(forced.queue.build_cached_from, None);
    assert!(log.contains("not used (no_cache)"), "{log}");
    assert_eq!(runs(&count), 2, "no_cache builds");

    // The forced build refreshed the entry: the next queue reuses that one.
    let (after, _) = f.run_repo(&repo, false).await;
    assert_eq!(after.queue.build_cached_from, Some(forced.queue.id));
    assert_eq!(runs(&count), 2);

    new_commit(&repo);
    let (other, log) = f.run_repo(&repo, false).await;
    assert_eq!(other.queue.status, QueueStatus::Passed, "{log}");
    assert_ne!(other.queue.commit, first.queue.commit);
    assert_eq!(other.queue.build_cached_from, None);
    assert_eq!(runs(&count), 3, "another commit builds");
}

#[tokio::test]
async fn a_failed_build_is_not_kept() {
    let f = cached_fixture().await;
    let toml = "[build]\ncommand = \"mkdir -p out && echo half > out/fw.bin && exit 3\"\n\
                [emulator]\ncommand = \"sh fw.sh\"\n";
    let repo = f.repo("r", toml, PING);
    let (first, log) = f.run_repo(&repo, false).await;
    assert_eq!(first.queue.status, QueueStatus::Error, "{log}");
    let (second, log) = f.run_repo(&repo, false).await;
    assert_eq!(second.queue.status, QueueStatus::Error, "{log}");
    assert_eq!(second.queue.build_cached_from, None, "{log}");
}

#[tokio::test]
async fn two_queues_of_one_commit_at_once_build_once() {
    let f = cached_fixture().await;
    let count = f.repos.join("count");
    let repo = f.repo("r", &counting_toml(&count, "sleep 1 && "), PING);
    let mut ids = Vec::new();
    let mut claimed = Vec::new();
    for _ in 0..2 {
        ids.push(
            f.store
                .create_queue(&queue_of(&repo))
                .await
                .unwrap()
                .queue
                .id,
        );
        claimed.push(f.store.claim("w1", 60_000).await.unwrap().unwrap());
    }
    let (c1, c2) = (QueueControl::default(), QueueControl::default());
    let mut claimed = claimed.into_iter();
    let (q1, q2) = (claimed.next().unwrap(), claimed.next().unwrap());
    tokio::join!(
        run_queue(&f.store, &f.cfg, &f.mirrors, q1, &c1),
        run_queue(&f.store, &f.cfg, &f.mirrors, q2, &c2),
    );
    assert_eq!(runs(&count), 1, "one of the two built");
    let mut from = Vec::new();
    for id in &ids {
        let d = f.store.queue(*id).await.unwrap();
        assert_eq!(d.queue.status, QueueStatus::Passed, "{}", f.log(*id).await);
        from.push(d.queue.build_cached_from);
    }
    from.sort();
    assert!(
        from == vec![None, Some(ids[0])] || from == vec![None, Some(ids[1])],
        "one built, the other reused its build: {from:?}"
    );
}

#[tokio::test]
async fn without_a_cache_every_queue_builds() {
    // `testarena run` has no cache (its tree may be dirty); a worker without one builds always.
    let f = fixture().await;
    let count = f.repos.join("count");
    let repo = f.repo("r", &counting_toml(&count, ""), PING);
    for _ in 0..2 {
        let (d, log) = f.run_repo(&repo, false).await;
        assert_eq!(d.queue.status, QueueStatus::Passed, "{log}");
        assert_eq!(d.queue.build_cached_from, None);
    }
    assert_eq!(runs(&count), 2);
    assert!(!f.cfg.data_dir.join("build-cache").exists());
}

#[tokio::test]
async fn a_failed_queue_keeps_a_repro_bundle_and_a_passed_one_none() {
    let f = fixture().await;
    let d = f
        .run(
            TOML,
            r#"<scenario name="s"><testcase id="BAD"><send>ping</send><expect timeout="0.3">^nope$</expect></testcase></scenario>"#,
        )
        .await;
    assert_eq!(d.queue.status, QueueStatus::Failed);
    let id = d.queue.id;
    let files: Vec<String> = f
        .store
        .files(id)
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for want in [
        "repro/manifest.json",
        "repro/files/testarena.toml",
        "repro/files/scenarios/s.xml",
        "repro/files/fw.sh",
    ] {
        assert!(files.contains(&want.to_string()), "{want} in {files:?}");
    }
    let len = f.store.file_len(id, "repro/manifest.json").await.unwrap();
    let text = f
        .store
        .read_file(id, "repro/manifest.json", 0, len)
        .await
        .unwrap();
    let m: testarena_core::repro::Manifest = serde_json::from_slice(&text).unwrap();
    assert_eq!(Some(m.commit.clone()), d.queue.commit);
    assert_eq!(m.emulator_command, "sh fw.sh");
    assert_eq!(m.images, vec!["fw.sh"]);
    assert!(m.left_out.is_empty(), "{:?}", m.left_out);

    let f = fixture().await;
    let d = f
        .run(
            TOML,
            r#"<scenario name="s"><testcase id="OK"><send>ping</send><expect timeout="5">^pong$</expect></testcase></scenario>"#,
        )
        .await;
    assert_eq!(d.queue.status, QueueStatus::Passed);
    let files = f.store.files(d.queue.id).await.unwrap();
    assert!(
        files.iter().all(|(n, _)| !n.starts_with("repro/")),
        "{files:?}"
    );
}

mod retries;
