//! The sandbox every build, emulator and `<run>` step runs in.
//!
//! With bubblewrap (`bwrap`) each command gets its own user, PID, IPC, UTS and cgroup
//! namespaces (so everything it starts dies with it, `setsid` or not, and dies with the worker
//! through `--die-with-parent`), no capabilities, a private `/tmp`, the system directories
//! read-only, the queue's workspace (and its files directory) as the only writable places, and an
//! environment built from an allow-list plus what the queue sets. The data directory, the
//! database, other queues, the worker's config and its secrets are simply not there.
//!
//! Network: a build shares the host's network unless its `testarena.toml` says
//! `[build] network = false`; the emulator and `<run>` steps of one task share one network
//! namespace of their own with only a loopback device ([`NetNs`]), which the worker reaches by
//! creating its sockets inside it, unless `[emulator] network = true`.

use crate::process::{self, Group, ProcessError, Spec};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Environment variables a sandboxed command inherits from the worker when they are set; all
/// others (tokens, secrets, `TESTARENA_*` settings) are dropped.
pub const DEFAULT_ENV_ALLOW: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "TERM",
    "SOURCE_DATE_EPOCH",
    "IDF_PATH",
    "IDF_TOOLS_PATH",
    "IDF_PYTHON_ENV_PATH",
    "ESP_IDF_VERSION",
    // Toolchain managers whose shims on PATH need their root (mounted read-only, see below).
    "PYENV_ROOT",
    "PYENV_VERSION",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
];

/// Entries of `/etc` a sandboxed command can read (name lookup, TLS roots, the dynamic linker,
/// Debian's alternatives); the rest of `/etc` (shadow, the worker's config) is not there.
const ETC_ALLOW: &[&str] = &[
    "passwd",
    "group",
    "hosts",
    "host.conf",
    "resolv.conf",
    "nsswitch.conf",
    "gai.conf",
    "services",
    "protocols",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "mime.types",
    "gitconfig",
    "perl",
    "python3",
    "python3.11",
    "python3.12",
    "python3.13",
];

/// Top-level system directories mounted read-only (or re-created as the symlinks they are on a
/// merged-/usr system).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
];

/// Where sandboxed commands find their home directory (on the private `/tmp`).
const SANDBOX_HOME: &str = "/tmp/home";

/// How commands of repositories are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// Bubblewrap namespaces, as described in the module documentation.
    Bwrap,
    /// No isolation (only the environment allow-list): for hosts without bubblewrap, trusted
    /// repositories only.
    Off,
}

impl std::str::FromStr for SandboxMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bwrap" => Ok(SandboxMode::Bwrap),
            "off" => Ok(SandboxMode::Off),
            other => Err(format!("sandbox must be 'bwrap' or 'off', got '{other}'")),
        }
    }
}

/// The worker's sandbox settings.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    /// The bubblewrap program (`bwrap`, looked up in `PATH`).
    pub bwrap: PathBuf,
    /// The worker's data directory: never visible in a sandbox, whatever else asks for it.
    pub data_dir: PathBuf,
    /// Extra directories mounted read-only (toolchains outside `/usr` and `/opt`).
    pub ro_paths: Vec<PathBuf>,
    /// Names of worker environment variables passed through, on top of [`DEFAULT_ENV_ALLOW`].
    pub env_allow: Vec<String>,
    /// A program that serves as a sandbox's spawner when run with [`spawner::SPAWNER_ARG`]
    /// (the `testarena` binary): an emulator that boots again and again in one task then starts
    /// inside one sandbox kept for the task. Without it, each start has a sandbox of its own.
    pub spawner: Option<PathBuf>,
}

/// Why the sandbox cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("bubblewrap (`{0}`) was not found; install it (Debian: apt-get install bubblewrap) or run the worker with --sandbox off, which lets every build read what the worker can")]
    Missing(String),
    #[error("bubblewrap does not work on this host ({0}); it needs user namespaces (sysctl kernel.unprivileged_userns_clone=1) or root; or run the worker with --sandbox off")]
    Broken(String),
}

impl SandboxConfig {
    /// Bubblewrap mode with the default allow-lists.
    pub fn bwrap(data_dir: PathBuf) -> SandboxConfig {
        SandboxConfig {
            mode: SandboxMode::Bwrap,
            bwrap: PathBuf::from("bwrap"),
            data_dir,
            ro_paths: Vec::new(),
            env_allow: Vec::new(),
            spawner: None,
        }
    }

