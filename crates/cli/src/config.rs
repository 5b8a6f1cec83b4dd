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

/// Where the config file is looked for when `--config` is not given.
const DEFAULT_CONFIG: &str = "/etc/testarena/config.toml";

/// Options every subcommand that touches the database and data directory shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// TOML configuration file [default: /etc/testarena/config.toml if it exists]
    #[arg(long, env = "TESTARENA_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Database URL, sqlite://PATH [default: sqlite://<data-dir>/testarena.db]
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
    /// Accept local repository paths (and file:// URLs) under DIR; repeatable
    #[arg(
        long = "allow-local-repos",
        env = "TESTARENA_ALLOW_LOCAL_REPOS",
        value_name = "DIR",
        value_delimiter = ':'
    )]
    pub allow_local_repos: Vec<PathBuf>,
}

/// Options of the worker (`worker`, `up`).
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Queues run at once [default: 1]
    #[arg(long, env = "TESTARENA_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,
    /// Wall-clock limit of one queue, e.g. 30m [default: 60m]
    #[arg(long, env = "TESTARENA_QUEUE_TIMEOUT", value_name = "DURATION", value_parser = humantime_duration)]
    pub queue_timeout: Option<Duration>,
    /// Largest size of one log file in bytes; past it a truncation marker is written [default: 256 MiB]
    #[arg(long, env = "TESTARENA_LOG_CAP", value_name = "BYTES")]
    pub log_cap: Option<u64>,
    /// Limit of fetching and checking out a repository, e.g. 10m [default: 10m]
    #[arg(long, env = "TESTARENA_CLONE_TIMEOUT", value_name = "DURATION", value_parser = humantime_duration)]
    pub clone_timeout: Option<Duration>,
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
    pub log_format: Option<String>,
    pub concurrency: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub queue_timeout: Option<Duration>,
    pub log_cap: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub clone_timeout: Option<Duration>,
    /// Server the client commands (`submit`, `queues`, ...) talk to.
    pub server_url: Option<String>,
    /// Bearer token the client commands send.
    pub token: Option<String>,
    /// Gitea webhook and commit statuses.
    pub gitea: Option<testarena_core::gitea::GiteaConfig>,
}

/// Settings after layering.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    pub data_dir: PathBuf,
    pub allowed_roots: Vec<PathBuf>,
    pub log_json: bool,
    pub concurrency: usize,
    pub queue_timeout: Duration,
    pub log_cap: u64,
    pub clone_timeout: Duration,
    /// `[gitea]` with `TESTARENA_GITEA_SECRET` / `TESTARENA_GITEA_TOKEN` over the file's values.
    pub gitea: Option<testarena_core::gitea::GiteaConfig>,
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
) -> Result<Settings> {
    let file = read_file(common.config.as_deref())?;
    let data_dir = common
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("./testarena-data"));
    let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
    let database_url = common
        .database
        .clone()
        .or(file.database_url)
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("testarena.db").display()));
    let listen = server
        .and_then(|s| s.listen)
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let roots = match server {
        Some(s) if !s.allow_local_repos.is_empty() => s.allow_local_repos.clone(),
        _ => file.allow_local_repos,
    };
    let mut allowed_roots = Vec::new();
    for root in roots.into_iter().filter(|r| !r.as_os_str().is_empty()) {
        // Compare against the real location, so a symlinked root still matches.
        let abs = std::fs::canonicalize(&root)
            .or_else(|_| std::path::absolute(&root))
            .unwrap_or(root);
        allowed_roots.push(abs);
    }
    let log_format = common
        .log_format
        .clone()
        .or(file.log_format)
        .unwrap_or_else(|| "text".into());
    let log_json = match log_format.as_str() {
        "text" => false,
        "json" => true,
        other => anyhow::bail!("--log-format must be 'text' or 'json', got '{other}'"),
    };
    let concurrency = worker
        .and_then(|w| w.concurrency)
        .or(file.concurrency)
        .unwrap_or(1);
    if concurrency == 0 || concurrency > 64 {
        anyhow::bail!("--concurrency must be between 1 and 64, got {concurrency}");
    }
    let queue_timeout = worker
        .and_then(|w| w.queue_timeout)
        .or(file.queue_timeout)
        .unwrap_or(Duration::from_secs(3600));
    let log_cap = worker
        .and_then(|w| w.log_cap)
        .or(file.log_cap)
        .unwrap_or(256 * 1024 * 1024);
    let clone_timeout = worker
        .and_then(|w| w.clone_timeout)
        .or(file.clone_timeout)
        .unwrap_or(Duration::from_secs(600));
    let mut gitea = file.gitea;
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
    Ok(Settings {
        listen,
        database_url,
        data_dir,
        allowed_roots,
        log_json,
        concurrency,
        queue_timeout,
        log_cap,
        clone_timeout,
        gitea,
    })
}
