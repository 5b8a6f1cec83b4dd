//! One sandbox kept for a whole task, in which the emulator is started for each boot.
//!
//! Setting up bubblewrap's namespaces and mounts and tearing them down costs ~5–9 ms per start,
//! a third of what QEMU needs to boot small firmware; a scenario that boots per case pays it
//! every case. So the first boot of a task starts bubblewrap once around a small server (this
//! same program, run as `testarena __sandbox-spawner`, see [`serve`]), and every boot asks that
//! server to start the emulator. The emulator inherits exactly the confinement it would have had
//! with a bubblewrap of its own (namespaces, mounts, dropped capabilities, no new privileges);
//! only the program, its arguments, environment and working directory travel per start, with its
//! stdin, stdout and stderr as descriptors.
//!
//! The protocol runs over a `SOCK_SEQPACKET` socket pair (the server's stdin), one JSON message
//! per packet. The server answers each request with `Started` (and a pidfd of the new process,
//! from which the worker learns the pid its own namespace gives it, to signal the process group
//! as for any other child) or `Failed`, and reports each exit with `Exited`.
//!
//! Nothing outlives the task: the server kills every group it started when the worker closes the
//! socket (or dies), and bubblewrap (the namespace's pid 1) exits with the server, which takes
//! down whatever is left in its pid namespace.

use crate::process::{Group, ProcessError, Spec};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The first argument that makes `testarena` serve as a sandbox's spawner.
pub const SPAWNER_ARG: &str = "__sandbox-spawner";

/// Where the spawner's program is mounted inside the sandbox.
pub(crate) const SPAWNER_PATH: &str = "/run/testarena-spawner";

/// Largest message: a request carries a command line and an environment.
const MAX_MESSAGE: usize = 256 * 1024;

/// How long the worker waits for the spawner to come up or to answer a request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A request to start a process.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
}

/// What the worker says.
#[derive(Debug, Serialize, Deserialize)]
enum Order {
    /// Start a process (its stdin, stdout and stderr come with this message).
    Start(Request),
    /// The worker has read the started process's pid from its pidfd: it may be reaped once it
    /// exits. (Until then it stays a zombie, so that the pid is still there to read.)
    Seen { pid: i32 },
}

/// What the spawner says.
#[derive(Debug, Serialize, Deserialize)]
enum Event {
    /// The spawner is up.
    Ready,
    /// The requested process runs (a pidfd of it comes with this message); `pid` is its id in
    /// the sandbox's pid namespace, the key of its `Seen` and `Exited`.
    Started { pid: i32 },
    /// The requested process could not be started.
    Failed { error: String },
    /// A started process exited; `status` is its raw wait status.
    Exited { pid: i32, status: i32 },
}

