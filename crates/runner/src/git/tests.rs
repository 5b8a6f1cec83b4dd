//! Tests of `git`.

use super::*;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use tokio::io::AsyncReadExt;

const T: Duration = Duration::from_secs(60);

/// Runs git synchronously for test setup.
fn g(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A source repository with one commit on `main` adding `file` = "one".
fn source_repo(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    g(&src, &["init", "-q", "-b", "main"]);
    commit(&src, "file", "one");
    src
}

/// Writes a file and commits it; returns the new HEAD.
fn commit(repo: &Path, name: &str, content: &str) -> String {
    std::fs::write(repo.join(name), content).unwrap();
    g(repo, &["add", "--", name]);
    g(repo, &["commit", "-q", "-m", content]);
    g(repo, &["rev-parse", "HEAD"])
}

fn sink() -> impl FnMut(&[u8]) + Send {
    |_: &[u8]| {}
}

/// A cache under `dir/git` that allows local repositories under `dir`.
fn cache_in(dir: &Path) -> MirrorCache {
    MirrorCache::new(dir.join("git")).with_policy(FetchPolicy {
        allowed_roots: vec![dir.to_path_buf()],
        ..FetchPolicy::default()
    })
}

#[tokio::test]
async fn mirror_is_created_once_and_fetched_after() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source_repo(tmp.path());
    let url = path_arg(&src).unwrap();
    let cache = cache_in(tmp.path());
    let cancel = CancellationToken::new();
    let mut log = Vec::new();
    let mut cb = |l: &[u8]| log.push(String::from_utf8_lossy(l).into_owned());

    let m1 = cache.fetch(&url, T, &cancel, &mut cb).await.unwrap();
    assert_eq!(m1, cache.mirror_path(&url));
    assert!(m1
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("src-"));
    let ino = std::fs::metadata(&m1).unwrap().ino();
    let first = cache.resolve(&m1, "main", None, &cancel).await.unwrap();

    let second_sha = commit(&src, "file", "two");
    let m2 = cache.fetch(&url, T, &cancel, &mut cb).await.unwrap();
    assert_eq!(m1, m2);
    assert_eq!(std::fs::metadata(&m2).unwrap().ino(), ino);
    let head = cache.resolve(&m2, "main", None, &cancel).await.unwrap();
    assert_eq!(head, second_sha);
    assert_ne!(head, first);
    assert_eq!(log.iter().filter(|l| l.contains(" init ")).count(), 1);
    assert_eq!(log.iter().filter(|l| l.contains(" fetch ")).count(), 2);
}

#[tokio::test]
async fn resolve_branch_commit_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source_repo(tmp.path());
    let first = g(&src, &["rev-parse", "HEAD"]);
    g(&src, &["checkout", "-q", "-b", "feature"]);
    let feature = commit(&src, "f", "feature");
    let url = path_arg(&src).unwrap();
    let cache = cache_in(tmp.path());
    let cancel = CancellationToken::new();
    let m = cache.fetch(&url, T, &cancel, &mut sink()).await.unwrap();

    assert_eq!(
        cache.resolve(&m, "main", None, &cancel).await.unwrap(),
        first
    );
    assert_eq!(
        cache.resolve(&m, "feature", None, &cancel).await.unwrap(),
        feature
    );
    // A commit wins over the branch, and an abbreviation resolves to the full SHA.
    assert_eq!(
        cache
            .resolve(&m, "feature", Some(&first[..10]), &cancel)
            .await
            .unwrap(),
        first
    );

    let err = cache.resolve(&m, "nope", None, &cancel).await.unwrap_err();
    assert!(matches!(err, GitError::BranchNotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("branch 'nope' not found in {url}"));

    let missing = "0123456789abcdef0123456789abcdef01234567";
    let err = cache
        .resolve(&m, "main", Some(missing), &cancel)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("commit {missing} not found in {url}")
    );

    // Revision syntax must not sneak in another commit.
    let err = cache
        .resolve(&m, "feature~1", None, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Invalid(_)), "{err:?}");
    let err = cache
        .resolve(&m, "main", Some("--all"), &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn checkout_gives_the_exact_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source_repo(tmp.path());
    let first = g(&src, &["rev-parse", "HEAD"]);
    commit(&src, "file", "two");
    let url = path_arg(&src).unwrap();
    let cache = cache_in(tmp.path());
    let cancel = CancellationToken::new();
    let m = cache.fetch(&url, T, &cancel, &mut sink()).await.unwrap();

    let dest = tmp.path().join("ws/q1/src");
    cache
        .checkout(&m, &first, &dest, T, &cancel, &mut sink())
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(dest.join("file")).unwrap(), "one");
    assert_eq!(g(&dest, &["rev-parse", "HEAD"]), first);
    // Objects are borrowed from the mirror, not copied.
    assert!(dest.join(".git/objects/info/alternates").exists());

    // An existing empty directory is fine; a non-empty one is refused.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let head = cache.resolve(&m, "main", None, &cancel).await.unwrap();
    cache
        .checkout(&m, &head, &empty, T, &cancel, &mut sink())
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(empty.join("file")).unwrap(), "two");
    let err = cache
        .checkout(&m, &head, &empty, T, &cancel, &mut sink())
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Invalid(_)), "{err:?}");
}

