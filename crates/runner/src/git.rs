//! Git mirror cache: one bare mirror per repository URL, fetched (never re-cloned), and cheap
//! checkouts of an exact commit into a queue's workspace.
//!
//! Every git command runs in its own process group (timeout, cancellable, killed as a whole),
//! with no terminal and no prompts, and with user input never passed through a shell.
//! Credentials embedded in URLs are never written to disk by us, never appear in log lines or
//! error messages ([`redact`]), and never reach a command line (where `/proc/*/cmdline` shows
//! them to every user): git gets the URL without them and asks a credential helper that reads
//! them from its environment.
//!
//! Untrusted input is checked again right before every fetch ([`FetchPolicy`]): a local
//! repository must really (symlinks resolved) lie under an allowed root, a remote host must be
//! allowed and never a link-local or metadata address, and a fetch that makes no progress for
//! the stall timeout is killed.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use testarena_core::repo_url::{self, RepoTarget};
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

/// Default of [`FetchPolicy::stall_timeout`].
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Most entries of a local repository's git directory that are checked for symlinks; a larger
/// one is refused rather than checked for minutes.
const MAX_LOCAL_ENTRIES: usize = 2_000_000;

/// The protocols a submodule may be fetched with: never `file` (a submodule must not read the
/// worker's disk), never `ext` (it runs commands).
const SUBMODULE_PROTOCOLS: &str = "http:https:ssh:git";

/// The credential helper given to git when the URL carried credentials: it answers only for
/// the URL's own protocol and host, from variables of its environment, so the secret is on no
/// command line and in no file. Prior helpers (the worker user's own) are reset for that run.
const CREDENTIAL_HELPER: &str = "!f() { test \"$1\" = get || exit 0; h=; p=; \
while IFS= read -r l; do case \"$l\" in host=*) h=\"${l#host=}\";; protocol=*) p=\"${l#protocol=}\";; esac; done; \
test \"$h\" = \"$TESTARENA_GIT_HOST\" && test \"$p\" = \"$TESTARENA_GIT_PROTOCOL\" || exit 0; \
printf 'username=%s\\npassword=%s\\n' \"$TESTARENA_GIT_USERNAME\" \"$TESTARENA_GIT_PASSWORD\"; }; f";

