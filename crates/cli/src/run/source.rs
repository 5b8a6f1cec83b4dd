//! What `testarena run` tests: a remote URL as the worker clones it, a local branch as
//! committed, or a local work tree as it is — uncommitted changes and untracked (not ignored)
//! files included — through a snapshot commit made in a repository of its own.
//!
//! The snapshot never writes to the developer's repository: its objects go into a bare
//! repository in the run's temporary directory, which borrows the developer's objects
//! (read-only) through `objects/info/alternates`, and its index is a temporary file.

use super::RunError;
use std::path::{Path, PathBuf};
use std::process::Command;
use testarena_core::repo_url::{self, RepoTarget};

/// The branch the snapshot commit is on, in the snapshot repository.
pub const SNAPSHOT_BRANCH: &str = "testarena-run";

/// Who the snapshot commit is by (it needs a name; the developer's git config may have none).
const SNAPSHOT_AUTHOR: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "testarena run"),
    ("GIT_AUTHOR_EMAIL", "testarena-run@localhost"),
    ("GIT_COMMITTER_NAME", "testarena run"),
    ("GIT_COMMITTER_EMAIL", "testarena-run@localhost"),
];

/// The repository and branch the run's queue names, and where local repositories may be read.
#[derive(Debug)]
pub struct Source {
    /// The queue's repository: a URL, a local repository, or the snapshot repository.
    pub repo: String,
    /// The queue's branch.
    pub branch: String,
    /// Directories the worker may read local repositories from (empty for a URL).
    pub allowed_roots: Vec<PathBuf>,
    /// The local work tree's top, when the repository is local (scenario paths are relative
    /// to it).
    pub work_tree: Option<PathBuf>,
    /// Whether the repository is a snapshot of the work tree (so every file is here).
    pub snapshot: bool,
    /// What to tell the developer about it (a line).
    pub description: String,
}

/// Finds what `--repo` and `--branch` name; a local work tree without `--branch` is snapshot
/// into `scratch`.
pub fn resolve(repo: &str, branch: Option<&str>, scratch: &Path) -> Result<Source, RunError> {
    let local = match repo_url::parse(repo) {
        Ok(RepoTarget::Remote(_)) => return remote(repo, branch),
        Ok(RepoTarget::Local(p)) => PathBuf::from(p.to_string()),
        // A relative path is no repository URL, but it is a fine local directory here.
        Err(_) if !repo.contains("://") => PathBuf::from(repo),
        Err(e) => return Err(RunError::BadInput(format!("--repo {repo}: {e}"))),
    };
    if !local.is_dir() {
        return Err(RunError::BadInput(format!(
            "--repo {repo}: no such directory"
        )));
    }
    let top = work_tree_top(&local)?;
    match branch {
        Some(b) => committed(&top, b),
        None => snapshot(&top, scratch),
    }
}

/// A remote repository, cloned as the worker does; the branch must be named.
fn remote(url: &str, branch: Option<&str>) -> Result<Source, RunError> {
    let Some(branch) = branch else {
        return Err(RunError::BadInput(format!(
            "--repo {}: a remote repository needs --branch",
            testarena_core::redact::redact(url)
        )));
    };
    Ok(Source {
        repo: url.to_string(),
        branch: branch.to_string(),
        allowed_roots: Vec::new(),
        work_tree: None,
        snapshot: false,
        description: format!("{} branch {branch}", testarena_core::redact::redact(url)),
    })
}

/// Branch `branch` of a local repository as committed (the work tree is not looked at).
fn committed(top: &Path, branch: &str) -> Result<Source, RunError> {
    let git_dir = common_dir(top)?;
    Ok(Source {
        repo: top.display().to_string(),
        branch: branch.to_string(),
        allowed_roots: vec![top.to_path_buf(), git_dir],
        work_tree: Some(top.to_path_buf()),
        snapshot: false,
        description: format!("{} branch {branch} (as committed)", top.display()),
    })
}