    /// Checks that bubblewrap starts a sandbox here; the worker calls it once at start.
    pub fn check(&self) -> Result<(), SandboxError> {
        if self.mode == SandboxMode::Off {
            return Ok(());
        }
        let out = std::process::Command::new(&self.bwrap)
            .args([
                "--unshare-all",
                "--die-with-parent",
                "--ro-bind",
                "/",
                "/",
                "--",
                "true",
            ])
            .env_clear()
            .output();
        match out {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(SandboxError::Missing(self.bwrap.display().to_string()))
            }
            Err(e) => Err(SandboxError::Broken(e.to_string())),
            Ok(o) if !o.status.success() => Err(SandboxError::Broken(
                String::from_utf8_lossy(&o.stderr).trim().to_string(),
            )),
            Ok(_) => Ok(()),
        }
    }

    /// The worker's environment variables a sandboxed command may see.
    fn allowed_env(&self) -> Vec<(String, String)> {
        let names = DEFAULT_ENV_ALLOW
            .iter()
            .map(|s| s.to_string())
            .chain(self.env_allow.iter().cloned());
        let mut out: Vec<(String, String)> = Vec::new();
        for name in names {
            if out.iter().any(|(n, _)| *n == name) {
                continue;
            }
            if let Ok(value) = std::env::var(&name) {
                out.push((name, value));
            }
        }
        out
    }

    /// True if mounting `path` would show the data directory (it is the data dir, inside it,
    /// or one of its ancestors).
    fn exposes_data_dir(&self, path: &Path) -> bool {
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let data = std::fs::canonicalize(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        data.starts_with(&real) || real.starts_with(&data)
    }

    /// Read-only directories beyond the system ones: `PATH` entries, directories named by
    /// allowed variables (`IDF_PATH`, ...), and `ro_paths`; never one that shows the data dir.
    fn extra_ro_dirs(&self, env: &[(String, String)]) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (name, value) in env {
            let candidates: Vec<&str> = if name == "PATH" {
                value.split(':').collect()
            } else {
                vec![value.as_str()]
            };
            for c in candidates {
                let p = Path::new(c);
                if p.is_absolute() && p.is_dir() {
                    dirs.push(p.to_path_buf());
                }
            }
        }
        dirs.extend(self.ro_paths.iter().cloned());
        let system = |p: &Path| SYSTEM_DIRS.iter().any(|s| p.starts_with(s));
        let mut out: Vec<PathBuf> = Vec::new();
        for d in dirs {
            if d == Path::new("/") || system(&d) || out.contains(&d) {
                continue;
            }
            if self.exposes_data_dir(&d) {
                tracing::warn!(dir = %d.display(), "not mounting a directory that holds the data directory into the sandbox");
                continue;
            }
            out.push(d);
        }
        out
    }
}

/// What one command may touch besides the system directories.
#[derive(Debug, Clone, Default)]
pub struct Jail {
    /// Mounted read-write at the same path (the workspace, the files directory).
    pub writable: Vec<PathBuf>,
    /// Mounted read-only at the same path (the repository's git mirror).
    pub readable: Vec<PathBuf>,
    /// The network it sees.
    pub network: Network,
    /// Variables set on top of the allowed worker environment (`TESTARENA_*`, `[env]`).
    pub env: Vec<(String, String)>,
}

/// The network a sandboxed command sees.
#[derive(Debug, Clone, Default)]
pub enum Network {
    /// The host's network.
    #[default]
    Host,
    /// A network namespace of its own with only loopback (nothing to reach).
    None,
    /// A namespace shared with other commands of the same task and with the worker's sockets.
    Shared(Arc<NetNs>),
}

/// A sandbox for the commands of one phase: the worker's settings and one jail.
#[derive(Debug, Clone)]
pub struct Sandbox {
    cfg: Option<Arc<SandboxConfig>>,
    jail: Jail,
    /// The spawner kept for the emulator's starts (see [`Sandbox::start`]), once started; `None`
    /// inside if it could not be.
    spawner: Arc<tokio::sync::OnceCell<Option<Spawner>>>,
}