#[tokio::test]
async fn local_submodules_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    g(&sub, &["init", "-q", "-b", "main"]);
    commit(&sub, "inner", "inner");
    let src = source_repo(tmp.path());
    let sub_url = path_arg(&sub).unwrap();
    g(
        &src,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &sub_url,
            "lib",
        ],
    );
    g(&src, &["commit", "-q", "-m", "sub"]);
    let url = path_arg(&src).unwrap();
    let cache = cache_in(tmp.path());
    let cancel = CancellationToken::new();
    let m = cache.fetch(&url, T, &cancel, &mut sink()).await.unwrap();
    let head = cache.resolve(&m, "main", None, &cancel).await.unwrap();
    let dest = tmp.path().join("ws");
    let mut log = Vec::new();
    let mut cb = |l: &[u8]| log.push(String::from_utf8_lossy(l).into_owned());
    cache
        .checkout(&m, &head, &dest, T, &cancel, &mut cb)
        .await
        .unwrap();
    // A submodule must not read the worker's disk, even under the allowed roots: refused
    // before git runs; that is the best-effort path: a warning, and the checkout itself
    // still succeeds.
    assert!(
        !log.iter().any(|l| l.contains("submodule update")),
        "{log:?}"
    );
    assert!(dest.join("file").exists());
    assert!(!dest.join("lib/inner").exists());
    assert!(
        log.iter()
            .any(|l| l.starts_with("warning:") && l.contains("local URL")),
        "{log:?}"
    );
}

#[tokio::test]
async fn failing_clone_gives_a_readable_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_in(tmp.path());
    let bad = tmp.path().join("not-a-repo");
    std::fs::create_dir(&bad).unwrap();
    let err = cache
        .fetch(
            bad.to_str().unwrap(),
            T,
            &CancellationToken::new(),
            &mut sink(),
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, GitError::Command { .. }), "{err:?}");
    assert!(
        msg.contains("does not appear to be a git repository"),
        "{msg}"
    );
    assert!(
        msg.starts_with(&format!("fetching {}", bad.display())),
        "{msg}"
    );
    // A path that does not exist cannot be resolved, so it is not even handed to git.
    let missing = tmp.path().join("does-not-exist");
    let err = cache
        .fetch(
            missing.to_str().unwrap(),
            T,
            &CancellationToken::new(),
            &mut sink(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Refused(_)), "{err:?}");
    assert!(err.to_string().contains("does-not-exist"), "{err}");
}

#[tokio::test]
async fn credentials_never_reach_logs_or_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_in(tmp.path());
    // Port 9 on localhost: refused at once, no network needed.
    let url = "http://user:hunter2@127.0.0.1:9/repo.git";
    let mut log = Vec::new();
    let mut cb = |l: &[u8]| log.push(String::from_utf8_lossy(l).into_owned());
    let err = cache
        .fetch(url, T, &CancellationToken::new(), &mut cb)
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    assert!(log.iter().all(|l| !l.contains("hunter2")), "{log:?}");
    let m = cache.mirror_path(url);
    assert!(!m.to_string_lossy().contains("hunter2"));
    // Nothing we wrote into the mirror holds the password either.
    for entry in ["config", "FETCH_HEAD", URL_FILE] {
        let text = std::fs::read_to_string(m.join(entry)).unwrap_or_default();
        assert!(!text.contains("hunter2"), "{entry}: {text}");
    }
}