/// The work tree at `top` as it is, committed into a snapshot repository under `scratch`.
fn snapshot(top: &Path, scratch: &Path) -> Result<Source, RunError> {
    let objects = real_path(
        top,
        &git_text(top, &["rev-parse", "--git-path", "objects"])?,
    )?;
    let snap = scratch.join("snapshot.git");
    let snap_arg = snap.display().to_string();
    git_text(scratch, &["init", "--quiet", "--bare", "--", &snap_arg])?;
    std::fs::write(
        snap.join("objects/info/alternates"),
        format!("{}\n", objects.display()),
    )
    .map_err(|e| RunError::Io(format!("cannot write the snapshot's alternates: {e}")))?;
    let head = git_text(top, &["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]).ok();
    let index = scratch.join("snapshot.index");
    let env = [
        ("GIT_DIR", snap.as_os_str()),
        ("GIT_WORK_TREE", top.as_os_str()),
        ("GIT_INDEX_FILE", index.as_os_str()),
    ];
    let in_snap = |args: &[&str], input: Option<&[u8]>| git_in(top, &env, args, input);
    if let Some(h) = &head {
        in_snap(&["read-tree", h], None)?;
    }
    in_snap(
        &["update-index", "--add", "--remove", "-z", "--stdin"],
        Some(&work_tree_files(top)?),
    )?;
    let tree = text(in_snap(&["write-tree"], None)?);
    let head_tree = match &head {
        Some(h) => Some(git_text(top, &["rev-parse", &format!("{h}^{{tree}}")])?),
        None => None,
    };
    let (commit, state) = match (&head, head_tree) {
        (Some(h), Some(t)) if t == tree => (h.clone(), "clean"),
        _ => {
            let mut args = vec!["commit-tree", tree.as_str()];
            if let Some(h) = &head {
                args.extend(["-p", h.as_str()]);
            }
            args.extend(["-m", "testarena run: the work tree as it is"]);
            let mut with_author = env.to_vec();
            with_author.extend(
                SNAPSHOT_AUTHOR
                    .iter()
                    .map(|(k, v)| (*k, std::ffi::OsStr::new(v))),
            );
            (
                text(git_in(top, &with_author, &args, None)?),
                "with uncommitted changes",
            )
        }
    };
    let branch_ref = format!("refs/heads/{SNAPSHOT_BRANCH}");
    in_snap(&["update-ref", &branch_ref, &commit], None)?;
    let short: String = head
        .as_deref()
        .unwrap_or("no commit")
        .chars()
        .take(12)
        .collect();
    Ok(Source {
        repo: snap.display().to_string(),
        branch: SNAPSHOT_BRANCH.into(),
        allowed_roots: vec![scratch.to_path_buf(), objects],
        work_tree: Some(top.to_path_buf()),
        snapshot: true,
        description: format!(
            "the work tree {} as it is ({state}; HEAD {short})",
            top.display()
        ),
    })
}

/// The paths to put into the snapshot's index, NUL-separated: every tracked file and every
/// untracked one git does not ignore. A directory (a submodule) keeps what HEAD says of it,
/// unless it is a checked-out repository (then its HEAD is recorded); a tracked file that is
/// gone is removed.
fn work_tree_files(top: &Path) -> Result<Vec<u8>, RunError> {
    let listed = git_in(
        top,
        &[],
        &[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
        None,
    )?;
    let mut out = Vec::with_capacity(listed.len());
    let mut last: &[u8] = b"";
    for path in listed.split(|&b| b == 0).filter(|p| !p.is_empty()) {
        // An unmerged file is listed once per stage.
        if path == last {
            continue;
        }
        last = path;
        let on_disk = top.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(path));
        let plain_dir = std::fs::symlink_metadata(&on_disk)
            .is_ok_and(|m| m.is_dir() && !on_disk.join(".git").exists());
        if !plain_dir {
            out.extend_from_slice(path);
            out.push(0);
        }
    }
    Ok(out)
}

/// The top of the work tree `dir` is in.
fn work_tree_top(dir: &Path) -> Result<PathBuf, RunError> {
    let top = git_text(dir, &["rev-parse", "--show-toplevel"]).map_err(|_| {
        RunError::BadInput(format!(
            "--repo {}: not inside a git work tree (run `git init` and add the project, or \
             name a git URL with --branch)",
            dir.display()
        ))
    })?;
    real_path(dir, &top)
}

/// The repository's common git directory (shared by its worktrees).
fn common_dir(top: &Path) -> Result<PathBuf, RunError> {
    let dir = git_text(top, &["rev-parse", "--git-common-dir"])?;
    real_path(top, &dir)
}

/// `path` (as git printed it, maybe relative to `base`) resolved to a real path.
fn real_path(base: &Path, path: &str) -> Result<PathBuf, RunError> {
    std::fs::canonicalize(base.join(path))
        .map_err(|e| RunError::Io(format!("cannot resolve {path}: {e}")))
}

/// Runs a read-only git command in `dir`; its output trimmed.
fn git_text(dir: &Path, args: &[&str]) -> Result<String, RunError> {
    git_in(dir, &[], args, None).map(text)
}

fn text(out: Vec<u8>) -> String {
    String::from_utf8_lossy(&out).trim().to_string()
}

/// Runs git in `dir` with `env` and `input` on stdin; its stdout, or an error with its stderr.
/// No optional locks: a `git status`-like refresh must not rewrite the developer's index.
fn git_in(
    dir: &Path,
    env: &[(&str, &std::ffi::OsStr)],
    args: &[&str],
    input: Option<&[u8]>,
) -> Result<Vec<u8>, RunError> {
    use std::io::Write;
    use std::process::Stdio;
    let mut cmd = Command::new("git");
    cmd.args(args)
        .current_dir(dir)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .envs(env.iter().copied())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("git {}", args.first().copied().unwrap_or(""));
    let mut child = cmd
        .spawn()
        .map_err(|e| RunError::Io(format!("cannot run {what}: {e}")))?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        // The list is written whole before the output is read: update-index prints nothing.
        stdin
            .write_all(data)
            .map_err(|e| RunError::Io(format!("cannot feed {what}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RunError::Io(format!("{what} failed: {e}")))?;
    if !out.status.success() {
        return Err(RunError::Io(format!(
            "{what} in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}