impl Sandbox {
    /// Commands confined by `cfg` to `jail`.
    pub fn new(cfg: Arc<SandboxConfig>, jail: Jail) -> Sandbox {
        Sandbox {
            cfg: Some(cfg),
            jail,
            spawner: Arc::default(),
        }
    }

    /// No confinement and the worker's whole environment: for tests of the console alone.
    pub fn unconfined() -> Sandbox {
        Sandbox {
            cfg: None,
            jail: Jail::default(),
            spawner: Arc::default(),
        }
    }

    /// The shared network namespace the worker must create its sockets in, if any.
    pub fn netns(&self) -> Option<&Arc<NetNs>> {
        match &self.jail.network {
            Network::Shared(ns) => Some(ns),
            _ => None,
        }
    }

    /// The variables the jail sets (for logs and tests).
    pub fn jail_env(&self) -> &[(String, String)] {
        &self.jail.env
    }

    /// Starts `spec` inside the sandbox as the leader of a process group of its own: through
    /// the sandbox's spawner where there is one (started at the first call, kept as long as this
    /// sandbox), each start in a sandbox of its own otherwise.
    pub async fn start(&self, spec: Spec) -> Result<Group, ProcessError> {
        match self.spawner(spec.cwd.as_deref()).await {
            Some(spawner) => {
                let env = self.inner_env(spec.env.clone());
                spawner.spawn(&Spec { env, ..spec }).await
            }
            None => process::spawn(&self.wrap(spec)),
        }
    }

    /// Starts the spawner in the background (if this sandbox has one), so that the first boot
    /// does not wait for it: called as a task begins, while its cases are being recorded, with
    /// the emulator's working directory.
    pub fn prepare(&self, cwd: &Path) {
        if self.spawner.initialized() || !self.keeps_spawner() {
            return;
        }
        let sandbox = self.clone();
        let cwd = cwd.to_path_buf();
        tokio::spawn(async move {
            sandbox.spawner(Some(&cwd)).await;
        });
    }

    fn keeps_spawner(&self) -> bool {
        self.cfg
            .as_ref()
            .is_some_and(|c| c.mode == SandboxMode::Bwrap && c.spawner.is_some())
    }

    /// The spawner, started on first use in `cwd` (the emulator's: so the sandbox's processes
    /// are found, and cleaned up, with the queue's); `None` in the modes without bubblewrap,
    /// without a spawner program, or if it would not start (then every start has a sandbox of
    /// its own).
    async fn spawner(&self, cwd: Option<&Path>) -> Option<&Spawner> {
        let cfg = self.cfg.as_ref().filter(|c| c.mode == SandboxMode::Bwrap)?;
        let exe = cfg.spawner.as_ref()?;
        self.spawner
            .get_or_init(|| async {
                let mut inner = Spec::new(spawner::SPAWNER_PATH, [spawner::SPAWNER_ARG]);
                inner.cwd = cwd.map(Path::to_path_buf);
                let spec = self.wrap_with(
                    inner,
                    &[(exe.as_path(), Path::new(spawner::SPAWNER_PATH))],
                );
                match Spawner::start(&spec).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot keep a sandbox for the task; each emulator start gets one of its own");
                        None
                    }
                }
            })
            .await
            .as_ref()
    }

    /// The environment of a command in a bubblewrap sandbox: the allowed part of the worker's,
    /// the sandbox's home and temporary directory, the jail's, then the command's own.
    fn inner_env(&self, own: Vec<(String, String)>) -> Vec<(String, String)> {
        let Some(cfg) = &self.cfg else {
            return own;
        };
        let mut env = cfg.allowed_env();
        env.push(("HOME".into(), SANDBOX_HOME.into()));
        env.push(("TMPDIR".into(), "/tmp".into()));
        env.extend(self.jail.env.iter().cloned());
        env.extend(own);
        env
    }

    /// Turns `spec` into the command that runs it inside the sandbox.
    pub fn wrap(&self, spec: Spec) -> Spec {
        self.wrap_with(spec, &[])
    }

    /// [`Sandbox::wrap`], with files mounted read-only at the given places in the sandbox.
    fn wrap_with(&self, spec: Spec, ro_files: &[(&Path, &Path)]) -> Spec {
        let Some(cfg) = &self.cfg else {
            let mut spec = spec;
            spec.env.extend(self.jail.env.iter().cloned());
            return spec;
        };
        let mut env = cfg.allowed_env();
        let ro_dirs = cfg.extra_ro_dirs(&env);
        if cfg.mode == SandboxMode::Off {
            if let Ok(home) = std::env::var("HOME") {
                env.push(("HOME".into(), home));
            }
            env.extend(self.jail.env.iter().cloned());
            env.extend(spec.env);
            return Spec {
                env,
                clear_env: true,
                ..spec
            };
        }
        let env = self.inner_env(spec.env.clone());
        let mut args = bwrap_args(&self.jail, &ro_dirs, ro_files);
        if let Some(cwd) = &spec.cwd {
            args.push("--chdir".into());
            args.push(cwd.display().to_string());
        }
        args.push("--".into());
        args.push(spec.program.clone());
        args.extend(spec.args.iter().cloned());
        Spec {
            program: cfg.bwrap.display().to_string(),
            args,
            cwd: spec.cwd.clone(),
            env,
            stdin: spec.stdin,
            clear_env: true,
            netns: self.netns().map(|ns| ns.raw_fd()),
            die_with_parent: true,
        }
    }
}

