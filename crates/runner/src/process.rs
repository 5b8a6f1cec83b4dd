//! Child processes that each lead their own process group, so that a timeout, an abort or a
//! shutdown can kill the whole tree (TERM to the group, a grace period, KILL to the group) and
//! nothing is left behind.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest line handed to a line callback; longer lines are delivered in pieces of this size so
/// that a child printing without newlines cannot make us grow memory without bound.
pub use testarena_core::limits::MAX_LINE;

mod lines;
mod run;
pub use run::{run, Outcome};
mod spec;
pub use spec::Spec;

/// Size of each pipe read; together with `MAX_LINE` this bounds memory per running child.
const READ_CHUNK: usize = 8 * 1024;

/// How long `run` keeps reading output once the group is KILLed or gone; a process that escaped
/// the group (its own `setsid`) could hold the pipe open forever.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);

/// How long we wait for a KILLed group to disappear before giving up on it.
const KILL_SETTLE: Duration = Duration::from_secs(2);

/// Polling interval while waiting for group members that are not our children.
const POLL: Duration = Duration::from_millis(10);

/// Errors from starting or supervising a child process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started (missing binary, bad working directory, ...).
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        /// The program that was to be run (never its arguments, which may hold secrets).
        program: String,
        /// Why the operating system refused.
        source: io::Error,
    },
    /// Waiting for or reading from the child failed.
    #[error("supervising `{program}` failed: {source}")]
    Io {
        /// The program being supervised.
        program: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Making this process a child subreaper failed.
    #[error("cannot become a child subreaper: {0}")]
    Subreaper(io::Error),
}

/// A running child that leads its own process group.
#[derive(Debug)]
pub struct Group {
    leader: Leader,
    /// The leader's stdin, if piped (taken by whoever writes to it).
    pub stdin: Option<ChildStdin>,
    /// The leader's stdout, if piped.
    pub stdout: Option<ChildStdout>,
    /// The leader's stderr, if piped.
    pub stderr: Option<ChildStderr>,
    /// The process group id (equal to the leader's pid, as this process sees it).
    pub pgid: i32,
    /// Set once the whole group is known to be gone, so that `Drop` does not signal a group id
    /// that the kernel may since have handed to someone else.
    gone: bool,
}

/// Who reports the leader's exit.
#[derive(Debug)]
enum Leader {
    /// Our own child.
    Child(Child),
    /// A child of a sandbox's spawner (see `sandbox::spawner`), which reports its exit status
    /// here; the channel closes if the spawner is gone (and its namespace with everything in it).
    Remote(watch::Receiver<Option<ExitStatus>>),
}

/// Starts `spec` as the leader of a new session and process group, stdout and stderr piped
/// separately, killed if the handle is dropped.
pub fn spawn(spec: &Spec) -> Result<Group, ProcessError> {
    spawn_with(spec, stdin_of(spec), Stdio::piped(), Stdio::piped())
}

/// Starts `spec` with `control` as its stdin (a sandbox's spawner; see `sandbox::spawner`),
/// stdout to `/dev/null` and stderr piped.
pub(crate) fn spawn_control(spec: &Spec, control: OwnedFd) -> Result<Group, ProcessError> {
    spawn_with(spec, Stdio::from(control), Stdio::null(), Stdio::piped())
}

fn stdin_of(spec: &Spec) -> Stdio {
    if spec.stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    }
}

/// Starts `spec` with the given stdin, stdout and stderr; see [`spawn`].
fn spawn_with(
    spec: &Spec,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<Group, ProcessError> {
    let mut cmd = Command::new(&spec.program);
    if spec.clear_env {
        cmd.env_clear();
    }
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    // setsid() rather than setpgid(0, 0): the child leads a new process group all the same
    // (pgid = pid), and additionally has no controlling terminal, so a tool that wants to prompt
    // (ssh asking for a password, a build asking a question) fails at once instead of being
    // stopped by SIGTTIN until the timeout.
    let netns = spec.netns;
    let die_with_parent = spec.die_with_parent;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and only makes system calls (setsid,
    // prctl, getppid, setns), which are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if die_with_parent {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl.
                if libc::getppid() != parent {
                    return Err(io::Error::other("the worker exited while starting this"));
                }
            }
            if let Some(fd) = netns {
                if libc::setns(fd, libc::CLONE_NEWNET) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        program: spec.program.clone(),
        source,
    })?;
    let pgid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| ProcessError::Spawn {
            program: spec.program.clone(),
            source: io::Error::other("child exited before its pid was known"),
        })?;
    Ok(Group::local(child, pgid))
}

impl Group {
    fn local(mut child: Child, pgid: i32) -> Group {
        Group {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            leader: Leader::Child(child),
            pgid,
            gone: false,
        }
    }

    /// A group started by someone else (a sandbox's spawner) whose leader's exit status comes
    /// through `exit`; `pgid` as this process sees it.
    pub(crate) fn remote(
        pgid: i32,
        exit: watch::Receiver<Option<ExitStatus>>,
        stdin: Option<ChildStdin>,
        stdout: Option<ChildStdout>,
        stderr: Option<ChildStderr>,
    ) -> Group {
        Group {
            leader: Leader::Remote(exit),
            stdin,
            stdout,
            stderr,
            pgid,
            gone: false,
        }
    }

