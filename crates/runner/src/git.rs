//! Git mirror cache: one bare mirror per repository URL, fetched (never re-cloned), and cheap
//! checkouts of an exact commit into a queue's workspace.
//!
//! Every git command runs through [`crate::process::run`] (own process group, timeout,
//! cancellable), with no terminal and no prompts, and with user input never passed through a
//! shell. Credentials embedded in URLs are never written to disk by us and never appear in log
//! lines or error messages ([`redact`]).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::process::{self, Outcome, Spec};

/// Grace between TERM and KILL when a git command is stopped.
const GIT_GRACE: Duration = Duration::from_secs(2);

/// Bound for the quick local commands of `resolve`, which take no timeout of their own.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many of git's last output lines are kept for an error message.
const KEPT_LINES: usize = 20;

/// Longest kept output line; git's error lines are short, anything longer is noise.
const KEPT_LINE_LEN: usize = 1000;

/// File inside a mirror holding its (redacted) URL, so errors can name the repository.
const URL_FILE: &str = "testarena-url";

/// Errors from the git mirror cache.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// A git command exited with an error; `detail` holds its last output lines (redacted).
    #[error("{what} failed (git exit code {code}): {detail}")]
    Command {
        /// What we were doing, e.g. "fetching https://host/repo".
        what: String,
        /// git's exit code.
        code: i32,
        /// git's last output lines, credentials removed.
        detail: String,
    },
    /// A git command (or the wait for another fetch of the same mirror) ran out of time.
    #[error("{what} timed out after {after:?}")]
    TimedOut {
        /// What we were doing.
        what: String,
        /// The time limit that ran out.
        after: Duration,
    },
    /// The operation was cancelled (abort or shutdown).
    #[error("{what} was cancelled")]
    Cancelled {
        /// What we were doing.
        what: String,
    },
    /// The requested branch does not exist in the repository.
    #[error("branch '{branch}' not found in {url}")]
    BranchNotFound {
        /// The branch asked for.
        branch: String,
        /// The repository, credentials removed.
        url: String,
    },
    /// The requested commit does not exist in the repository.
    #[error("commit {commit} not found in {url}")]
    CommitNotFound {
        /// The commit asked for.
        commit: String,
        /// The repository, credentials removed.
        url: String,
    },
    /// An argument was unusable (malformed SHA or branch, non-empty destination, ...).
    #[error("{0}")]
    Invalid(String),
    /// A file system operation around git failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// git could not be started or supervised.
    #[error(transparent)]
    Process(#[from] process::ProcessError),
}