#[tokio::test]
async fn interrupted_mirror_is_recreated() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source_repo(tmp.path());
    let url = path_arg(&src).unwrap();
    let cache = cache_in(tmp.path());
    let m = cache.mirror_path(&url);
    std::fs::create_dir_all(m.join("objects")).unwrap();
    std::fs::write(m.join("half-written"), "x").unwrap();
    let cancel = CancellationToken::new();
    let got = cache.fetch(&url, T, &cancel, &mut sink()).await.unwrap();
    assert_eq!(got, m);
    assert!(!m.join("half-written").exists());
    let head = cache.resolve(&m, "main", None, &cancel).await.unwrap();
    assert_eq!(head, g(&src, &["rev-parse", "HEAD"]));
}

#[tokio::test]
async fn mirror_left_empty_by_an_interrupted_first_fetch_is_completed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source_repo(tmp.path());
    let url = path_arg(&src).unwrap();
    let cache = cache_in(tmp.path());
    let m = cache.mirror_path(&url);
    std::fs::create_dir_all(tmp.path().join("git")).unwrap();
    g(tmp.path(), &["init", "-q", "--bare", m.to_str().unwrap()]);
    let ino = std::fs::metadata(&m).unwrap().ino();
    let cancel = CancellationToken::new();
    cache.fetch(&url, T, &cancel, &mut sink()).await.unwrap();
    assert_eq!(std::fs::metadata(&m).unwrap().ino(), ino);
    let head = cache.resolve(&m, "main", None, &cancel).await.unwrap();
    assert_eq!(head, g(&src, &["rev-parse", "HEAD"]));
}

#[tokio::test]
async fn concurrent_fetches_of_one_repo_both_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source_repo(tmp.path());
    let url = path_arg(&src).unwrap();
    let cache = cache_in(tmp.path());
    let cancel = CancellationToken::new();
    let (mut s1, mut s2) = (sink(), sink());
    let (a, b) = tokio::join!(
        cache.fetch(&url, T, &cancel, &mut s1),
        cache.fetch(&url, T, &cancel, &mut s2)
    );
    assert_eq!(a.unwrap(), b.unwrap());
}

#[tokio::test]
async fn cancelled_fetch_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source_repo(tmp.path());
    let cache = cache_in(tmp.path());
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = cache
        .fetch(src.to_str().unwrap(), T, &cancel, &mut sink())
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Cancelled { .. }), "{err:?}");
}

/// The policy of `cache_in(dir)` with other roots.
fn policy_with_roots(roots: Vec<PathBuf>) -> FetchPolicy {
    FetchPolicy {
        allowed_roots: roots,
        ..FetchPolicy::default()
    }
}

#[tokio::test]
async fn local_repo_turned_into_a_symlink_after_submit_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let allowed = tmp.path().join("allowed");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let good = source_repo(&allowed);
    let secret = source_repo(&outside);
    let cache = MirrorCache::new(tmp.path().join("git"))
        .with_policy(policy_with_roots(vec![allowed.clone()]));
    let cancel = CancellationToken::new();
    let url = path_arg(&good).unwrap();
    cache.fetch(&url, T, &cancel, &mut sink()).await.unwrap();

    // After submit (the server checked the path), it is replaced by a symlink to outside.
    std::fs::remove_dir_all(&good).unwrap();
    std::os::unix::fs::symlink(&secret, &good).unwrap();
    let real_root = std::fs::canonicalize(&allowed).unwrap();
    for u in [url.clone(), format!("file://{url}")] {
        let mut log = Vec::new();
        let mut cb = |l: &[u8]| log.push(String::from_utf8_lossy(l).into_owned());
        let err = cache.fetch(&u, T, &cancel, &mut cb).await.unwrap_err();
        assert!(matches!(err, GitError::Refused(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&url), "{msg}");
        assert!(msg.contains("outside/src"), "{msg}");
        assert!(msg.contains(&real_root.display().to_string()), "{msg}");
        // Refused before git ran at all.
        assert!(log.iter().all(|l| !l.contains(" fetch ")), "{log:?}");
    }
    // A symlinked allowed root is fine: roots are compared by their real paths too.
    let link_root = tmp.path().join("link-root");
    std::os::unix::fs::symlink(&outside, &link_root).unwrap();
    let via_link = MirrorCache::new(tmp.path().join("git2"))
        .with_policy(policy_with_roots(vec![link_root.clone()]));
    let u = path_arg(&link_root.join("src")).unwrap();
    via_link.fetch(&u, T, &cancel, &mut sink()).await.unwrap();

    // Without any root, no local repository at all.
    let none = MirrorCache::new(tmp.path().join("git3"));
    let err = none
        .fetch(&path_arg(&secret).unwrap(), T, &cancel, &mut sink())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--allow-local-repos"), "{err}");
}

