//! Local repositories: resolving a path (or file:// URL) to its real location and checking that it and everything git would read through it lie under the allowed roots; and small helpers for paths, names and locks.

use super::*;

/// How git is given one repository.
#[derive(Debug)]
pub(super) struct Source {
    /// The URL or path argument: a local repository's real path, a remote URL without
    /// credentials.
    pub(super) arg: String,
    /// Extra environment: the protocols git may use, and the credentials for the helper.
    pub(super) env: Vec<(String, String)>,
}

/// The `submodule.<name>.url` and `.path` entries of `dir/.gitmodules` (every one, not only the
/// last lines the error path keeps).
pub(super) async fn gitmodules(
    ctx: &Ctx<'_>,
    dir_arg: &str,
) -> Result<Vec<(String, String)>, GitError> {
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
pub(super) fn check_local(path: &str, roots: &[PathBuf]) -> Result<PathBuf, GitError> {
    let check = LocalCheck { path, roots };
    let real = check.real_path()?;
    let git_dir = check.git_dir(&real)?;
    let mut to_walk = vec![git_dir.clone()];
    if let Ok(text) = std::fs::read_to_string(git_dir.join("commondir")) {
        if let Some(common) = resolve(&git_dir, &text) {
            check.inside_or("its commondir", &common)?;
            to_walk.push(common);
        }
    }
    check.walk(to_walk)?;
    Ok(real)
}

/// One local repository being checked against the allowed roots.
struct LocalCheck<'a> {
    path: &'a str,
    roots: &'a [PathBuf],
}

/// `rel` (trimmed) resolved against `base` to a real path, if it exists.
fn resolve(base: &Path, rel: &str) -> Option<PathBuf> {
    std::fs::canonicalize(base.join(rel.trim())).ok()
}

impl LocalCheck<'_> {
    fn refused(&self, message: String) -> GitError {
        GitError::Refused(message)
    }

    fn shown_roots(&self) -> String {
        let roots: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        roots.join(", ")
    }

    fn inside(&self, p: &Path) -> bool {
        self.roots.iter().any(|r| p.starts_with(r))
    }

    /// Ok if `target` (what `what` leads to) lies under a root.
    fn inside_or(&self, what: &str, target: &Path) -> Result<(), GitError> {
        if self.inside(target) {
            return Ok(());
        }
        Err(self.refused(format!(
            "local repository {}: {what} leads to {}, which is not under an allowed root ({})",
            self.path,
            target.display(),
            self.shown_roots()
        )))
    }

    /// The repository's real path, which must lie under a root.
    fn real_path(&self) -> Result<PathBuf, GitError> {
        let path = self.path;
        if self.roots.is_empty() {
            return Err(self.refused(format!(
                "local repository {path} refused: this worker allows no local repositories (see --allow-local-repos)"
            )));
        }
        if !Path::new(path).is_absolute() {
            return Err(self.refused(format!("local repository path '{path}' is not absolute")));
        }
        let real = std::fs::canonicalize(path)
            .map_err(|e| self.refused(format!("cannot resolve local repository {path}: {e}")))?;
        if !self.inside(&real) {
            return Err(self.refused(format!(
                "local repository {path} resolves to {}, which is not under an allowed root ({})",
                real.display(),
                self.shown_roots()
            )));
        }
        Ok(real)
    }

    /// The git directory: `.git` (a directory, a symlink, or a `gitdir:` file), else the
    /// repository itself (bare); it must lie under a root.
    fn git_dir(&self, real: &Path) -> Result<PathBuf, GitError> {
        let dotgit = real.join(".git");
        let git_dir = match std::fs::symlink_metadata(&dotgit) {
            Ok(m) if m.is_file() => {
                let text = std::fs::read_to_string(&dotgit).unwrap_or_default();
                let target = text.trim().strip_prefix("gitdir:").unwrap_or("").trim();
                resolve(real, target).ok_or_else(|| {
                    self.refused(format!(
                        "local repository {}: its .git file points nowhere",
                        self.path
                    ))
                })?
            }
            Ok(_) => std::fs::canonicalize(&dotgit)
                .map_err(|e| self.refused(format!("cannot resolve {}: {e}", dotgit.display())))?,
            Err(_) => real.to_path_buf(),
        };
        self.inside_or("its git directory", &git_dir)?;
        Ok(git_dir)
    }

    /// Every entry of the git directories: symlinks must stay inside, and alternates files add
    /// the object stores they name.
    fn walk(&self, mut to_walk: Vec<PathBuf>) -> Result<(), GitError> {
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
                    return Err(self.refused(format!(
                        "local repository {}: its git directory has more than {MAX_LOCAL_ENTRIES} entries to check",
                        self.path
                    )));
                }
                self.check_entry(&dir, &entry, &mut to_walk)?;
            }
        }
        Ok(())
    }

    /// Checks one entry of `dir`, adding the directories to walk that it leads to.
    fn check_entry(
        &self,
        dir: &Path,
        entry: &std::fs::DirEntry,
        to_walk: &mut Vec<PathBuf>,
    ) -> Result<(), GitError> {
        let p = entry.path();
        let Ok(kind) = entry.file_type() else {
            return Ok(());
        };
        if kind.is_symlink() {
            // A dangling symlink reads nothing (until it is pointed somewhere: the window
            // mentioned above).
            if let Ok(target) = std::fs::canonicalize(&p) {
                self.inside_or(&format!("the symlink {}", p.display()), &target)?;
                if target.is_dir() {
                    to_walk.push(target);
                }
            }
        } else if kind.is_dir() {
            to_walk.push(p);
        } else if p.file_name().is_some_and(|n| n == "alternates")
            && dir.file_name().is_some_and(|n| n == "info")
        {
            let objects = dir.parent().unwrap_or(dir).to_path_buf();
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if let Some(alt) = resolve(&objects, line.trim_matches('"')) {
                    self.inside_or(&format!("the alternate {line}"), &alt)?;
                    to_walk.push(alt);
                }
            }
        }
        Ok(())
    }
}