/// What a worker may fetch, and how long a fetch may go without progress. Checked right before
/// every fetch, since what a local path points at can change after the queue was submitted.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Directories local repositories (plain paths, `file://` URLs) must really lie under,
    /// symlinks resolved; empty refuses every local repository.
    pub allowed_roots: Vec<PathBuf>,
    /// Host patterns remote repositories must match (`git.example.com`, `*.corp.example`);
    /// empty allows any host. Link-local and metadata addresses are refused regardless.
    pub allowed_hosts: Vec<String>,
    /// How long git may print nothing (no progress at all) before a fetch is killed; zero
    /// disables the check.
    pub stall_timeout: Duration,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            allowed_roots: Vec::new(),
            allowed_hosts: Vec::new(),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

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
    /// The repository is not allowed on this worker (local path outside the allowed roots,
    /// host not allowed, unusable URL); the message names what and why.
    #[error("{0}")]
    Refused(String),
    /// git printed nothing, no progress at all, for the stall timeout and was killed.
    #[error("{what} failed: git made no progress for {}", secs(*after))]
    Stalled {
        /// What we were doing.
        what: String,
        /// The stall timeout.
        after: Duration,
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
    /// What may be fetched; roots already resolved to their real paths.
    policy: FetchPolicy,
    /// One async lock per mirror path, so that concurrent queues on one repository wait for
    /// each other instead of fetching into the same mirror at once. Another worker process on
    /// the same data directory is kept out by a file lock as well.
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl MirrorCache {
    /// A cache rooted at `root` (created on first fetch), with the default [`FetchPolicy`]: no
    /// local repositories, any remote host, a stall timeout of one minute.
    pub fn new(root: PathBuf) -> Self {
        MirrorCache {
            root,
            policy: FetchPolicy::default(),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The same cache with `policy`; its roots are resolved to their real paths now (a root
    /// that does not exist is kept as given, and nothing can be found under it).
    pub fn with_policy(mut self, mut policy: FetchPolicy) -> Self {
        policy.allowed_roots = policy
            .allowed_roots
            .into_iter()
            .filter(|r| !r.as_os_str().is_empty())
            .map(|r| std::fs::canonicalize(&r).unwrap_or(r))
            .collect();
        self.policy = policy;
        self
    }

    /// The stall timeout as the git runner takes it.
    fn stall(&self) -> Option<Duration> {
        Some(self.policy.stall_timeout).filter(|d| !d.is_zero())
    }

    /// Checks `url` against the policy and says how to hand it to git: the argument (a local
    /// repository's real path, a remote URL without credentials) and the environment (allowed
    /// protocols, the credentials for the helper).
    async fn source(&self, url: &str) -> Result<Source, GitError> {
        let target = repo_url::parse(url).map_err(GitError::Refused)?;
        let remote = match target {
            RepoTarget::Local(path) => {
                let path = path.to_string();
                let roots = self.policy.allowed_roots.clone();
                let real = tokio::task::spawn_blocking(move || check_local(&path, &roots))
                    .await
                    .map_err(|e| GitError::Io {
                        what: "checking the local repository".into(),
                        source: io::Error::other(e.to_string()),
                    })??;
                return Ok(Source {
                    arg: path_arg(&real)?,
                    env: vec![("GIT_ALLOW_PROTOCOL".into(), "file".into())],
                });
            }
            RepoTarget::Remote(r) => r,
        };
        repo_url::check_host(remote.host, &self.policy.allowed_hosts).map_err(GitError::Refused)?;
        let protocols = match remote.scheme {
            "http" => "http:https",
            "https" => "https",
            "git" => "git",
            _ => "ssh",
        };
        let mut env = vec![("GIT_ALLOW_PROTOCOL".to_string(), protocols.to_string())];
        let (Some(userinfo), Some(span)) = (remote.userinfo, remote.userinfo_span.clone()) else {
            return Ok(Source {
                arg: url.to_string(),
                env,
            });
        };
        let stripped = format!("{}{}", &url[..span.start], &url[span.end..]);
        match remote.scheme {
            "http" | "https" => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let bad = || {
                    GitError::Invalid(format!(
                        "the credentials in {} are not valid percent-encoded text",
                        redact(url)
                    ))
                };
                let user = percent_decode(user).ok_or_else(bad)?;
                let password = percent_decode(password).ok_or_else(bad)?;
                if (user.clone() + &password).contains(['\n', '\r', '\0']) {
                    return Err(bad());
                }
                // Appended to whatever `GIT_CONFIG_*` the worker was started with.
                let base: usize = std::env::var("GIT_CONFIG_COUNT")
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let helper_reset = ("credential.helper", "");
                let helper = ("credential.helper", CREDENTIAL_HELPER);
                for (i, (key, value)) in [helper_reset, helper].into_iter().enumerate() {
                    env.push((format!("GIT_CONFIG_KEY_{}", base + i), key.into()));
                    env.push((format!("GIT_CONFIG_VALUE_{}", base + i), value.into()));
                }
                env.push(("GIT_CONFIG_COUNT".into(), (base + 2).to_string()));
                env.push(("TESTARENA_GIT_HOST".into(), remote.host_port.to_string()));
                env.push((
                    "TESTARENA_GIT_PROTOCOL".into(),
                    url[..remote.scheme.len()].to_string(),
                ));
                env.push(("TESTARENA_GIT_USERNAME".into(), user));
                env.push(("TESTARENA_GIT_PASSWORD".into(), password));
                Ok(Source { arg: stripped, env })
            }
            // git:// has no authentication: the userinfo is meaningless, drop it.
            "git" => Ok(Source { arg: stripped, env }),
            // ssh's user name is no secret, but ssh takes no password from a URL, and git would
            // put it on ssh's command line.
            _ if userinfo.contains(':') => Err(GitError::Refused(format!(
                "the ssh URL of host {} carries a password, which ssh cannot use; use an SSH key",
                remote.host
            ))),
            _ => Ok(Source {
                arg: url.to_string(),
                env,
            }),
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
    /// `on_line` what it runs and what git says, credentials removed. The URL is checked
    /// against the [`FetchPolicy`] right before git runs; git is killed if it makes no
    /// progress for the stall timeout.
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
        // Checked now, after any wait for the lock, so nothing can change in between.
        let source = self.source(url).await?;
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
        ctx.git_with(
            &what,
            vec![
                // A redirect could lead to a host the policy refuses (a metadata address).
                "-c".into(),
                "http.followRedirects=false".into(),
                format!("--git-dir={mirror_arg}"),
                "fetch".into(),
                "--prune".into(),
                "--quiet".into(),
                // Progress on stderr even without a terminal: what the stall check watches.
                "--progress".into(),
                // FETCH_HEAD would record the URL; we never need it.
                "--no-write-fetch-head".into(),
                "--".into(),
                source.arg,
                // Mirror semantics: every ref as the remote has it, forced, deleted ones pruned.
                "+refs/*:refs/*".into(),
            ],
            &source.env,
            self.stall(),
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
            match self.update_submodules(&ctx, dest, on_line).await {
                Ok(()) => {}
                // Stopping is never best effort.
                Err(e @ (GitError::Cancelled { .. } | GitError::TimedOut { .. })) => return Err(e),
                // Like any other submodule failure (a stalled one included): best effort.
                Err(e) => on_line(format!("warning: {e}; continuing without them").as_bytes()),
            }
        }
        Ok(())
    }

    /// Initialises and fetches the submodules of `top`, level by level (nested ones too), each
    /// level's URLs checked against the policy first: a remote host must be allowed, and local
    /// URLs (`file` protocol, relative URLs resolved against the local mirror) are refused.
    async fn update_submodules(
        &self,
        ctx: &Ctx<'_>,
        top: &Path,
        on_line: &mut LineSink<'_>,
    ) -> Result<(), GitError> {
        /// Nesting beyond this is not followed.
        const MAX_DEPTH: usize = 8;
        let env = [(
            "GIT_ALLOW_PROTOCOL".to_string(),
            SUBMODULE_PROTOCOLS.to_string(),
        )];
        // Only directories really inside the checkout are entered: a `.gitmodules` path may
        // name a committed symlink.
        let real_top = std::fs::canonicalize(top).map_err(|source| GitError::Io {
            what: format!("cannot resolve {}", top.display()),
            source,
        })?;
        let mut pending = vec![(real_top.clone(), 0)];
        while let Some((dir, depth)) = pending.pop() {
            if depth > MAX_DEPTH || !dir.join(".gitmodules").is_file() {
                continue;
            }
            let dir_arg = path_arg(&dir)?;
            let entries = gitmodules(ctx, &dir_arg).await?;
            for (key, value) in &entries {
                if !key.ends_with(".url") || value.starts_with("./") || value.starts_with("../") {
                    continue;
                }
                match repo_url::parse(value) {
                    Ok(RepoTarget::Remote(r)) => {
                        repo_url::check_host(r.host, &self.policy.allowed_hosts)
                            .map_err(|m| GitError::Refused(format!("submodule {key}: {m}")))?;
                    }
                    Ok(RepoTarget::Local(_)) => {
                        return Err(GitError::Refused(format!(
                            "submodule {key}: local URL '{}' refused",
                            shorten(value)
                        )));
                    }
                    Err(m) => return Err(GitError::Refused(format!("submodule {key}: {m}"))),
                }
            }
            ctx.git_with(
                "updating submodules",
                vec![
                    "-c".into(),
                    "http.followRedirects=false".into(),
                    "-C".into(),
                    dir_arg,
                    "submodule".into(),
                    "update".into(),
                    "--init".into(),
                    "--quiet".into(),
                    "--progress".into(),
                ],
                &env,
                self.stall(),
                Some(&mut *on_line),
            )
            .await?;
            for (key, value) in &entries {
                let rel = Path::new(value);
                let inside = rel
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !key.ends_with(".path") || !inside {
                    continue;
                }
                if let Ok(sub) = std::fs::canonicalize(dir.join(rel)) {
                    if sub.starts_with(&real_top) && sub != dir {
                        pending.push((sub, depth + 1));
                    }
                }
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
        on_line: Option<&mut LineSink<'_>>,
    ) -> Result<Vec<String>, GitError> {
        self.git_with(what, args, &[], None, on_line).await
    }

    /// [`Ctx::git`] with extra environment variables, and with a stall timeout if `stall` is
    /// set: git is killed when it prints nothing (progress counts, also a `\r` frame) for
    /// that long.
    async fn git_with(
        &self,
        what: &str,
        args: Vec<String>,
        env: &[(String, String)],
        stall: Option<Duration>,
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
        let mut spec = Spec::new("git", args)
            // No prompt may ever wait for an answer: fail instead.
            .with_env("GIT_TERMINAL_PROMPT", "0")
            .with_env("GCM_INTERACTIVE", "never")
            .with_stdin(false);
        for (key, value) in env {
            spec = spec.with_env(key.as_str(), value.as_str());
        }
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
        let ended = match stall {
            None => match process::run(&spec, remaining, self.cancel, &mut cb, GIT_GRACE).await? {
                Outcome::Exited(code) => Ended::Exited(code),
                Outcome::TimedOut(_) => Ended::TimedOut,
                Outcome::Cancelled => Ended::Cancelled,
            },
            Some(stall) => run_watched(&spec, remaining, stall, self.cancel, &mut cb).await?,
        };
        match ended {
            Ended::Exited(0) => Ok(kept.into()),
            Ended::Exited(code) => {
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
            Ended::TimedOut => Err(GitError::TimedOut {
                what: what.to_string(),
                after: self.timeout,
            }),
            Ended::Cancelled => Err(GitError::Cancelled {
                what: what.to_string(),
            }),
            Ended::Stalled(after) => Err(GitError::Stalled {
                what: what.to_string(),
                after,
            }),
        }
    }
}

/// How a git command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// It exited by itself with this code (128 + signal number if a signal killed it).
    Exited(i32),
    /// The operation's deadline passed; the group was killed.
    TimedOut,
    /// Abort or shutdown; the group was killed.
    Cancelled,
    /// Nothing was printed for this long; the group was killed.
    Stalled(Duration),
}

/// Runs `spec` like [`process::run`] (own process group, killed as a whole on timeout or
/// cancel), but watching for progress: every byte git prints counts, including the
/// `\r`-terminated progress frames that `process::run` would only hand over as one line at the
/// end. No byte for `stall` kills the group. Lines go to `on_line` as a terminal would leave
/// them: of a line redrawn with `\r`, only its final state.
async fn run_watched(
    spec: &Spec,
    timeout: Duration,
    stall: Duration,
    cancel: &CancellationToken,
    on_line: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<Ended, GitError> {
    let io_err = |source| {
        GitError::Process(process::ProcessError::Io {
            program: spec.program.clone(),
            source,
        })
    };
    let mut group = process::spawn(spec)?;
    let mut stdout = group.child.stdout.take();
    let mut stderr = group.child.stderr.take();
    let (mut out_lines, mut err_lines) = (Frames::default(), Frames::default());
    let (mut out_buf, mut err_buf) = (vec![0u8; 8192], vec![0u8; 8192]);
    let deadline = Instant::now() + timeout;
    let mut last_byte = Instant::now();
    let mut status = None;
    // Once git has exited, whatever still holds its pipes (a leftover of its group) gets this
    // long before we stop reading.
    let mut drain_until: Option<Instant> = None;
    let stopped = loop {
        if status.is_some() && stdout.is_none() && stderr.is_none() {
            break None;
        }
        let running = status.is_none();
        tokio::select! {
            _ = cancel.cancelled(), if running => break Some(Ended::Cancelled),
            _ = tokio::time::sleep_until(deadline), if running => break Some(Ended::TimedOut),
            _ = tokio::time::sleep_until(last_byte + stall), if running => {
                break Some(Ended::Stalled(stall));
            }
            _ = crate::process::sleep_until_opt(drain_until) => break None,
            r = crate::process::read_some(&mut stdout, &mut out_buf), if stdout.is_some() => match r {
                Ok(n) if n > 0 => {
                    last_byte = Instant::now();
                    out_lines.push(&out_buf[..n], on_line);
                }
                _ => {
                    out_lines.finish(on_line);
                    stdout = None;
                }
            },
            r = crate::process::read_some(&mut stderr, &mut err_buf), if stderr.is_some() => match r {
                Ok(n) if n > 0 => {
                    last_byte = Instant::now();
                    err_lines.push(&err_buf[..n], on_line);
                }
                _ => {
                    err_lines.finish(on_line);
                    stderr = None;
                }
            },
            r = group.child.wait(), if running => {
                status = Some(r.map_err(io_err)?);
                drain_until = Some(Instant::now() + GIT_GRACE);
            }
        }
    };
    // Also after a normal exit: kills what the leader left in its group and marks it gone.
    let grace = if stopped.is_some() {
        GIT_GRACE
    } else {
        Duration::ZERO
    };
    group.terminate(grace).await;
    out_lines.finish(on_line);
    err_lines.finish(on_line);
    Ok(match (stopped, status) {
        (Some(reason), _) => reason,
        (None, Some(s)) => Ended::Exited(match (s.code(), s.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => -1,
        }),
        (None, None) => unreachable!("the loop ends without a reason only after the exit"),
    })
}

/// Splits output into lines as a terminal would show them: `\n` ends a line, `\r` (not
/// followed by `\n`) starts it over, so a progress bar redrawn a thousand times is one line
/// with its final state. Lines are cut at [`process::MAX_LINE`] bytes.
#[derive(Debug, Default)]
struct Frames {
    /// The line being built.
    line: Vec<u8>,
    /// A `\r` was seen: the next byte decides between a line end and a redraw.
    after_cr: bool,
}

impl Frames {
    /// Feeds one chunk, handing every finished line to `emit`.
    fn push(&mut self, chunk: &[u8], emit: &mut (dyn FnMut(&[u8]) + Send)) {
        for &b in chunk {
            if self.after_cr {
                self.after_cr = false;
                if b != b'\n' {
                    self.line.clear();
                }
            }
            match b {
                b'\n' => {
                    emit(&self.line);
                    self.line.clear();
                }
                b'\r' => self.after_cr = true,
                _ => {
                    if self.line.len() >= process::MAX_LINE {
                        emit(&self.line);
                        self.line.clear();
                    }
                    self.line.push(b);
                }
            }
        }
    }

    /// Hands over a last line that had no newline.
    fn finish(&mut self, emit: &mut (dyn FnMut(&[u8]) + Send)) {
        if !self.line.is_empty() {
            emit(&self.line);
            self.line.clear();
        }
        self.after_cr = false;
    }
}

/// How git is given one repository.
#[derive(Debug)]
struct Source {
    /// The URL or path argument: a local repository's real path, a remote URL without
    /// credentials.
    arg: String,
    /// Extra environment: the protocols git may use, and the credentials for the helper.
    env: Vec<(String, String)>,
}

/// The `submodule.<name>.url` and `.path` entries of `dir/.gitmodules` (every one, not only the
/// last lines the error path keeps).
async fn gitmodules(ctx: &Ctx<'_>, dir_arg: &str) -> Result<Vec<(String, String)>, GitError> {
    /// More entries than this is no real project.
    const MAX_ENTRIES: usize = 10_000;
    let mut lines: Vec<String> = Vec::new();
    let mut collect = |l: &[u8]| {
        if lines.len() <= MAX_ENTRIES && !l.starts_with(b"$ git ") {
            lines.push(String::from_utf8_lossy(l).into_owned());
        }
    };
    let result = ctx
        .git(
            "reading .gitmodules",
            vec![
                "-C".into(),
                dir_arg.to_string(),
                "config".into(),
                "--file".into(),
                ".gitmodules".into(),
                "--get-regexp".into(),
                r"^submodule\..*\.(url|path)$".into(),
            ],
            Some(&mut collect),
        )
        .await;
    match result {
        Ok(_) => {}
        // Exit code 1: no such entries.
        Err(GitError::Command { code: 1, .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    if lines.len() > MAX_ENTRIES {
        return Err(GitError::Refused(format!(
            ".gitmodules has more than {MAX_ENTRIES} entries"
        )));
    }
    Ok(lines
        .iter()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// Resolves a local repository to its real path and checks that it lies under one of `roots`
/// (real paths), and so does everything git would read through it: the git directory behind a
/// `.git` file or symlink, a `commondir`, alternate object stores, and the target of every
/// symlink inside. Returns the real path, which is what git is given. What is checked can still
/// be changed by someone with write access between this check and git's reading it; giving git
/// the resolved path keeps that window small.
fn check_local(path: &str, roots: &[PathBuf]) -> Result<PathBuf, GitError> {
    let shown_roots = || {
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if roots.is_empty() {
        return Err(GitError::Refused(format!(
            "local repository {path} refused: this worker allows no local repositories (see --allow-local-repos)"
        )));
    }
    if !Path::new(path).is_absolute() {
        return Err(GitError::Refused(format!(
            "local repository path '{path}' is not absolute"
        )));
    }
    let inside = |p: &Path| roots.iter().any(|r| p.starts_with(r));
    let real = std::fs::canonicalize(path)
        .map_err(|e| GitError::Refused(format!("cannot resolve local repository {path}: {e}")))?;
    if !inside(&real) {
        return Err(GitError::Refused(format!(
            "local repository {path} resolves to {}, which is not under an allowed root ({})",
            real.display(),
            shown_roots()
        )));
    }
    let outside = |what: String, target: &Path| {
        GitError::Refused(format!(
            "local repository {path}: {what} leads to {}, which is not under an allowed root ({})",
            target.display(),
            shown_roots()
        ))
    };
    let resolve = |base: &Path, rel: &str| std::fs::canonicalize(base.join(rel.trim())).ok();
    // The git directory: `.git` (a directory, a symlink, or a `gitdir:` file), else the
    // repository itself (bare).
    let dotgit = real.join(".git");
    let git_dir = match std::fs::symlink_metadata(&dotgit) {
        Ok(m) if m.is_file() => {
            let text = std::fs::read_to_string(&dotgit).unwrap_or_default();
            let target = text.trim().strip_prefix("gitdir:").unwrap_or("").trim();
            resolve(&real, target).ok_or_else(|| {
                GitError::Refused(format!(
                    "local repository {path}: its .git file points nowhere"
                ))
            })?
        }
        Ok(_) => std::fs::canonicalize(&dotgit)
            .map_err(|e| GitError::Refused(format!("cannot resolve {}: {e}", dotgit.display())))?,
        Err(_) => real.clone(),
    };
    if !inside(&git_dir) {
        return Err(outside("its git directory".into(), &git_dir));
    }
    let mut to_walk = vec![git_dir.clone()];
    if let Ok(text) = std::fs::read_to_string(git_dir.join("commondir")) {
        if let Some(common) = resolve(&git_dir, &text) {
            if !inside(&common) {
                return Err(outside("its commondir".into(), &common));
            }
            to_walk.push(common);
        }
    }
    // Every entry of the git directories: symlinks must stay inside, and alternates files add
    // the object stores they name.
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut entries = 0usize;
    while let Some(dir) = to_walk.pop() {
        if !seen.insert(dir.clone()) {
            continue;
        }
        let Ok(list) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in list.flatten() {
            entries += 1;
            if entries > MAX_LOCAL_ENTRIES {
                return Err(GitError::Refused(format!(
                    "local repository {path}: its git directory has more than {MAX_LOCAL_ENTRIES} entries to check"
                )));
            }
            let p = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_symlink() {
                // A dangling symlink reads nothing (until it is pointed somewhere: the window
                // mentioned above).
                if let Ok(target) = std::fs::canonicalize(&p) {
                    if !inside(&target) {
                        return Err(outside(format!("the symlink {}", p.display()), &target));
                    }
                    if target.is_dir() {
                        to_walk.push(target);
                    }
                }
            } else if kind.is_dir() {
                to_walk.push(p);
            } else if p.file_name().is_some_and(|n| n == "alternates")
                && dir.file_name().is_some_and(|n| n == "info")
            {
                let objects = dir.parent().unwrap_or(&dir).to_path_buf();
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                for line in text.lines().map(str::trim) {
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    if let Some(alt) = resolve(&objects, line.trim_matches('"')) {
                        if !inside(&alt) {
                            return Err(outside(format!("the alternate {line}"), &alt));
                        }
                        to_walk.push(alt);
                    }
                }
            }
        }
    }
    Ok(real)
}

/// Decodes `%XX` escapes (as git does for credentials in URLs); `None` if malformed or not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A duration as people write it in settings: `60s`, `1.5s`.
fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
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
}
