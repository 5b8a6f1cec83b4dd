//! Configuration: flag beats environment beats file beats default.
//!
//! Clap reads flags and `TESTARENA_*` variables (flag first); what neither gives comes from the
//! TOML file, and what that lacks from the built-in defaults.

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use testarena_core::auth::AuthMode;
use testarena_runner::sandbox::{SandboxConfig, SandboxMode};
use testarena_server::AuthConfig;

/// Where the config file is looked for when `--config` is not given.
const DEFAULT_CONFIG: &str = "/etc/testarena/config.toml";

/// Options every subcommand that touches the database and data directory shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// TOML configuration file [default: /etc/testarena/config.toml if it exists]
    #[arg(long, env = "TESTARENA_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Database URL, sqlite://PATH or postgres://USER@HOST/DB [default: sqlite://<data-dir>/testarena.db]
    #[arg(
        long,
        env = "TESTARENA_DATABASE_URL",
        value_name = "URL",
        global = true
    )]
    pub database: Option<String>,
    /// Directory for the database, git mirrors and queue files [default: ./testarena-data]
    #[arg(long, env = "TESTARENA_DATA_DIR", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Log format: text or json
    #[arg(
        long,
        env = "TESTARENA_LOG_FORMAT",
        value_name = "FORMAT",
        global = true
    )]
    pub log_format: Option<String>,
}

/// Options of the API server (`serve`, `up`).
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "TESTARENA_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Connections served at once [default: min(10000, open-file limit - 256)]
    #[arg(long, env = "TESTARENA_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Time a client has to send a request head, from its first byte [default: 10s]
    #[arg(long, env = "TESTARENA_HEADER_TIMEOUT", value_name = "DURATION", value_parser = humantime_duration)]
    pub header_timeout: Option<Duration>,
    /// Time a connection may stay idle between requests (or not read an answer) [default: 60s]
    #[arg(long, env = "TESTARENA_IDLE_TIMEOUT", value_name = "DURATION", value_parser = humantime_duration)]
    pub idle_timeout: Option<Duration>,
    /// Time a client has to send a whole request body [default: 30s]
    #[arg(long, env = "TESTARENA_BODY_TIMEOUT", value_name = "DURATION", value_parser = humantime_duration)]
    pub body_timeout: Option<Duration>,
    /// Submits (and re-runs) per second of one token, sustained; 0 = no limit [default: 10]
    #[arg(long, env = "TESTARENA_SUBMIT_RATE", value_name = "N")]
    pub submit_rate: Option<u32>,
    /// Submits one token may make at once, above the sustained rate [default: 200]
    #[arg(long, env = "TESTARENA_SUBMIT_BURST", value_name = "N")]
    pub submit_burst: Option<u32>,
    /// Archive downloads per second of one client address without a token; 0 = no limit [default: 2]
    #[arg(long, env = "TESTARENA_ARCHIVE_RATE", value_name = "N")]
    pub archive_rate: Option<u32>,
    /// Archive downloads one client address without a token may make at once [default: 20]
    #[arg(long, env = "TESTARENA_ARCHIVE_BURST", value_name = "N")]
    pub archive_burst: Option<u32>,
    /// API tokens: required (writes, and reads unless [auth] anonymous_read, need a token) or
    /// off (nothing checked) [default: off on a loopback address, required on any other]
    #[arg(long, env = "TESTARENA_AUTH", value_name = "MODE", value_parser = auth_mode)]
    pub auth: Option<AuthMode>,
}

fn auth_mode(s: &str) -> Result<AuthMode, String> {
    s.parse()
}