/// The bubblewrap options for `jail`, up to (not including) the command.
fn bwrap_args(jail: &Jail, ro_dirs: &[PathBuf], ro_files: &[(&Path, &Path)]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--die-with-parent",
        "--unshare-all",
        "--cap-drop",
        "ALL",
        "--hostname",
        "testarena",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // A shared namespace is joined before bwrap starts (see `Spec::netns`); bwrap keeps it.
    if !matches!(jail.network, Network::None) {
        a.push("--share-net".into());
    }
    let mut push = |opt: &str, src: &Path, dst: &Path| {
        a.push(opt.into());
        a.push(src.display().to_string());
        a.push(dst.display().to_string());
    };
    for dir in SYSTEM_DIRS.iter().map(Path::new) {
        match std::fs::read_link(dir) {
            Ok(target) => push("--symlink", &target, dir),
            Err(_) if dir.is_dir() => push("--ro-bind", dir, dir),
            Err(_) => {}
        }
    }
    for name in ETC_ALLOW {
        let p = Path::new("/etc").join(name);
        push("--ro-bind-try", &p, &p);
    }
    a.extend(
        [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/var/tmp",
            "--tmpfs",
            "/run",
            "--dir",
            SANDBOX_HOME,
        ]
        .map(String::from),
    );
    // After the tmpfs mounts, so that directories under /tmp (tests, stand-in tools) show.
    let mut push = |opt: &str, p: &Path| {
        a.push(opt.into());
        a.push(p.display().to_string());
        a.push(p.display().to_string());
    };
    for d in ro_dirs.iter().chain(&jail.readable) {
        push("--ro-bind-try", d);
    }
    for d in &jail.writable {
        push("--bind", d);
    }
    for (src, dst) in ro_files {
        a.push("--ro-bind".into());
        a.push(src.display().to_string());
        a.push(dst.display().to_string());
    }
    // The sandbox's own root (where the mount points were made) is not a place to write.
    a.extend(["--remount-ro", "/"].map(String::from));
    a
}

/// A network namespace with only a loopback device, shared by the emulator and the `<run>`
/// steps of one task; the worker creates its console sockets inside it. Creating one needs
/// CAP_SYS_ADMIN (a worker running as root).
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
}

impl NetNs {
    /// Creates the namespace (on a thread of its own, which alone enters it) and brings up `lo`.
    pub fn create() -> io::Result<NetNs> {
        let made = std::thread::spawn(|| -> io::Result<OwnedFd> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            loopback_up()?;
            Ok(OwnedFd::from(std::fs::File::open(
                "/proc/thread-self/ns/net",
            )?))
        })
        .join()
        .map_err(|_| io::Error::other("the thread creating a network namespace panicked"))?;
        Ok(NetNs { fd: made? })
    }

    /// Runs `f` on a fresh thread inside the namespace: sockets it creates belong there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(self.fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                f()
            })
            .join()
            .map_err(|_| io::Error::other("a thread inside the network namespace panicked"))?
        })
    }

    /// The namespace's descriptor, for a child to join before it execs.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Brings up `lo` in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a descriptor we own and a zeroed `ifreq` we fill in.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(sock);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub mod spawner;
use spawner::Spawner;

#[cfg(test)]
mod tests;