/// One bare mirror per repository URL under a root directory, with per-URL locking.
#[derive(Debug)]
pub struct MirrorCache {
    /// The directory holding the mirrors (`<data>/git/`).
    root: PathBuf,
    /// One async lock per mirror path, so that concurrent queues on one repository wait for
    /// each other instead of fetching into the same mirror at once. Another worker process on
    /// the same data directory is kept out by a file lock as well.
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl MirrorCache {
    /// A cache rooted at `root` (created on first fetch).
    pub fn new(root: PathBuf) -> Self {
        MirrorCache {
            root,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Where the mirror of `url` lives: `root/<last path component>-<64-bit FNV-1a hex>.git`.
    /// The hash is over the URL with credentials removed, so a rotated token reuses the mirror.
    pub fn mirror_path(&self, url: &str) -> PathBuf {
        let key = redact(url);
        let base = key.split(['?', '#']).next().unwrap_or("");
        let base = base.trim_end_matches('/');
        let last = base.rsplit(['/', ':', '\\']).next().unwrap_or("");
        let last = last.strip_suffix(".git").unwrap_or(last);
        let mut name: String = last
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        // A leading dot would hide the mirror; an empty name would start with the dash.
        name = name.trim_start_matches('.').to_string();
        if name.is_empty() {
            name.push_str("repo");
        }
        self.root
            .join(format!("{name}-{:016x}.git", fnv1a64(key.as_bytes())))
    }

    /// Creates the mirror if missing, else fetches into it (`--prune`); returns the mirror
    /// path. A directory left by an interrupted creation is removed and created again. Tells
    /// `on_line` what it runs and what git says, credentials removed.
    pub async fn fetch(
        &self,
        url: &str,
        timeout: Duration,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<PathBuf, GitError> {
        let deadline = Instant::now() + timeout;
        let shown = redact(url);
        let mirror = self.mirror_path(url);
        std::fs::create_dir_all(&self.root).map_err(|source| GitError::Io {
            what: format!("cannot create {}", self.root.display()),
            source,
        })?;

        let what = format!("fetching {shown}");
        let lock = self.url_lock(&mirror);
        let _in_process = tokio::select! {
            guard = lock.lock() => guard,
            _ = cancel.cancelled() => return Err(GitError::Cancelled { what }),
            _ = tokio::time::sleep_until(deadline) => {
                return Err(GitError::TimedOut { what, after: timeout });
            }
        };
        let mut lock_path = mirror.clone().into_os_string();
        lock_path.push(".lock");
        let _across_processes =
            lock_file(Path::new(&lock_path), deadline, timeout, cancel, &what).await?;

        let ctx = Ctx {
            deadline,
            timeout,
            cancel,
        };
        if mirror.exists() && !looks_like_repo(&mirror) {
            // Left by an interrupted `git init` (or by hand): nothing in it is worth keeping.
            on_line(format!("removing incomplete mirror {}", mirror.display()).as_bytes());
            tokio::fs::remove_dir_all(&mirror)
                .await
                .map_err(|source| GitError::Io {
                    what: format!("cannot remove incomplete mirror {}", mirror.display()),
                    source,
                })?;
        }
        let mirror_arg = path_arg(&mirror)?;
        if !mirror.exists() {
            // `init` + `fetch <url>` rather than `clone --mirror <url>`: the URL (and any
            // credentials in it) is never stored in the mirror's config, and an interrupted
            // first fetch leaves a valid repository that the next fetch simply completes.
            ctx.git(
                &format!("creating mirror for {shown}"),
                vec![
                    "init".into(),
                    "--bare".into(),
                    "--quiet".into(),
                    "--".into(),
                    mirror_arg.clone(),
                ],
                Some(on_line),
            )
            .await?;
        }
        let url_file = mirror.join(URL_FILE);
        if !url_file.exists() {
            std::fs::write(&url_file, format!("{shown}\n")).map_err(|source| GitError::Io {
                what: format!("cannot write {}", url_file.display()),
                source,
            })?;
        }
        ctx.git(
            &what,
            vec![
                format!("--git-dir={mirror_arg}"),
                "fetch".into(),
                "--prune".into(),
                "--quiet".into(),
                // FETCH_HEAD would record the URL; we never need it.
                "--no-write-fetch-head".into(),
                "--".into(),
                url.to_string(),
                // Mirror semantics: every ref as the remote has it, forced, deleted ones pruned.
                "+refs/*:refs/*".into(),
            ],
            Some(on_line),
        )
        .await?;
        Ok(mirror)
    }

    /// Resolves the SHA to test: `commit` if given (it must exist in the mirror), else the head
    /// of `branch`. Returns the full SHA.
    pub async fn resolve(
        &self,
        mirror: &Path,
        branch: &str,
        commit: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<String, GitError> {
        let url = std::fs::read_to_string(mirror.join(URL_FILE))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| mirror.display().to_string());
        let ctx = Ctx {
            deadline: Instant::now() + RESOLVE_TIMEOUT,
            timeout: RESOLVE_TIMEOUT,
            cancel,
        };
        let git_dir = format!("--git-dir={}", path_arg(mirror)?);
        // The revision is built from checked input only, so it can be neither an option nor
        // revision syntax (`main~3`, `@{1}`) that would pick some other commit.
        let (rev, not_found) = match commit {
            Some(c) => {
                if !is_hex(c, 4, 64) {
                    return Err(GitError::Invalid(format!(
                        "commit '{}' is not a hexadecimal SHA",
                        shorten(c)
                    )));
                }
                let nf = GitError::CommitNotFound {
                    commit: c.to_string(),
                    url,
                };
                (format!("{c}^{{commit}}"), nf)
            }
            None => {
                if !is_plain_branch(branch) {
                    return Err(GitError::Invalid(format!(
                        "invalid branch name '{}'",
                        shorten(branch)
                    )));
                }
                let nf = GitError::BranchNotFound {
                    branch: branch.to_string(),
                    url,
                };
                (format!("refs/heads/{branch}^{{commit}}"), nf)
            }
        };
        let args = vec![
            git_dir,
            "rev-parse".into(),
            "--verify".into(),
            "--quiet".into(),
            rev,
        ];
        match ctx.git("resolving the commit", args, None).await {
            Ok(lines) => lines
                .iter()
                .map(|l| l.trim())
                .find(|l| is_hex(l, 40, 64))
                .map(str::to_string)
                .ok_or(not_found),
            Err(GitError::Command { .. }) => Err(not_found),
            Err(e) => Err(e),
        }
    }

    /// Checks out exactly `sha` into `dest` (absent or empty): a `clone --shared` of the
    /// mirror (objects borrowed, nothing copied), a detached checkout, and submodules if the
    /// repository has any (best effort, reported through `on_line`). On failure `dest` is left
    /// as it is for the caller to remove with the rest of the workspace.
    pub async fn checkout(
        &self,
        mirror: &Path,
        sha: &str,
        dest: &Path,
        timeout: Duration,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(), GitError> {
        if !is_hex(sha, 40, 64) {
            return Err(GitError::Invalid(format!(
                "'{}' is not a full commit SHA",
                shorten(sha)
            )));
        }
        match std::fs::read_dir(dest) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(GitError::Invalid(format!(
                        "checkout destination {} is not empty",
                        dest.display()
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(GitError::Io {
                    what: format!("cannot read {}", dest.display()),
                    source,
                })
            }
        }
        let ctx = Ctx {
            deadline: Instant::now() + timeout,
            timeout,
            cancel,
        };
        let dest_arg = path_arg(dest)?;
        let short = &sha[..12];
        ctx.git(
            &format!("cloning the mirror into {}", dest.display()),
            vec![
                "clone".into(),
                "--shared".into(),
                "--no-checkout".into(),
                "--quiet".into(),
                "--".into(),
                path_arg(mirror)?,
                dest_arg.clone(),
            ],
            Some(on_line),
        )
        .await?;
        ctx.git(
            &format!("checking out {short}"),
            vec![
                "-C".into(),
                dest_arg.clone(),
                "checkout".into(),
                "--quiet".into(),
                "--detach".into(),
                sha.to_string(),
                // Nothing after this is a path: the SHA cannot be mistaken for a file name.
                "--".into(),
            ],
            Some(on_line),
        )
        .await?;
        if dest.join(".gitmodules").exists() {
            let result = ctx
                .git(
                    "updating submodules",
                    vec![
                        "-C".into(),
                        dest_arg,
                        "submodule".into(),
                        "update".into(),
                        "--init".into(),
                        "--recursive".into(),
                        "--quiet".into(),
                    ],
                    Some(on_line),
                )
                .await;
            match result {
                Ok(_) => {}
                // Stopping is never best effort.
                Err(e @ (GitError::Cancelled { .. } | GitError::TimedOut { .. })) => return Err(e),
                Err(e) => on_line(format!("warning: {e}; continuing without them").as_bytes()),
            }
        }
        Ok(())
    }

    /// The in-process lock for one mirror.
    fn url_lock(&self, mirror: &Path) -> Arc<tokio::sync::Mutex<()>> {
        // A panic elsewhere while holding the map lock leaves the map itself intact.
        let mut map = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(mirror.to_path_buf()).or_default().clone()
    }
}

/// Where output lines go.
type LineSink<'a> = dyn FnMut(&[u8]) + Send + 'a;

/// Limits shared by the git commands of one operation.
struct Ctx<'a> {
    /// When the whole operation must be done.
    deadline: Instant,
    /// The operation's time limit, for the error message.
    timeout: Duration,
    /// Abort or shutdown.
    cancel: &'a CancellationToken,
}

impl Ctx<'_> {
    /// Runs `git args`, forwarding its output (redacted) to `on_line`; returns the last output
    /// lines (redacted), or an error naming `what` with git's last lines if it failed.
    async fn git(
        &self,
        what: &str,
        args: Vec<String>,
        mut on_line: Option<&mut LineSink<'_>>,
    ) -> Result<Vec<String>, GitError> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(GitError::TimedOut {
                what: what.to_string(),
                after: self.timeout,
            });
        }
        if let Some(f) = on_line.as_mut() {
            f(format!("$ git {}", redact(&args.join(" "))).as_bytes());
        }
        let spec = Spec::new("git", args)
            // No prompt may ever wait for an answer: fail instead.
            .with_env("GIT_TERMINAL_PROMPT", "0")
            .with_env("GCM_INTERACTIVE", "never")
            .with_stdin(false);
        let mut kept: VecDeque<String> = VecDeque::with_capacity(KEPT_LINES);
        let mut cb = |line: &[u8]| {
            let line = redact_bytes(line);
            if let Some(f) = on_line.as_mut() {
                f(&line);
            }
            if kept.len() == KEPT_LINES {
                kept.pop_front();
            }
            let end = line.len().min(KEPT_LINE_LEN);
            kept.push_back(String::from_utf8_lossy(&line[..end]).into_owned());
        };
        let outcome = process::run(&spec, remaining, self.cancel, &mut cb, GIT_GRACE).await?;
        match outcome {
            Outcome::Exited(0) => Ok(kept.into()),
            Outcome::Exited(code) => {
                let detail: Vec<&str> = kept
                    .iter()
                    .map(|l| l.trim())
                    .filter(|l| !l.is_empty())
                    .collect();
                let detail = if detail.is_empty() {
                    "no output".to_string()
                } else {
                    detail.join("\n")
                };
                Err(GitError::Command {
                    what: what.to_string(),
                    code,
                    detail,
                })
            }
            Outcome::TimedOut(_) => Err(GitError::TimedOut {
                what: what.to_string(),
                after: self.timeout,
            }),
            Outcome::Cancelled => Err(GitError::Cancelled {
                what: what.to_string(),
            }),
        }
    }
}

/// True if `path` has what git itself requires of a repository (HEAD, objects/, refs/).
/// Checked on the file system rather than by asking git, so that a git failure for another
/// reason (ownership, configuration) is reported instead of costing us the whole mirror.
fn looks_like_repo(path: &Path) -> bool {
    path.join("HEAD").is_file() && path.join("objects").is_dir() && path.join("refs").is_dir()
}

/// Takes an exclusive `flock` on `path`, waiting (cancellably) until `deadline`; the lock lasts
/// as long as the returned file is open, and the kernel drops it if the process dies.
async fn lock_file(
    path: &Path,
    deadline: Instant,
    timeout: Duration,
    cancel: &CancellationToken,
    what: &str,
) -> Result<File, GitError> {
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(|source| GitError::Io {
            what: format!("cannot open lock file {}", path.display()),
            source,
        })?;
    loop {
        // SAFETY: flock only reads the descriptor number, which `file` keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(file);
        }
        let err = io::Error::last_os_error();
        if !matches!(
            err.raw_os_error(),
            Some(libc::EWOULDBLOCK) | Some(libc::EINTR)
        ) {
            return Err(GitError::Io {
                what: format!("cannot lock {}", path.display()),
                source: err,
            });
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(GitError::Cancelled { what: what.to_string() }),
            _ = tokio::time::sleep_until(deadline) => {
                return Err(GitError::TimedOut { what: what.to_string(), after: timeout });
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// A path as a command argument; git takes paths as bytes but our `Spec` holds strings.
fn path_arg(path: &Path) -> Result<String, GitError> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| GitError::Invalid(format!("path {} is not UTF-8", path.display())))
}

/// True if `s` is `min..=max` hexadecimal digits.
fn is_hex(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// True if `b` can only mean the branch of that name: no option, no revision syntax. The
/// server validates branch names fully; this only guards what reaches `rev-parse`.
fn is_plain_branch(b: &str) -> bool {
    !b.is_empty()
        && !b.starts_with(['-', '/'])
        && !b.contains("..")
        && !b.contains("@{")
        && !b
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
}

/// Cuts user input for an error message.
fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

/// 64-bit FNV-1a: tiny, stable across processes and versions (unlike `DefaultHasher`).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// [`redact`] for raw output lines; lines without a URL pass through untouched.
fn redact_bytes(line: &[u8]) -> Cow<'_, [u8]> {
    if !line.windows(3).any(|w| w == b"://") {
        return Cow::Borrowed(line);
    }
    Cow::Owned(redact(&String::from_utf8_lossy(line)).into_bytes())
}

pub use testarena_core::redact::redact;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

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

    #[tokio::test]
    async fn mirror_is_created_once_and_fetched_after() {
        let tmp = tempfile::tempdir().unwrap();
        let src = source_repo(tmp.path());
        let url = path_arg(&src).unwrap();
        let cache = MirrorCache::new(tmp.path().join("git"));
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
        let cache = MirrorCache::new(tmp.path().join("git"));
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
        let cache = MirrorCache::new(tmp.path().join("git"));
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
    async fn checkout_updates_submodules() {
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
        let cache = MirrorCache::new(tmp.path().join("git"));
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
        assert!(
            log.iter().any(|l| l.contains("submodule update")),
            "{log:?}"
        );
        // git refuses local file:// submodules by default (protocol.file.allow=user); that is
        // the best-effort path: a warning, and the checkout itself still succeeds.
        assert!(dest.join("file").exists());
        if !dest.join("lib/inner").exists() {
            assert!(log.iter().any(|l| l.starts_with("warning:")), "{log:?}");
        }
    }

    #[tokio::test]
    async fn failing_clone_gives_a_readable_error() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = MirrorCache::new(tmp.path().join("git"));
        let bad = tmp.path().join("does-not-exist");
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
    }

    #[tokio::test]
    async fn credentials_never_reach_logs_or_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = MirrorCache::new(tmp.path().join("git"));
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
        let cache = MirrorCache::new(tmp.path().join("git"));
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
        let cache = MirrorCache::new(tmp.path().join("git"));
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
        let cache = MirrorCache::new(tmp.path().join("git"));
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
        let cache = MirrorCache::new(tmp.path().join("git"));
        let cancel = CancellationToken::new();
        cancel.cancel();
        let err = cache
            .fetch(src.to_str().unwrap(), T, &cancel, &mut sink())
            .await
            .unwrap_err();
        assert!(matches!(err, GitError::Cancelled { .. }), "{err:?}");
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
}