#[tokio::test]
async fn local_repo_reaching_outside_through_its_git_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let allowed = tmp.path().join("allowed");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let secret = source_repo(&outside);
    let cache = MirrorCache::new(tmp.path().join("git"))
        .with_policy(policy_with_roots(vec![allowed.clone()]));
    let cancel = CancellationToken::new();
    let fetch = |repo: PathBuf| {
        let cache = &cache;
        let cancel = &cancel;
        async move {
            let url = path_arg(&repo).unwrap();
            cache.fetch(&url, T, cancel, &mut sink()).await
        }
    };

    // A `.git` symlink, a `.git` file, an objects directory symlink, an alternates file.
    let a = allowed.join("dotgit-link");
    std::fs::create_dir_all(&a).unwrap();
    std::os::unix::fs::symlink(secret.join(".git"), a.join(".git")).unwrap();
    let b = allowed.join("dotgit-file");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(
        b.join(".git"),
        format!("gitdir: {}\n", secret.join(".git").display()),
    )
    .unwrap();
    let c = allowed.join("objects-link.git");
    g(tmp.path(), &["init", "-q", "--bare", c.to_str().unwrap()]);
    std::fs::remove_dir_all(c.join("objects")).unwrap();
    std::os::unix::fs::symlink(secret.join(".git/objects"), c.join("objects")).unwrap();
    let d = allowed.join("alternates.git");
    g(tmp.path(), &["init", "-q", "--bare", d.to_str().unwrap()]);
    std::fs::write(
        d.join("objects/info/alternates"),
        format!("{}\n", secret.join(".git/objects").display()),
    )
    .unwrap();
    for repo in [a, b, c, d] {
        let err = fetch(repo.clone()).await.unwrap_err();
        assert!(matches!(err, GitError::Refused(_)), "{repo:?}: {err:?}");
        assert!(
            err.to_string().contains("not under an allowed root"),
            "{err}"
        );
    }
    // The same kinds of links inside the roots are fine.
    let inner = source_repo(&allowed.join("inner"));
    let e = allowed.join("dotgit-inside");
    std::fs::create_dir_all(&e).unwrap();
    std::os::unix::fs::symlink(inner.join(".git"), e.join(".git")).unwrap();
    fetch(e).await.unwrap();
}