/// Decodes `%XX` escapes (as git does for credentials in URLs); `None` if malformed or not
/// UTF-8.
pub(super) fn percent_decode(s: &str) -> Option<String> {
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
pub(super) fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// True if `path` has what git itself requires of a repository (HEAD, objects/, refs/).
/// Checked on the file system rather than by asking git, so that a git failure for another
/// reason (ownership, configuration) is reported instead of costing us the whole mirror.
pub(super) fn looks_like_repo(path: &Path) -> bool {
    path.join("HEAD").is_file() && path.join("objects").is_dir() && path.join("refs").is_dir()
}

/// Takes an exclusive `flock` on `path`, waiting (cancellably) until `deadline`; the lock lasts
/// as long as the returned file is open, and the kernel drops it if the process dies.
pub(super) async fn lock_file(
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
pub(super) fn path_arg(path: &Path) -> Result<String, GitError> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| GitError::Invalid(format!("path {} is not UTF-8", path.display())))
}

/// True if `s` is `min..=max` hexadecimal digits.
pub(super) fn is_hex(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// True if `b` can only mean the branch of that name: no option, no revision syntax. The
/// server validates branch names fully; this only guards what reaches `rev-parse`.
pub(super) fn is_plain_branch(b: &str) -> bool {
    !b.is_empty()
        && !b.starts_with(['-', '/'])
        && !b.contains("..")
        && !b.contains("@{")
        && !b
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
}

/// Cuts user input for an error message.
pub(super) fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

/// 64-bit FNV-1a: tiny, stable across processes and versions (unlike `DefaultHasher`).
pub(super) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// [`redact`] for raw output lines; lines without a URL pass through untouched.
pub(super) fn redact_bytes(line: &[u8]) -> Cow<'_, [u8]> {
    if !line.windows(3).any(|w| w == b"://") {
        return Cow::Borrowed(line);
    }
    Cow::Owned(redact(&String::from_utf8_lossy(line)).into_bytes())
}