/// Which repositories may be tested (`serve`, `worker`, `up`): the server checks a queue's
/// repository at submit, the worker again right before every fetch.
#[derive(Debug, Clone, Default, Args)]
pub struct RepoArgs {
    /// Accept local repository paths (and file:// URLs) under DIR; repeatable
    #[arg(
        long = "allow-local-repos",
        env = "TESTARENA_ALLOW_LOCAL_REPOS",
        value_name = "DIR",
        value_delimiter = ':'
    )]
    pub allow_local_repos: Vec<PathBuf>,
    /// Repository hosts allowed, e.g. git.example.com or '*.corp.example'; repeatable or comma-separated [default: any host]
    #[arg(
        long = "allowed-hosts",
        env = "TESTARENA_ALLOWED_HOSTS",
        value_name = "HOST",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
}

/// Options of the worker (`worker`, `up`).
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Queues run at once [default: 1]
    #[arg(long, env = "TESTARENA_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,
    /// Labels of this worker, comma-separated (e.g. esp32,lab-2): it claims only queues that ask
    /// for none but these; the emulators and machines found on its host are added
    #[arg(
        long,
        env = "TESTARENA_LABELS",
        value_name = "LABEL,...",
        value_delimiter = ','
    )]
    pub labels: Vec<String>,
    /// On SIGTERM, how long running queues may finish before they are stopped and handed back
    /// to wait for another worker, e.g. 2m; 0s stops them at once [default: 30s]
    #[arg(long, env = "TESTARENA_GRACE", value_name = "DURATION", value_parser = humantime_duration)]
    pub grace: Option<Duration>,
    /// Bound of the build cache under the data directory in bytes (least recently used builds
    /// are removed past it); 0 turns the cache off [default: 2 GiB]
    #[arg(long, env = "TESTARENA_BUILD_CACHE_SIZE", value_name = "BYTES")]
    pub build_cache_size: Option<u64>,
    // How the worker runs a queue (shared with `run`).
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// How a queue is run: limits and sandbox (`worker`, `up`, `run`).
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Wall-clock limit of one queue, e.g. 30m [default: 60m]
    #[arg(long, env = "TESTARENA_QUEUE_TIMEOUT", value_name = "DURATION", value_parser = humantime_duration)]
    pub queue_timeout: Option<Duration>,
    /// Largest size of one log file in bytes; past it a truncation marker is written [default: 256 MiB]
    #[arg(long, env = "TESTARENA_LOG_CAP", value_name = "BYTES")]
    pub log_cap: Option<u64>,
    /// Limit of fetching and checking out a repository, e.g. 10m [default: 10m]
    #[arg(long, env = "TESTARENA_CLONE_TIMEOUT", value_name = "DURATION", value_parser = humantime_duration)]
    pub clone_timeout: Option<Duration>,
    /// Kill a fetch when git shows no progress for this long, e.g. 2m; 0s disables [default: 60s]
    #[arg(long, env = "TESTARENA_CLONE_STALL_TIMEOUT", value_name = "DURATION", value_parser = humantime_duration)]
    pub clone_stall_timeout: Option<Duration>,
    /// How builds, emulators and <run> steps are confined: bwrap or off [default: bwrap]
    #[arg(long, env = "TESTARENA_SANDBOX", value_name = "MODE")]
    pub sandbox: Option<SandboxMode>,
    /// Extra directory the sandbox shows read-only (a toolchain); repeatable
    #[arg(
        long = "sandbox-path",
        env = "TESTARENA_SANDBOX_PATHS",
        value_name = "DIR",
        value_delimiter = ':'
    )]
    pub sandbox_paths: Vec<PathBuf>,
    /// Extra worker environment variable passed into the sandbox; repeatable
    #[arg(
        long = "sandbox-env",
        env = "TESTARENA_SANDBOX_ENV",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub sandbox_env: Vec<String>,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("'{s}': {e} (examples: 90s, 15m, 1h)"))
}