#[tokio::test]
async fn hosts_are_checked_before_git_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let open = MirrorCache::new(tmp.path().join("git"));
    for url in [
        "http://169.254.169.254/latest/meta-data.git",
        "https://user:pw@[fe80::1]/x.git",
        "http://2852039166/x.git",
        "git@169.254.169.254:x.git",
        "ext::sh -c touch% /tmp/pwned",
    ] {
        let mut log = Vec::new();
        let mut cb = |l: &[u8]| log.push(String::from_utf8_lossy(l).into_owned());
        let err = open.fetch(url, T, &cancel, &mut cb).await.unwrap_err();
        assert!(matches!(err, GitError::Refused(_)), "{url}: {err:?}");
        assert!(!err.to_string().contains("pw@"), "{err}");
        assert!(log.iter().all(|l| !l.contains(" fetch ")), "{log:?}");
    }
    let restricted = MirrorCache::new(tmp.path().join("git2")).with_policy(FetchPolicy {
        allowed_hosts: vec!["git.example.com".into(), "*.corp.example".into()],
        ..FetchPolicy::default()
    });
    let err = restricted
        .fetch("http://127.0.0.1:9/repo.git", T, &cancel, &mut sink())
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::Refused(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("'127.0.0.1' is not an allowed host (git.example.com, *.corp.example"),
        "{err}"
    );
    // An allowed host gets as far as git (which then finds nothing: the name is fake).
    let mut log = Vec::new();
    let mut cb = |l: &[u8]| log.push(String::from_utf8_lossy(l).into_owned());
    let err = restricted
        .fetch("https://a.corp.example./repo.git", T, &cancel, &mut cb)
        .await
        .unwrap_err();
    assert!(!matches!(err, GitError::Refused(_)), "{err:?}");
    assert!(log.iter().any(|l| l.contains(" fetch ")), "{log:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_is_given_up_after_the_stall_timeout() {
    // A tarpit: accepts connections and holds them, saying nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tarpit = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let cache = MirrorCache::new(tmp.path().join("git")).with_policy(FetchPolicy {
        stall_timeout: Duration::from_secs(2),
        ..FetchPolicy::default()
    });
    let started = std::time::Instant::now();
    let err = cache
        .fetch(
            &format!("http://127.0.0.1:{port}/repo.git"),
            Duration::from_secs(300),
            &CancellationToken::new(),
            &mut sink(),
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    tarpit.abort();
    assert!(matches!(err, GitError::Stalled { .. }), "{err:?}");
    assert!(
        err.to_string().ends_with("git made no progress for 2s"),
        "{err}"
    );
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test]
async fn progress_frames_count_as_progress_and_silence_does_not() {
    let cancel = CancellationToken::new();
    // Twice the stall timeout in all, with no newline, but a progress frame every 0.4s.
    let busy = Spec::shell(
        "for i in 1 2 3 4 5 6 7 8 9 10; do printf 'Receiving %s\\r' $i >&2; sleep 0.4; done; \
         printf 'Receiving 11, done.\\n' >&2; echo out",
    );
    let mut lines = Vec::new();
    let mut cb = |l: &[u8]| lines.push(String::from_utf8_lossy(l).into_owned());
    let ended = run_watched(&busy, T, Duration::from_secs(2), &cancel, &mut cb)
        .await
        .unwrap();
    assert_eq!(ended, Ended::Exited(0));
    lines.sort();
    assert_eq!(lines, ["Receiving 11, done.", "out"]);

    // Silent: killed after the stall timeout, with its whole group.
    let silent = Spec::shell("echo started; sleep 30 & sleep 30; echo never");
    let mut lines = Vec::new();
    let mut cb = |l: &[u8]| lines.push(String::from_utf8_lossy(l).into_owned());
    let started = std::time::Instant::now();
    let ended = run_watched(&silent, T, Duration::from_secs(1), &cancel, &mut cb)
        .await
        .unwrap();
    assert_eq!(ended, Ended::Stalled(Duration::from_secs(1)));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(lines, ["started"]);
}

#[test]
fn frames_keep_the_final_state_of_redrawn_lines() {
    let mut f = Frames::default();
    let mut got = Vec::new();
    let mut emit = |l: &[u8]| got.push(String::from_utf8_lossy(l).into_owned());
    f.push(b"a 1%\ra 5", &mut emit);
    f.push(b"0%\ra 100%, done.\nwin\r\n", &mut emit);
    f.push(b"\rtail", &mut emit);
    f.finish(&mut emit);
    assert_eq!(got, ["a 100%, done.", "win", "tail"]);
}

/// Standard base64, for comparing an Authorization header.
fn base64(input: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What the test HTTP server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    /// The Authorization header, if any.
    auth: Option<String>,
    /// Processes whose command line names the server (git and its helpers), while the
    /// request was held.
    procs: usize,
    /// Command lines that held the secret.
    leaks: Vec<String>,
}

/// Command lines of all processes: how many name `needle`, and those that hold `secret`.
fn scan_cmdlines(needle: &str, secret: &str) -> (usize, Vec<String>) {
    let mut procs = 0;
    let mut leaks = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            procs += 1;
        }
        if cmdline.contains(secret) {
            leaks.push(cmdline);
        }
    }
    (procs, leaks)
}