    /// Waits for the leader to exit.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        match &mut self.leader {
            Leader::Child(child) => child.wait().await,
            Leader::Remote(exit) => match exit.wait_for(Option::is_some).await {
                Ok(status) => Ok(status.unwrap_or_else(|| ExitStatus::from_raw(0))),
                Err(_) => Err(io::Error::other("the sandbox ended before its command did")),
            },
        }
    }

    /// The leader's exit status if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match &mut self.leader {
            Leader::Child(child) => child.try_wait(),
            Leader::Remote(exit) => match *exit.borrow() {
                Some(status) => Ok(Some(status)),
                None if exit.has_changed().is_err() => {
                    Err(io::Error::other("the sandbox ended before its command did"))
                }
                None => Ok(None),
            },
        }
    }

    /// Stops the whole group: TERM, up to `grace` for it to exit, then KILL; returns the
    /// leader's exit status if it could be collected. Members that outlive the leader (they keep
    /// the group id after their parent exits) are killed too.
    pub async fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        signal_group(self.pgid, Signal::SIGTERM);
        let mut status = match tokio::time::timeout_at(deadline, self.wait()).await {
            Ok(Ok(status)) => Some(status),
            Ok(Err(_)) | Err(_) => None,
        };
        if status.is_some() {
            // The leader is gone; give the rest of the group what is left of the grace.
            wait_group_gone(self.pgid, deadline).await;
        }
        signal_group(self.pgid, Signal::SIGKILL);
        if status.is_none() {
            // KILL cannot be caught; the bound only protects against a process stuck in the
            // kernel (uninterruptible I/O), which we can do nothing about anyway.
            if let Ok(Ok(s)) = tokio::time::timeout(KILL_SETTLE, self.wait()).await {
                status = Some(s);
            }
        }
        if status.is_some() {
            self.gone = wait_group_gone(self.pgid, Instant::now() + KILL_SETTLE).await;
        }
        status
    }

    /// KILLs the whole group at once, without waiting; for `Drop` paths and emergencies.
    pub fn kill_now(&self) {
        signal_group(self.pgid, Signal::SIGKILL);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.gone {
            self.kill_now();
        }
    }
}

/// Reads from an optional pipe; a missing pipe never becomes ready.
pub(crate) async fn read_some<R: AsyncReadExt + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever if there is no such instant.
pub(crate) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A pipe whose ends are closed on exec, so that a child started concurrently by another
/// thread cannot inherit our read or write end (which would delay EOF until that child exits).
pub(crate) fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [libc::c_int; 2] = [-1, -1];
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    // SAFETY: pipe2 writes two descriptors into the two-element array on success.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    // SAFETY: as above; without pipe2 the close-on-exec flag is set right after (racy, but only
    // on development platforms).
    let rc = unsafe {
        let rc = libc::pipe(fds.as_mut_ptr());
        if rc == 0 {
            libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC);
            libc::fcntl(fds[1], libc::F_SETFD, libc::FD_CLOEXEC);
        }
        rc
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success both are fresh descriptors owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes reads and writes on `fd` return at once instead of waiting.
pub(crate) fn set_nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    let flags = OFlag::from_bits_retain(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// True if signalling `pgid` could only hit a real child group: 0 and 1 mean "our own group"
/// and "init" to kill(2), negative ids mean something else again, and our own group is us.
fn is_foreign_group(pgid: i32) -> bool {
    pgid > 1 && pgid != nix::unistd::getpgrp().as_raw()
}

/// Sends `sig` to the group, ignoring "no such group".
fn signal_group(pgid: i32, sig: Signal) {
    if is_foreign_group(pgid) {
        // ESRCH (already gone) and EPERM (not ours any more) are both fine to ignore.
        let _ = signal::killpg(Pid::from_raw(pgid), sig);
    }
}

/// Collects the exit status of group members that became our children (we are a subreaper,
/// they were orphaned), so that they do not linger as zombies that still count as members.
/// Only called after the leader has been reaped, so it never steals tokio's child.
fn reap_group(pgid: i32) {
    if !is_foreign_group(pgid) {
        return;
    }
    loop {
        match waitpid(Pid::from_raw(-pgid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
}

/// Waits until no member of the group is left or `deadline` passes; true if the group is gone.
/// Looks again after 1 ms, then ever less often up to every [`POLL`]: the members of a group
/// whose leader just exited (a sandbox's child) are usually gone within a millisecond or two,
/// and each emulator stop waits for this.
async fn wait_group_gone(pgid: i32, deadline: Instant) -> bool {
    let mut pause = Duration::from_millis(1);
    loop {
        reap_group(pgid);
        if !group_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(POLL);
    }
}

/// Makes this process a child subreaper (prctl PR_SET_CHILD_SUBREAPER) so daemonizing
/// grandchildren are reparented to us and can be reaped and killed. Linux only; no-op elsewhere.
pub fn become_subreaper() -> Result<(), ProcessError> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and touches no memory.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_CHILD_SUBREAPER,
                1 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc != 0 {
            return Err(ProcessError::Subreaper(io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Kills (KILL) the process groups with these ids if they still exist; used at worker start for
/// groups recorded by a crashed worker. Returns how many existed.
pub fn kill_stale_groups(pgids: &[i32]) -> usize {
    pgids
        .iter()
        .filter(|&&pgid| {
            is_foreign_group(pgid)
                // EPERM means the id now belongs to someone else's group: not ours, not counted.
                && signal::killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok()
        })
        .count()
}

/// True if any process in the group is still alive (kill(-pgid, 0)); zombies count until reaped.
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    match signal::kill(Pid::from_raw(-pgid), None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