/// The config file's keys; every one optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub allow_local_repos: Vec<PathBuf>,
    /// Host patterns repositories must be on; empty: any host.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    pub log_format: Option<String>,
    pub max_connections: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub header_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub body_timeout: Option<Duration>,
    /// Submits per second of one token; 0 = no limit.
    pub submit_rate: Option<u32>,
    /// Submits one token may make at once.
    pub submit_burst: Option<u32>,
    /// Archive downloads per second of one client address without a token; 0 = no limit.
    pub archive_rate: Option<u32>,
    /// Archive downloads one client address without a token may make at once.
    pub archive_burst: Option<u32>,
    pub concurrency: Option<usize>,
    /// The worker's labels (added to the emulators found on its host).
    #[serde(default)]
    pub labels: Vec<String>,
    /// How long running queues may finish after SIGTERM.
    #[serde(default, with = "humantime_serde")]
    pub grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub queue_timeout: Option<Duration>,
    pub log_cap: Option<u64>,
    /// Bound of the worker's build cache in bytes; 0: no cache.
    pub build_cache_size: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub clone_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub clone_stall_timeout: Option<Duration>,
    /// `bwrap` or `off`.
    pub sandbox: Option<String>,
    #[serde(default)]
    pub sandbox_paths: Vec<PathBuf>,
    #[serde(default)]
    pub sandbox_env: Vec<String>,
    /// Server the client commands (`submit`, `queues`, ...) talk to.
    pub server_url: Option<String>,
    /// Bearer token the client commands send.
    pub token: Option<String>,
    /// Gitea webhook and commit statuses.
    pub gitea: Option<testarena_server::gitea::GiteaConfig>,
    /// `[auth]`: how the server checks callers.
    pub auth: Option<AuthFile>,
}

/// The config file's `[auth]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// `required` or `off`.
    pub mode: Option<AuthMode>,
    /// Whether the board and logs are readable without a token (default true).
    pub anonymous_read: Option<bool>,
}

/// Settings after layering.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    pub data_dir: PathBuf,
    pub allowed_roots: Vec<PathBuf>,
    /// Connection limits and timeouts of the API server.
    pub limits: testarena_server::Limits,
    /// Host patterns repositories must be on (`git.example.com`, `*.corp.example`); empty: any.
    pub allowed_hosts: Vec<String>,
    /// How long a fetch may show no progress before it is killed; zero: no limit.
    pub clone_stall_timeout: Duration,
    pub log_json: bool,
    pub concurrency: usize,
    /// The worker's own labels (checked, sorted); the emulators found are added at start.
    pub labels: Vec<String>,
    /// How long running queues may finish after SIGTERM before they are handed back.
    pub grace: Duration,
    pub queue_timeout: Duration,
    pub log_cap: u64,
    /// Bound of the worker's build cache in bytes; 0: no cache.
    pub build_cache_size: u64,
    pub clone_timeout: Duration,
    /// How the worker confines repository commands.
    pub sandbox: SandboxConfig,
    /// `[gitea]` with `TESTARENA_GITEA_SECRET` / `TESTARENA_GITEA_TOKEN` over the file's values.
    pub gitea: Option<testarena_server::gitea::GiteaConfig>,
    /// How the server checks callers (the mode defaults from the listen address).
    pub auth: AuthConfig,
    /// Whether the auth mode was given (flag, environment or file) rather than defaulted.
    pub auth_explicit: bool,
}