#[tokio::test]
async fn credentials_stay_off_command_lines() {
    use tokio::io::AsyncWriteExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let secret = format!("s3cr3t{nanos}x{}", std::process::id());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let needle = format!("127.0.0.1:{port}");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let server = {
        let (seen, secret, needle) = (seen.clone(), secret.clone(), needle.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 65536 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let auth = text
                    .lines()
                    .find_map(|l| {
                        l.split_once(':')
                            .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                    })
                    .map(|(_, v)| v.trim().to_string());
                // git is waiting for this answer: its processes are all alive now.
                let (procs, leaks) = scan_cmdlines(&needle, &secret);
                let answer: &[u8] = if auth.is_none() {
                    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"t\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else {
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                seen.lock().unwrap().push(Seen { auth, procs, leaks });
                let _ = sock.write_all(answer).await;
                let _ = sock.shutdown().await;
            }
        })
    };
    let tmp = tempfile::tempdir().unwrap();
    let cache = MirrorCache::new(tmp.path().join("git"));
    // A percent-encoded user name, as git would decode it.
    let url = format!("http://al%40ce:{secret}@127.0.0.1:{port}/repo.git");
    let mut log = Vec::new();
    let mut cb = |l: &[u8]| log.push(String::from_utf8_lossy(l).into_owned());
    let err = cache
        .fetch(&url, T, &CancellationToken::new(), &mut cb)
        .await
        .unwrap_err();
    server.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{seen:?}");
    for s in &seen {
        assert!(
            s.procs > 0,
            "no git process found while it waited: {seen:?}"
        );
        assert!(
            s.leaks.is_empty(),
            "secret on a command line: {:?}",
            s.leaks
        );
    }
    let want = format!("Basic {}", base64(format!("al@ce:{secret}").as_bytes()));
    assert!(
        seen.iter()
            .any(|s| s.auth.as_deref() == Some(want.as_str())),
        "{seen:?}"
    );
    assert!(!err.to_string().contains(&secret), "{err}");
    assert!(log.iter().all(|l| !l.contains(&secret)), "{log:?}");
    assert!(err.to_string().contains("500"), "{err}");
}

#[tokio::test]
async fn credentials_are_only_given_to_the_urls_own_host() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = MirrorCache::new(tmp.path().join("git"));
    let s = cache
        .source("https://u:p%2Fw@Git.Example.com:8443/r.git")
        .await
        .unwrap();
    assert_eq!(s.arg, "https://Git.Example.com:8443/r.git");
    let env: HashMap<_, _> = s.env.iter().cloned().collect();
    assert_eq!(env["TESTARENA_GIT_HOST"], "Git.Example.com:8443");
    assert_eq!(env["TESTARENA_GIT_PROTOCOL"], "https");
    assert_eq!(env["TESTARENA_GIT_USERNAME"], "u");
    assert_eq!(env["TESTARENA_GIT_PASSWORD"], "p/w");
    assert_eq!(env["GIT_ALLOW_PROTOCOL"], "https");
    // The helper itself answers for that host only, and nothing for another one.
    let ask = |host: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{} get", &CREDENTIAL_HELPER[1..]))
            .envs(&env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                let mut stdin = c.stdin.take().unwrap();
                write!(stdin, "protocol=https\nhost={host}\n\n")?;
                drop(stdin);
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(ask("Git.Example.com:8443"), "username=u\npassword=p/w\n");
    assert_eq!(ask("evil.example.org"), "");
    // Without credentials: the URL as given, the worker's own helpers untouched.
    let s = cache.source("https://host/r.git").await.unwrap();
    assert_eq!(s.arg, "https://host/r.git");
    assert!(s.env.iter().all(|(k, _)| !k.starts_with("GIT_CONFIG")));
    // ssh keeps its user name but cannot take a password.
    let s = cache.source("ssh://git@host/r.git").await.unwrap();
    assert_eq!(s.arg, "ssh://git@host/r.git");
    let err = cache.source("ssh://git:pw@host/r.git").await.unwrap_err();
    assert!(!err.to_string().contains("pw"), "{err}");
    assert_eq!(percent_decode("a%2f%41"), Some("a/A".into()));
    assert_eq!(percent_decode("a%2"), None);
}

