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
pub use testarena_core::redact::redact;

mod local;
use local::*;

mod checkout;
mod command;
mod range;
use command::*;

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
                credential_env(&mut env, url, userinfo, &remote)?;
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
        let ctx = Ctx {
            deadline: Instant::now() + timeout,
            timeout,
            cancel,
        };
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
            _ = tokio::time::sleep_until(ctx.deadline) => {
                return Err(GitError::TimedOut { what, after: timeout });
            }
        };
        let mut lock_path = mirror.clone().into_os_string();
        lock_path.push(".lock");
        let _across_processes =
            lock_file(Path::new(&lock_path), ctx.deadline, timeout, cancel, &what).await?;
        // Checked now, after any wait for the lock, so nothing can change in between.
        let source = self.source(url).await?;
        prepare_mirror(&ctx, &mirror, &shown, on_line).await?;
        let mirror_arg = path_arg(&mirror)?;
        let args = vec![
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
        ];
        ctx.git_with(&what, args, &source.env, self.stall(), Some(on_line))
            .await?;
        Ok(mirror)
    }

    /// The in-process lock for one mirror.
    fn url_lock(&self, mirror: &Path) -> Arc<tokio::sync::Mutex<()>> {
        // A panic elsewhere while holding the map lock leaves the map itself intact.
        let mut map = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(mirror.to_path_buf()).or_default().clone()
    }
}

/// Adds to `env` a credential helper (in git's `GIT_CONFIG_*` environment, never on a command
/// line or on disk) that answers with the URL's user and password, for its protocol and host
/// only.
fn credential_env(
    env: &mut Vec<(String, String)>,
    url: &str,
    userinfo: &str,
    remote: &repo_url::Remote<'_>,
) -> Result<(), GitError> {
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
    let protocol = url[..remote.scheme.len()].to_string();
    env.push(("TESTARENA_GIT_PROTOCOL".into(), protocol));
    env.push(("TESTARENA_GIT_USERNAME".into(), user));
    env.push(("TESTARENA_GIT_PASSWORD".into(), password));
    Ok(())
}

/// Makes `mirror` a repository to fetch into: one left incomplete by an interrupted `git init`
/// is removed, a missing one created (`init` + `fetch <url>` rather than `clone --mirror <url>`:
/// the URL, and any credentials in it, is never stored in the mirror's config, and an
/// interrupted first fetch leaves a valid repository that the next fetch simply completes).
async fn prepare_mirror(
    ctx: &Ctx<'_>,
    mirror: &Path,
    shown: &str,
    on_line: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(), GitError> {
    if mirror.exists() && !looks_like_repo(mirror) {
        on_line(format!("removing incomplete mirror {}", mirror.display()).as_bytes());
        tokio::fs::remove_dir_all(mirror)
            .await
            .map_err(|source| GitError::Io {
                what: format!("cannot remove incomplete mirror {}", mirror.display()),
                source,
            })?;
    }
    if !mirror.exists() {
        let args = vec![
            "init".into(),
            "--bare".into(),
            "--quiet".into(),
            "--".into(),
            path_arg(mirror)?,
        ];
        ctx.git(&format!("creating mirror for {shown}"), args, Some(on_line))
            .await?;
    }
    let url_file = mirror.join(URL_FILE);
    if !url_file.exists() {
        std::fs::write(&url_file, format!("{shown}\n")).map_err(|source| GitError::Io {
            what: format!("cannot write {}", url_file.display()),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