/// Reads the config file: `explicit`, else the default path if it exists, else nothing.
pub fn read_file(explicit: Option<&Path>) -> Result<FileConfig> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
        None => return Ok(FileConfig::default()),
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Layers flags/env over the file over the defaults.
pub fn settings(
    common: &CommonArgs,
    server: Option<&ServerArgs>,
    worker: Option<&WorkerArgs>,
    repos: Option<&RepoArgs>,
) -> Result<Settings> {
    let file = read_file(common.config.as_deref())?;
    let data_dir = common
        .data_dir
        .clone()
        .or(file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("./testarena-data"));
    let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
    let sandbox = sandbox_config(worker, &file, &data_dir)?;
    let database_url = common
        .database
        .clone()
        .or(file.database_url.clone())
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("testarena.db").display()));
    let listen = server
        .and_then(|s| s.listen)
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let (allowed_roots, allowed_hosts) = repo_policy(repos, &file);
    let clone_stall_timeout = worker
        .and_then(|w| w.engine.clone_stall_timeout)
        .or(file.clone_stall_timeout)
        .unwrap_or(testarena_runner::git::DEFAULT_STALL_TIMEOUT);
    let limits = server_limits(server, &file)?;
    let log_json = log_json(common, &file)?;
    let concurrency = worker
        .and_then(|w| w.concurrency)
        .or(file.concurrency)
        .unwrap_or(1);
    if concurrency == 0 || concurrency > 64 {
        anyhow::bail!("--concurrency must be between 1 and 64, got {concurrency}");
    }
    let labels = worker
        .map(|w| w.labels.clone())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| file.labels.clone());
    let labels = worker_labels(labels)?;
    let grace = worker
        .and_then(|w| w.grace)
        .or(file.grace)
        .unwrap_or(DEFAULT_GRACE);
    let queue_timeout = worker
        .and_then(|w| w.engine.queue_timeout)
        .or(file.queue_timeout)
        .unwrap_or(Duration::from_secs(3600));
    let log_cap = worker
        .and_then(|w| w.engine.log_cap)
        .or(file.log_cap)
        .unwrap_or(256 * 1024 * 1024);
    let build_cache_size = worker
        .and_then(|w| w.build_cache_size)
        .or(file.build_cache_size)
        .unwrap_or(testarena_runner::build_cache::DEFAULT_BUILD_CACHE_BYTES);
    let clone_timeout = worker
        .and_then(|w| w.engine.clone_timeout)
        .or(file.clone_timeout)
        .unwrap_or(Duration::from_secs(600));
    let (auth, auth_explicit) = auth_settings(server, file.auth.as_ref(), listen);
    let gitea = gitea_with_env(file.gitea);
    Ok(Settings {
        listen,
        database_url,
        data_dir,
        allowed_roots,
        limits,
        allowed_hosts,
        clone_stall_timeout,
        log_json,
        concurrency,
        labels,
        grace,
        queue_timeout,
        log_cap,
        build_cache_size,
        clone_timeout,
        sandbox,
        gitea,
        auth,
        auth_explicit,
    })
}

/// The server's auth settings: the mode from flag/env over `[auth] mode`, else `off` on a
/// loopback address and `required` on any other (so a server reachable from the network never
/// takes anonymous writes by accident); `anonymous_read` from the file, default true. The flag
/// says whether the mode was given.
pub fn auth_settings(
    server: Option<&ServerArgs>,
    file: Option<&AuthFile>,
    listen: SocketAddr,
) -> (AuthConfig, bool) {
    let given = server.and_then(|s| s.auth).or(file.and_then(|f| f.mode));
    let mode = given.unwrap_or(if is_loopback(listen) {
        AuthMode::Off
    } else {
        AuthMode::Required
    });
    let anonymous_read = file.and_then(|f| f.anonymous_read).unwrap_or(true);
    (
        AuthConfig {
            mode,
            anonymous_read,
        },
        given.is_some(),
    )
}