#[tokio::test]
async fn submodules_on_refused_hosts_are_skipped_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source_repo(tmp.path());
    let head = g(&src, &["rev-parse", "HEAD"]);
    std::fs::write(
        src.join(".gitmodules"),
        "[submodule \"meta\"]\n\tpath = meta\n\turl = http://169.254.169.254/x.git\n",
    )
    .unwrap();
    g(
        &src,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{head},meta"),
        ],
    );
    g(&src, &["add", ".gitmodules"]);
    g(&src, &["commit", "-q", "-m", "sub"]);
    let cache = cache_in(tmp.path());
    let cancel = CancellationToken::new();
    let url = path_arg(&src).unwrap();
    let m = cache.fetch(&url, T, &cancel, &mut sink()).await.unwrap();
    let sha = cache.resolve(&m, "main", None, &cancel).await.unwrap();
    let dest = tmp.path().join("ws");
    let mut log = Vec::new();
    let mut cb = |l: &[u8]| log.push(String::from_utf8_lossy(l).into_owned());
    cache
        .checkout(&m, &sha, &dest, T, &cancel, &mut cb)
        .await
        .unwrap();
    assert!(dest.join("file").exists());
    assert!(
        log.iter()
            .any(|l| l.starts_with("warning:") && l.contains("never allowed")),
        "{log:?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("submodule update")),
        "{log:?}"
    );
}

#[test]
fn redact_hides_credentials() {
    let r = redact("https://user:secret@host/x");
    assert!(!r.contains("secret"));
    assert_eq!(r, "https://***@host/x");
    assert_eq!(
        redact("fatal: unable to access 'https://oauth2:tok3n@gitlab.com/a/b.git/': 403"),
        "fatal: unable to access 'https://***@gitlab.com/a/b.git/': 403"
    );
    assert_eq!(
        redact("see https://host/a?private_token=abc&x=1#f"),
        "see https://host/a?private_token=***&x=1#f"
    );
    assert!(!redact("https://u:pa/ss@host/x").contains("pa/ss"));
    assert_eq!(
        redact("git@github.com:a/b.git and /local/path"),
        "git@github.com:a/b.git and /local/path"
    );
    assert_eq!(
        redact("two http://a:b@h1/ x https://c@h2/y"),
        "two http://***@h1/ x https://***@h2/y"
    );
}

#[test]
fn mirror_paths_are_stable_and_safe() {
    let cache = MirrorCache::new(PathBuf::from("/data/git"));
    let a = cache.mirror_path("https://github.com/espressif/esp-idf.git");
    assert_eq!(
        a,
        cache.mirror_path("https://github.com/espressif/esp-idf.git")
    );
    let name = a.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("esp-idf-") && name.ends_with(".git"),
        "{name}"
    );
    assert_eq!(a.parent(), Some(Path::new("/data/git")));
    assert_ne!(
        a,
        cache.mirror_path("https://gitlab.com/espressif/esp-idf.git")
    );
    // Same repository with rotated credentials: same mirror.
    assert_eq!(
        cache.mirror_path("https://u:t1@h/r.git"),
        cache.mirror_path("https://u:t2@h/r.git")
    );
    for weird in ["", "/", "https://h/..", "https://h/a b/%2e%2e"] {
        let p = cache.mirror_path(weird);
        assert_eq!(p.parent(), Some(Path::new("/data/git")), "{weird}");
        let n = p.file_name().unwrap().to_str().unwrap();
        assert!(!n.starts_with('.') && !n.starts_with('-'), "{n}");
    }
    // A known FNV-1a value keeps the hash from changing silently between versions.
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn git_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let cache = MirrorCache::new(PathBuf::from("/nonexistent"));
    let cancel = CancellationToken::new();
    let mut cb = sink();
    assert_send(&cache.fetch("x", T, &cancel, &mut cb));
    assert_send(&cache.resolve(Path::new("/x"), "main", None, &cancel));
    let mut cb2 = sink();
    assert_send(&cache.checkout(Path::new("/x"), "ab", Path::new("/y"), T, &cancel, &mut cb2));
}