fn send(fd: BorrowedFd<'_>, event: &impl Serialize, fds: &[RawFd]) -> io::Result<()> {
    let bytes = serde_json::to_vec(event).map_err(io::Error::other)?;
    let iov = [IoSlice::new(&bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(fd.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// One message with the descriptors that came with it, or `None` at the end of the stream.
fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(list) = c {
            // SAFETY: the kernel just installed these descriptors for us; nothing else owns them.
            fds.extend(list.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        return Err(io::Error::other("message too long"));
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((msg.bytes, fds)))
}

/// The spawner's side: serves requests on `control` until the worker closes it, then kills every
/// process group it started. Blocking; runs inside the sandbox.
///
/// With `sweep` (the sandbox's pid namespace holds nothing but bubblewrap, this spawner and what
/// it started), whatever a command left behind outside its process group (a daemon with its own
/// session) is killed once no started command runs, so that each boot of a task starts clean as
/// it did in a sandbox of its own. Refused unless this process is the first child of its pid
/// namespace's init, where "every process I may signal" (kill(-1)) means the sandbox only.
pub fn serve(control: OwnedFd, sweep: bool) -> io::Result<()> {
    let sweep = sweep && std::process::id() == 2 && nix::unistd::getppid().as_raw() == 1;
    let control = Arc::new(control);
    let running: Arc<Mutex<Vec<i32>>> = Arc::default();
    let mut seen: HashMap<i32, std::sync::mpsc::Sender<()>> = HashMap::new();
    send(control.as_fd(), &Event::Ready, &[])?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    while let Some((n, fds)) = recv(control.as_fd(), &mut buf)? {
        let req = match serde_json::from_slice::<Order>(&buf[..n]) {
            Ok(Order::Start(req)) => req,
            Ok(Order::Seen { pid }) => {
                if let Some(tx) = seen.remove(&pid) {
                    let _ = tx.send(());
                }
                continue;
            }
            Err(e) => {
                let error = format!("unreadable request: {e}");
                send(control.as_fd(), &Event::Failed { error }, &[])?;
                continue;
            }
        };
        // Held until the new command is in `running`, so that a sweep cannot hit it.
        let mut live = lock(&running);
        let mut child = match start(&req, fds) {
            Ok(child) => child,
            Err(e) => {
                drop(live);
                send(
                    control.as_fd(),
                    &Event::Failed {
                        error: e.to_string(),
                    },
                    &[],
                )?;
                continue;
            }
        };
        let pid = child.id() as i32;
        let pidfd = pidfd_open(pid)?;
        live.push(pid);
        drop(live);
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        seen.insert(pid, seen_tx);
        send(
            control.as_fd(),
            &Event::Started { pid },
            &[pidfd.as_raw_fd()],
        )?;
        let (control, running) = (control.clone(), running.clone());
        std::thread::spawn(move || {
            wait_exited(pid);
            // Until the worker has its pid; if it is gone (the channel closed), not at all.
            let _ = seen_rx.recv();
            let status = child.wait().map(|s| s.into_raw()).unwrap_or(-1);
            let mut live = lock(&running);
            live.retain(|&p| p != pid);
            if sweep && live.is_empty() {
                // SAFETY: kill(2); -1 is every process of this pid namespace but its init and us.
                unsafe { libc::kill(-1, libc::SIGKILL) };
            }
            drop(live);
            let _ = send(control.as_fd(), &Event::Exited { pid, status }, &[]);
        });
    }
    for pid in lock(&running).iter() {
        // SAFETY: kill(2) with a group id we created (never 0 or 1: see `start`).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    Ok(())
}

/// Waits until our child `pid` has exited, leaving it a zombie (not reaped).
fn wait_exited(pid: i32) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    while let Err(nix::errno::Errno::EINTR) =
        waitid(Id::Pid(nix::unistd::Pid::from_raw(pid)), flags)
    {}
}

/// Starts a request's program as the leader of a new process group with the three descriptors
/// that came with it as its stdin, stdout and stderr.
fn start(req: &Request, fds: Vec<OwnedFd>) -> io::Result<std::process::Child> {
    let [stdin, stdout, stderr]: [OwnedFd; 3] = fds
        .try_into()
        .map_err(|_| io::Error::other("a request needs three descriptors"))?;
    let mut cmd = std::process::Command::new(&req.program);
    cmd.args(&req.args)
        .env_clear()
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        // Without a `pre_exec` hook, std starts it with posix_spawn (no copy of our memory).
        .process_group(0);
    if let Some(cwd) = &req.cwd {
        cmd.current_dir(cwd);
    }
    cmd.spawn()
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor (close-on-exec) or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The pid that a pidfd's process has in this process's pid namespace (its `fdinfo`).
fn pid_of(pidfd: &OwnedFd) -> io::Result<i32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|p| p.trim().parse().ok())
        .filter(|&p: &i32| p > 1)
        .ok_or_else(|| io::Error::other("the started process has no pid here"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An answer to a request, as the worker's reader hands it on.
#[derive(Debug)]
enum Answer {
    Started {
        pgid: io::Result<i32>,
        exit: watch::Receiver<Option<ExitStatus>>,
    },
    Failed(String),
}

/// The worker's side: a running spawner in its sandbox.
#[derive(Debug)]
pub struct Spawner {
    control: Arc<AsyncFd<OwnedFd>>,
    /// Answers in request order; holding the lock makes one request at a time.
    answers: tokio::sync::Mutex<mpsc::UnboundedReceiver<Answer>>,
    reader: JoinHandle<()>,
    /// The sandbox (bubblewrap) itself; dropping it KILLs its group.
    sandbox: Option<Group>,
}

impl Spawner {
    /// Starts `spec` (the sandbox around `testarena __sandbox-spawner`) and waits until it is up.
    pub(crate) async fn start(spec: &Spec) -> Result<Spawner, ProcessError> {
        let failed = |source: io::Error| ProcessError::Spawn {
            program: spec.program.clone(),
            source,
        };
        let (ours, theirs) = control_pair().map_err(failed)?;
        let mut sandbox = crate::process::spawn_control(spec, theirs)?;
        match Spawner::attach(ours, None).await {
            Ok(mut spawner) => {
                if let Some(err) = sandbox.stderr.take() {
                    tokio::spawn(relay_stderr(err));
                }
                spawner.sandbox = Some(sandbox);
                Ok(spawner)
            }
            Err(why) => {
                sandbox.terminate(Duration::from_millis(200)).await;
                let said = stderr_text(&mut sandbox).await;
                Err(failed(io::Error::other(format!("{why}{said}"))))
            }
        }
    }

    /// Talks to the spawner at the other end of `control` once it says it is up.
    async fn attach(control: OwnedFd, sandbox: Option<Group>) -> io::Result<Spawner> {
        // SAFETY: `control` owns its descriptor, which stays open and the same for the
        // AsyncFd's life.
        let control = Arc::new(unsafe { AsyncFd::register(control) }?);
        match tokio::time::timeout(ANSWER_TIMEOUT, recv_async(&control)).await {
            Ok(Ok(Some(Event::Ready))) => {}
            Err(_) => {
                return Err(io::Error::other(format!(
                    "no answer within {ANSWER_TIMEOUT:?}"
                )))
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(_)) => return Err(io::Error::other("it ended before it was up")),
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_events(control.clone(), tx));
        Ok(Spawner {
            control,
            answers: tokio::sync::Mutex::new(rx),
            reader,
            sandbox,
        })
    }

    /// Starts `spec`'s program, arguments, environment (all of it: nothing is inherited) and
    /// working directory in the sandbox, as the leader of a process group of its own.
    pub(crate) async fn spawn(&self, spec: &Spec) -> Result<Group, ProcessError> {
        let failed = |source: io::Error| ProcessError::Spawn {
            program: spec.program.clone(),
            source,
        };
        let mut answers = self.answers.lock().await;
        let (stdin_theirs, stdin_ours) = if spec.stdin {
            let (r, w) = crate::process::cloexec_pipe().map_err(failed)?;
            (r, Some(w))
        } else {
            (
                OwnedFd::from(std::fs::File::open("/dev/null").map_err(failed)?),
                None,
            )
        };
        let (out_ours, out_theirs) = crate::process::cloexec_pipe().map_err(failed)?;
        let (err_ours, err_theirs) = crate::process::cloexec_pipe().map_err(failed)?;
        let req = Order::Start(Request {
            program: spec.program.clone(),
            args: spec.args.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
        });
        let fds = [
            stdin_theirs.as_raw_fd(),
            out_theirs.as_raw_fd(),
            err_theirs.as_raw_fd(),
        ];
        send(self.control.get_ref().as_fd(), &req, &fds).map_err(failed)?;
        // Only the started process holds the write ends now, so its exit is our EOF.
        drop((stdin_theirs, out_theirs, err_theirs));
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, answers.recv()).await;
        let (pgid, exit) = match answer {
            Ok(Some(Answer::Started { pgid, exit })) => (pgid.map_err(failed)?, exit),
            Ok(Some(Answer::Failed(e))) => return Err(failed(io::Error::other(e))),
            Ok(None) => return Err(failed(io::Error::other("the sandbox has ended"))),
            Err(_) => {
                return Err(failed(io::Error::other(format!(
                    "the sandbox did not answer within {ANSWER_TIMEOUT:?}"
                ))))
            }
        };
        let stdin = match stdin_ours {
            Some(w) => Some(
                tokio::process::ChildStdin::from_std(std::process::ChildStdin::from(w))
                    .map_err(failed)?,
            ),
            None => None,
        };
        let stdout =
            tokio::process::ChildStdout::from_std(std::process::ChildStdout::from(out_ours))
                .map_err(failed)?;
        let stderr =
            tokio::process::ChildStderr::from_std(std::process::ChildStderr::from(err_ours))
                .map_err(failed)?;
        Ok(Group::remote(pgid, exit, stdin, Some(stdout), Some(stderr)))
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // The spawner sees the end of its input now (the reader task, which shares the socket,
        // may be dropped later) and KILLs what it started; the group of the sandbox is KILLed as
        // `sandbox` drops, and bubblewrap is the pid namespace's init, so nothing is left.
        let _ = nix::sys::socket::shutdown(
            self.control.get_ref().as_raw_fd(),
            nix::sys::socket::Shutdown::Both,
        );
        self.reader.abort();
    }
}

/// Reads the spawner's events: answers go to the waiting request in order, exits to the groups.
async fn read_events(control: Arc<AsyncFd<OwnedFd>>, answers: mpsc::UnboundedSender<Answer>) {
    let mut exits: HashMap<i32, watch::Sender<Option<ExitStatus>>> = HashMap::new();
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let got = control.readable().await.and_then(|mut ready| {
            match ready.try_io(|fd| recv(fd.get_ref().as_fd(), &mut buf)) {
                Ok(r) => r.map(Some),
                Err(_would_block) => Ok(None),
            }
        });
        let (n, mut fds) = match got {
            Ok(Some(Some(msg))) => msg,
            Ok(None) => continue,
            // Gone: the answer channel and every exit channel close with this task.
            Ok(Some(None)) | Err(_) => return,
        };
        let event = match serde_json::from_slice::<Event>(&buf[..n]) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable message from a sandbox's spawner");
                continue;
            }
        };
        match event {
            Event::Ready => {}
            Event::Started { pid } => {
                let pgid = match fds.pop() {
                    Some(pidfd) => pid_of(&pidfd),
                    None => Err(io::Error::other("no pidfd came with it")),
                };
                // Whatever became of the reading: the process may be reaped when it exits.
                let _ = send(control.get_ref().as_fd(), &Order::Seen { pid }, &[]);
                let (tx, exit) = watch::channel(None);
                exits.insert(pid, tx);
                let _ = answers.send(Answer::Started { pgid, exit });
            }
            Event::Failed { error } => {
                let _ = answers.send(Answer::Failed(error));
            }
            Event::Exited { pid, status } => {
                if let Some(tx) = exits.remove(&pid) {
                    let _ = tx.send(Some(ExitStatus::from_raw(status)));
                }
            }
        }
    }
}

/// A connected socket pair for the protocol: ours non-blocking (polled by the runtime), theirs
/// blocking (the spawner waits on it).
fn control_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    crate::process::set_nonblocking(&ours)?;
    Ok((ours, theirs))
}

/// The first event, read before the reader task runs.
async fn recv_async(control: &AsyncFd<OwnedFd>) -> io::Result<Option<Event>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let mut ready = control.readable().await?;
        if let Ok(r) = ready.try_io(|fd| recv(fd.get_ref().as_fd(), &mut buf)) {
            return match r? {
                None => Ok(None),
                Some((n, _)) => serde_json::from_slice(&buf[..n])
                    .map(Some)
                    .map_err(io::Error::other),
            };
        }
    }
}

/// What bubblewrap said on stderr before it ended (its reason for not starting), for the error.
async fn stderr_text(sandbox: &mut Group) -> String {
    use tokio::io::AsyncReadExt;
    let Some(mut err) = sandbox.stderr.take() else {
        return String::new();
    };
    let mut text = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), err.read_to_end(&mut text)).await;
    let text = String::from_utf8_lossy(&text);
    match text.trim() {
        "" => String::new(),
        t => format!(": {t}"),
    }
}

/// Passes the sandbox's own complaints (not its commands' output) to the worker's log.
async fn relay_stderr(err: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(err).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(%line, "sandbox spawner");
    }
}

#[cfg(test)]
mod tests;