/// Whether `addr` is reachable from this host only (127.0.0.0/8, ::1, or ::ffff:127.x).
pub fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// How long running queues may finish after SIGTERM when nothing says otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Checks the labels given to a worker (blank entries, as `--labels a,,b` or an empty
/// `TESTARENA_LABELS` give, are dropped); returns them sorted without duplicates.
pub fn worker_labels(labels: Vec<String>) -> Result<Vec<String>> {
    let mut out: Vec<String> = labels
        .into_iter()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    for l in &out {
        testarena_core::validate::check_label(l).map_err(|m| anyhow::anyhow!("--labels: {m}"))?;
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The server's connection limits: flag/env over the file over the defaults.
fn server_limits(
    server: Option<&ServerArgs>,
    file: &FileConfig,
) -> Result<testarena_server::Limits> {
    let defaults = testarena_server::Limits::default();
    let limits = testarena_server::Limits {
        max_connections: server
            .and_then(|s| s.max_connections)
            .or(file.max_connections)
            .unwrap_or(defaults.max_connections),
        header_timeout: server
            .and_then(|s| s.header_timeout)
            .or(file.header_timeout)
            .unwrap_or(defaults.header_timeout),
        idle_timeout: server
            .and_then(|s| s.idle_timeout)
            .or(file.idle_timeout)
            .unwrap_or(defaults.idle_timeout),
        body_timeout: server
            .and_then(|s| s.body_timeout)
            .or(file.body_timeout)
            .unwrap_or(defaults.body_timeout),
        submit_rate: rate(
            "submit",
            server.and_then(|s| s.submit_rate).or(file.submit_rate),
            server.and_then(|s| s.submit_burst).or(file.submit_burst),
            defaults.submit_rate,
        )?,
        archive_rate: rate(
            "archive",
            server.and_then(|s| s.archive_rate).or(file.archive_rate),
            server.and_then(|s| s.archive_burst).or(file.archive_burst),
            defaults.archive_rate,
        )?,
    };
    for (name, d) in [
        ("header_timeout", limits.header_timeout),
        ("idle_timeout", limits.idle_timeout),
        ("body_timeout", limits.body_timeout),
    ] {
        if d.is_zero() {
            anyhow::bail!("{name} must be more than 0");
        }
    }
    Ok(limits)
}

/// A rate limit from its layered rate and burst (each falling back to `default`'s); a burst
/// of 0 with a rate is refused, as a rate of 0 is the way to say "no limit".
fn rate(
    what: &str,
    per_second: Option<u32>,
    burst: Option<u32>,
    default: testarena_server::Rate,
) -> Result<testarena_server::Rate> {
    let rate = testarena_server::Rate {
        per_second: per_second.unwrap_or(default.per_second),
        burst: burst.unwrap_or(default.burst),
    };
    if rate.per_second > 0 && rate.burst == 0 {
        anyhow::bail!("{what}_burst must be at least 1 (set {what}_rate = 0 for no limit)");
    }
    Ok(rate)
}

/// Where repositories may come from: local roots (real paths) and remote host patterns.
fn repo_policy(repos: Option<&RepoArgs>, file: &FileConfig) -> (Vec<PathBuf>, Vec<String>) {
    let roots = match repos {
        Some(r) if !r.allow_local_repos.is_empty() => r.allow_local_repos.clone(),
        _ => file.allow_local_repos.clone(),
    };
    let allowed_hosts: Vec<String> = match repos {
        Some(r) if !r.allowed_hosts.is_empty() => r.allowed_hosts.clone(),
        _ => file.allowed_hosts.clone(),
    }
    .into_iter()
    .map(|h| h.trim().to_string())
    .filter(|h| !h.is_empty())
    .collect();
    let allowed_roots = roots
        .into_iter()
        .filter(|r| !r.as_os_str().is_empty())
        // Compare against the real location, so a symlinked root still matches.
        .map(|root| {
            std::fs::canonicalize(&root)
                .or_else(|_| std::path::absolute(&root))
                .unwrap_or(root)
        })
        .collect();
    (allowed_roots, allowed_hosts)
}

/// Whether the process logs JSON (else text).
fn log_json(common: &CommonArgs, file: &FileConfig) -> Result<bool> {
    let format = common
        .log_format
        .clone()
        .or(file.log_format.clone())
        .unwrap_or_else(|| "text".into());
    match format.as_str() {
        "text" => Ok(false),
        "json" => Ok(true),
        other => anyhow::bail!("--log-format must be 'text' or 'json', got '{other}'"),
    }
}

/// `[gitea]` with `TESTARENA_GITEA_SECRET` / `TESTARENA_GITEA_TOKEN` over the file's values.
fn gitea_with_env(
    mut gitea: Option<testarena_server::gitea::GiteaConfig>,
) -> Option<testarena_server::gitea::GiteaConfig> {
    for (var, is_token) in [
        ("TESTARENA_GITEA_SECRET", false),
        ("TESTARENA_GITEA_TOKEN", true),
    ] {
        if let Ok(value) = std::env::var(var) {
            let g = gitea.get_or_insert_with(Default::default);
            if is_token {
                g.token = Some(value);
            } else {
                g.secret = Some(value);
            }
        }
    }
    gitea
}

/// The worker's sandbox settings: flag/env over the file over bubblewrap with no extras.
fn sandbox_config(
    worker: Option<&WorkerArgs>,
    file: &FileConfig,
    data_dir: &Path,
) -> Result<SandboxConfig> {
    let mode = match (worker.and_then(|w| w.engine.sandbox), &file.sandbox) {
        (Some(m), _) => m,
        (None, Some(m)) => m.parse().map_err(|e: String| anyhow::anyhow!("{e}"))?,
        (None, None) => SandboxMode::Bwrap,
    };
    let mut cfg = SandboxConfig::bwrap(data_dir.to_path_buf());
    cfg.mode = mode;
    // This program serves as the spawner kept in each task's sandbox (`sandbox::spawner`).
    cfg.spawner = std::env::current_exe().ok();
    cfg.ro_paths = match worker {
        Some(w) if !w.engine.sandbox_paths.is_empty() => w.engine.sandbox_paths.clone(),
        _ => file.sandbox_paths.clone(),
    };
    cfg.env_allow = match worker {
        Some(w) if !w.engine.sandbox_env.is_empty() => w.engine.sandbox_env.clone(),
        _ => file.sandbox_env.clone(),
    };
    Ok(cfg)
}

#[cfg(test)]
mod repo_policy_tests {
    use super::*;

    fn common(config: &Path, data_dir: &Path) -> CommonArgs {
        CommonArgs {
            config: Some(config.to_path_buf()),
            database: None,
            data_dir: Some(data_dir.to_path_buf()),
            log_format: None,
        }
    }

    #[test]
    fn repository_policy_layers_flag_over_file_over_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            format!(
                "allow_local_repos = [\"{}\"]\nallowed_hosts = [\"git.example.com\", \"*.corp.example\"]\nclone_stall_timeout = \"90s\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let c = common(&file, dir.path());
        // The worker alone reads the same roots and hosts as the server.
        let s = settings(&c, None, None, Some(&RepoArgs::default())).unwrap();
        assert_eq!(
            s.allowed_roots,
            vec![std::fs::canonicalize(dir.path()).unwrap()]
        );
        assert_eq!(s.allowed_hosts, ["git.example.com", "*.corp.example"]);
        assert_eq!(s.clone_stall_timeout, Duration::from_secs(90));
        let flags = RepoArgs {
            allow_local_repos: Vec::new(),
            allowed_hosts: vec!["only.example".into()],
        };
        let s = settings(&c, None, None, Some(&flags)).unwrap();
        assert_eq!(s.allowed_hosts, ["only.example"]);
        std::fs::write(&file, "").unwrap();
        let s = settings(&c, None, None, None).unwrap();
        assert!(s.allowed_hosts.is_empty() && s.allowed_roots.is_empty());
        assert_eq!(s.clone_stall_timeout, Duration::from_secs(60));
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    #[test]
    fn rate_limits_layer_flag_over_file_over_default() {
        let file: FileConfig =
            toml::from_str("submit_rate = 5\nsubmit_burst = 50\narchive_rate = 0\n").unwrap();
        let none = Cli::parse_from(["t"]);
        let limits = server_limits(Some(&none.server), &file).unwrap();
        assert_eq!(
            (limits.submit_rate.per_second, limits.submit_rate.burst),
            (5, 50)
        );
        // 0 is no limit; the burst left unset keeps the default.
        assert_eq!(
            (limits.archive_rate.per_second, limits.archive_rate.burst),
            (0, 20)
        );
        let flags = Cli::parse_from(["t", "--submit-burst", "3", "--archive-rate", "1"]);
        let limits = server_limits(Some(&flags.server), &file).unwrap();
        assert_eq!(
            (limits.submit_rate.per_second, limits.submit_rate.burst),
            (5, 3)
        );
        assert_eq!(
            (limits.archive_rate.per_second, limits.archive_rate.burst),
            (1, 20)
        );
        let defaults = server_limits(None, &FileConfig::default()).unwrap();
        assert_eq!(defaults, testarena_server::Limits::default());
        assert_eq!(
            (defaults.submit_rate.per_second, defaults.submit_rate.burst),
            (10, 200)
        );
        let bad = Cli::parse_from(["t", "--submit-burst", "0"]);
        let e = server_limits(Some(&bad.server), &FileConfig::default()).unwrap_err();
        assert!(e.to_string().contains("submit_burst"), "{e}");
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn worker_labels_are_checked_trimmed_and_sorted() {
        let given = vec![
            " lab-2".to_string(),
            String::new(),
            "esp32".into(),
            "esp32".into(),
        ];
        assert_eq!(worker_labels(given).unwrap(), ["esp32", "lab-2"]);
        let e = worker_labels(vec!["Lab 2".into()]).unwrap_err().to_string();
        assert!(e.starts_with("--labels: "), "{e}");
    }

    #[test]
    fn the_config_file_takes_labels_and_a_grace_period() {
        let f: FileConfig = toml::from_str("labels = [\"esp32\"]\ngrace = \"2m\"\n").unwrap();
        assert_eq!(f.labels, ["esp32"]);
        assert_eq!(f.grace, Some(Duration::from_secs(120)));
    }
}

#[cfg(test)]
mod auth_tests {
    use super::*;

    fn flag(auth: Option<AuthMode>) -> ServerArgs {
        ServerArgs {
            listen: None,
            max_connections: None,
            header_timeout: None,
            idle_timeout: None,
            body_timeout: None,
            submit_rate: None,
            submit_burst: None,
            archive_rate: None,
            archive_burst: None,
            auth,
        }
    }

    #[test]
    fn auth_is_off_on_loopback_only_unless_given() {
        let at = |a: &str| auth_settings(None, None, a.parse().unwrap());
        let off = AuthConfig {
            mode: AuthMode::Off,
            anonymous_read: true,
        };
        let required = AuthConfig {
            mode: AuthMode::Required,
            anonymous_read: true,
        };
        for lo in [
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert_eq!(at(lo), (off.clone(), false), "{lo}");
        }
        for public in [
            "0.0.0.0:8080",
            "[::]:8080",
            "192.0.2.1:80",
            "[2001:db8::1]:80",
        ] {
            assert_eq!(at(public), (required.clone(), false), "{public}");
        }
    }

    #[test]
    fn auth_layers_flag_over_file() {
        let any: SocketAddr = "0.0.0.0:80".parse().unwrap();
        let file: FileConfig =
            toml::from_str("[auth]\nmode = \"off\"\nanonymous_read = false\n").unwrap();
        let f = file.auth.as_ref();
        let (cfg, given) = auth_settings(Some(&flag(None)), f, any);
        assert_eq!(
            (cfg.mode, cfg.anonymous_read, given),
            (AuthMode::Off, false, true)
        );
        let (cfg, given) = auth_settings(Some(&flag(Some(AuthMode::Required))), f, any);
        assert_eq!(
            (cfg.mode, cfg.anonymous_read, given),
            (AuthMode::Required, false, true)
        );
        assert!(toml::from_str::<FileConfig>("[auth]\nmode = \"maybe\"\n").is_err());
        assert!(toml::from_str::<FileConfig>("[auth]\nanonymous = true\n").is_err());
    }
}
