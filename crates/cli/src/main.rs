//! `testarena`: the server, the worker, both at once, and tools around them.

mod client;
mod config;
mod repro;
mod run;
mod tokens;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use config::{CommonArgs, RepoArgs, ServerArgs, Settings, WorkerArgs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use testarena_runner::pipeline::RunnerConfig;
use testarena_runner::worker::{self, Worker};
use testarena_server::{AppState, ServerConfig};
use testarena_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// TestArena: builds firmware from a git branch, boots it in an emulator, drives its console
/// through XML scenarios and reports every line live.
#[derive(Debug, Parser)]
#[command(name = "testarena", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the REST API and dashboard
    Serve {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        repos: RepoArgs,
    },
    /// Claim waiting queues from the database and run them
    Worker {
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        repos: RepoArgs,
    },
    /// Run the API server and one worker in one process (the single-machine default)
    Up {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        repos: RepoArgs,
    },
    /// Check scenario files: print their errors with line and column (exit 1) or a summary
    Validate {
        /// Scenario XML files
        #[arg(required = true, value_name = "FILE.xml")]
        files: Vec<PathBuf>,
    },
    /// Create or upgrade the database schema, then exit; with --from and --to, copy an
    /// installation's history from one database into another (SQLite to PostgreSQL)
    #[command(
        after_help = "Copying (--from sqlite://PATH --to postgres://USER@HOST/DB): every queue \
with all its fields, its tasks, cases, commit-status reports and case history is copied with its id, status \
and times, in one transaction on the target, which must be a new, empty database (refused \
otherwise). API tokens are copied too (they keep working). Workers and bisects are not copied (a bisect's step queues are), and queues are copied as they are, running ones too: stop \
the server and the workers first. Each queue's files (logs, case pages, JUnit report, what its \
builds left) are copied after the rows, a queue at a time (should that fail, copy again into a \
new database); files an older version kept under <data>/queues/<id>/ are imported into --from \
first, so the new installation needs nothing of the old data directory."
    )]
    Migrate {
        /// Copy the history of this database (sqlite://PATH) into --to (files an older version left in
        /// the data directory are imported into it first)
        #[arg(long, value_name = "URL", requires = "to")]
        from: Option<String>,
        /// The new, empty database to copy into (postgres://USER@HOST/DB); its schema is created first
        #[arg(long, value_name = "URL", requires = "from")]
        to: Option<String>,
    },
    /// Create, list and revoke API tokens (in the database directly, with the same
    /// --database / --data-dir / config as `serve`)
    Token {
        #[command(subcommand)]
        action: tokens::TokenCommand,
    },
    /// Build, boot and run the scenarios here, without a server: a local directory's work
    /// tree as it is (uncommitted changes included) or a git URL; prints the console live and
    /// a verdict table, writes the reports into ./testarena-run/ (exit 0 passed, 1 failed,
    /// 2 error, 3 bad input)
    Run(run::RunArgs),
    /// Fetch a failed case's repro bundle from the server and replay that case here, without
    /// building: the same firmware images, emulator command and scenario, the console live
    /// (exit 0 passed, 1 failed, 2 error, 3 bad input or refused)
    Repro(repro::ReproArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESTARENA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Registers SIGTERM and SIGINT handlers now (before the address is announced, so a signal
/// sent right after never finds the default action) and returns a future that completes on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutdown signal received");
    })
}

async fn open_store(s: &Settings) -> Result<Store> {
    open_store_with(s, &testarena_store::StoreOptions::default()).await
}

/// The store of a process that runs queues: its pool grows with `--concurrency`.
async fn open_worker_store(s: &Settings) -> Result<Store> {
    open_store_with(s, &testarena_store::StoreOptions::for_worker(s.concurrency)).await
}

async fn open_store_with(s: &Settings, options: &testarena_store::StoreOptions) -> Result<Store> {
    std::fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("cannot create data directory {}", s.data_dir.display()))?;
    Store::open_with(&s.database_url, options)
        .await
        .with_context(|| {
            // A PostgreSQL URL may carry a password.
            let url = testarena_core::redact::redact(&s.database_url);
            format!("cannot open database {url}")
        })
}

/// `migrate --from --to`: copies one database's history into another, new one.
async fn copy_database(from: &str, to: &str, data_dir: &std::path::Path) -> Result<()> {
    use testarena_core::redact::redact;
    if from.trim_end_matches('/') == to.trim_end_matches('/') {
        anyhow::bail!("--from and --to name the same database");
    }
    let source_path = from
        .strip_prefix("sqlite://")
        .or_else(|| from.strip_prefix("sqlite:"))
        .map(|p| p.split('?').next().unwrap_or(p));
    if let Some(path) = source_path {
        // Opening a missing SQLite file would create an empty one: copying nothing is a mistake.
        if !std::path::Path::new(path).is_file() {
            anyhow::bail!("--from: no database file at {path}");
        }
    }
    let source = Store::open(from)
        .await
        .with_context(|| format!("cannot open the database to copy from, {}", redact(from)))?;
    let target = Store::open(to)
        .await
        .with_context(|| format!("cannot open the database to copy into, {}", redact(to)))?;
    // The files an older version kept in the data directory go into the copy too.
    testarena_runner::ship::import_old_files(&source, data_dir).await;
    let copied = source.copy_into(&target).await;
    source.close().await;
    target.close().await;
    let n = copied.with_context(|| format!("cannot copy {} into {}", redact(from), redact(to)))?;
    println!(
        "copied {} queues ({} tasks, {} cases, {} commit-status reports, {} bytes of logs and \
         reports), {} API tokens and {} bisects from {} into {}",
        n.queues,
        n.tasks,
        n.cases,
        n.reports,
        n.file_bytes,
        n.tokens,
        n.bisects,
        redact(from),
        redact(to)
    );
    Ok(())
}

/// Logs how callers are checked, warning where that is risky: auth off on an address others
/// can reach (only when asked for), or auth required with no token to use yet.
async fn announce_auth(s: &Settings, store: &Store) {
    use testarena_server::AuthMode;
    match s.auth.mode {
        AuthMode::Off if !config::is_loopback(s.listen) => tracing::warn!(
            listen = %s.listen,
            "--auth off on an address other hosts can reach: anybody who reaches it can \
             submit, abort and delete queues"
        ),
        AuthMode::Off => tracing::info!(
            "auth off (loopback address): no token is checked; --auth required to check them"
        ),
        AuthMode::Required => {
            tracing::info!(
                anonymous_read = s.auth.anonymous_read,
                explicit = s.auth_explicit,
                "auth required: writes need an API token"
            );
            if store.tokens().await.is_ok_and(|t| t.is_empty()) {
                tracing::warn!(
                    "auth is required and no API token exists yet: make one with \
                     `testarena token create --name NAME --scope admin`"
                );
            }
        }
    }
}

/// Prints the bound address on stdout, so scripts and tests that asked for port 0 find it.
fn announce(listener: &tokio::net::TcpListener) -> Result<()> {
    use std::io::Write;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "testarena listening on http://{addr}")?;
    out.flush()?;
    Ok(())
}

fn make_worker(s: &Settings, store: Store, new_work: Arc<Notify>, labels: Vec<String>) -> Worker {
    let hostname = worker::hostname();
    let cfg = RunnerConfig {
        data_dir: s.data_dir.clone(),
        worker_id: format!("{hostname}-{}", std::process::id()),
        hostname,
        boot_id: worker::boot_id(),
        queue_timeout: s.queue_timeout,
        clone_timeout: s.clone_timeout,
        log_cap: s.log_cap,
        sandbox: Arc::new(s.sandbox.clone()),
        local: Default::default(),
        build_cache: (s.build_cache_size > 0).then(|| {
            testarena_runner::build_cache::BuildCache::new(
                s.data_dir.join("build-cache"),
                s.build_cache_size,
            )
        }),
    };
    Worker {
        store,
        cfg: Arc::new(cfg),
        concurrency: s.concurrency,
        new_work,
        fetch_policy: testarena_runner::git::FetchPolicy {
            allowed_roots: s.allowed_roots.clone(),
            allowed_hosts: s.allowed_hosts.clone(),
            stall_timeout: s.clone_stall_timeout,
        },
        labels,
        grace: s.grace,
    }
}

/// The worker's labels: those it was given and the emulators (and their machines) on its host.
fn with_emulators(given: &[String]) -> Vec<String> {
    let found = testarena_runner::emulators::detect(testarena_runner::emulators::PROBE_TIMEOUT);
    if !found.is_empty() {
        tracing::info!(emulators = ?found, "labels from the emulators on this host");
    }
    let mut labels: Vec<String> = given.iter().cloned().chain(found).collect();
    labels.sort();
    labels.dedup();
    labels
}

/// Runs the worker on an async runtime of its own, with its own database pool, so that its
/// work (console matching, log writing) never runs on the threads that serve HTTP.
fn spawn_worker_runtime(
    s: Settings,
    new_work: Arc<Notify>,
    stop: CancellationToken,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let thread = std::thread::Builder::new()
        .name("testarena-worker".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .thread_name("testarena-worker")
                .enable_all()
                .build()
                .context("cannot start the worker's async runtime")?;
            // Found once, before the worker registers, each probe with a short timeout.
            let labels = with_emulators(&s.labels);
            rt.block_on(async {
                let store = open_worker_store(&s).await?;
                let result = make_worker(&s, store.clone(), new_work, labels)
                    .run(stop)
                    .await
                    .context("worker failed");
                store.close().await;
                result
            })
        })
        .context("cannot start the worker thread")?;
    Ok(thread)
}

/// Runs the server, the worker, or both, until SIGTERM/SIGINT.
async fn run_services(s: Settings, with_server: bool, with_worker: bool) -> Result<()> {
    let signal = shutdown_signal()?;
    if with_worker {
        s.sandbox.check()?;
        if s.sandbox.mode == testarena_runner::sandbox::SandboxMode::Off {
            tracing::warn!("--sandbox off: builds, emulators and <run> steps can read and change everything this worker can");
        }
    }
    let store = open_store(&s).await?;
    if with_server {
        // An installation upgraded from a version that kept queue files on disk.
        let (old, data_dir) = (store.clone(), s.data_dir.clone());
        tokio::spawn(async move {
            testarena_runner::ship::import_old_files(&old, &data_dir).await;
        });
    }
    let new_work = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        signal.await;
        signal_stop.cancel();
    });
    let worker_thread = match with_worker {
        true => Some(spawn_worker_runtime(
            s.clone(),
            new_work.clone(),
            stop.clone(),
        )?),
        false => None,
    };
    if with_server {
        // Each connection is a file descriptor: allow as many as the hard limit does.
        match testarena_server::conn::raise_nofile_limit() {
            Ok(n) => tracing::debug!(nofile = n, "open-file limit"),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
        let config = ServerConfig {
            data_dir: s.data_dir.clone(),
            allowed_roots: s.allowed_roots.clone(),
            allowed_hosts: s.allowed_hosts.clone(),
            gitea: s.gitea.clone(),
            limits: s.limits.clone(),
            auth: s.auth.clone(),
        };
        announce_auth(&s, &store).await;
        let state = AppState::new(store.clone(), config, new_work);
        let listener = tokio::net::TcpListener::bind(s.listen)
            .await
            .with_context(|| format!("cannot listen on {}", s.listen))?;
        announce(&listener)?;
        let server_stop = stop.clone();
        testarena_server::serve_on(
            state,
            listener,
            async move { server_stop.cancelled().await },
        )
        .await
        .context("server failed")?;
    }
    if let Some(t) = worker_thread {
        match tokio::task::spawn_blocking(move || t.join()).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) | Err(_) => anyhow::bail!("the worker thread panicked"),
        }
    }
    store.close().await;
    Ok(())
}

fn validate(files: &[PathBuf]) -> Result<bool> {
    let mut ok = true;
    for f in files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                println!("{}: cannot read: {e}", f.display());
                ok = false;
                continue;
            }
        };
        match testarena_scenario::parse(&text) {
            Ok(s) => println!("{}: ok: {}", f.display(), s.summary()),
            Err(e) => {
                ok = false;
                for d in &e.diagnostics {
                    println!("{}:{}:{}: {}", f.display(), d.line, d.column, d.message);
                }
            }
        }
    }
    Ok(ok)
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve { server, repos } => {
            let s = config::settings(&cli.common, Some(&server), None, Some(&repos))?;
            init_logging(s.log_json);
            run_services(s, true, false).await
        }
        Command::Worker { worker, repos } => {
            let s = config::settings(&cli.common, None, Some(&worker), Some(&repos))?;
            init_logging(s.log_json);
            run_services(s, false, true).await
        }
        Command::Up {
            server,
            worker,
            repos,
        } => {
            let s = config::settings(&cli.common, Some(&server), Some(&worker), Some(&repos))?;
            init_logging(s.log_json);
            run_services(s, true, true).await
        }
        Command::Validate { files } => {
            if validate(&files)? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Migrate {
            from: Some(from),
            to: Some(to),
        } => {
            let s = config::settings(&cli.common, None, None, None)?;
            init_logging(s.log_json);
            copy_database(&from, &to, &s.data_dir).await
        }
        Command::Migrate { .. } => {
            let s = config::settings(&cli.common, None, None, None)?;
            init_logging(s.log_json);
            let store = open_store(&s).await?;
            testarena_runner::ship::import_old_files(&store, &s.data_dir).await;
            store.close().await;
            println!(
                "database {} is up to date",
                testarena_core::redact::redact(&s.database_url)
            );
            Ok(())
        }
        Command::Token { action } => {
            let s = config::settings(&cli.common, None, None, None)?;
            init_logging(s.log_json);
            let store = open_store(&s).await?;
            let result = tokens::run(action, &store).await;
            store.close().await;
            result
        }
        Command::Run(args) => std::process::exit(run::run(args, &cli.common).await),
        Command::Repro(args) => std::process::exit(repro::repro(args, &cli.common).await),
        Command::Client(c) => std::process::exit(client::run(c, &cli.common).await),
    }
}

fn main() -> ExitCode {
    // Inside a task's sandbox, started by the worker (not a command for people: not in --help).
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(
            testarena_runner::sandbox::spawner::SPAWNER_ARG,
        ))
    {
        return serve_spawner();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are not errors; bad usage is "bad input" (3), so it never looks
            // like a queue verdict (`submit --wait` exits 1 failed, 2 error) to a CI job.
            return if e.use_stderr() {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("testarena: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testarena: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Serves as a sandbox's spawner on stdin, the socket the worker gave it.
fn serve_spawner() -> ExitCode {
    // SAFETY: fd 0 is the socket the worker passed as stdin; nothing else in this process uses
    // it.
    let control = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(0) };
    match testarena_runner::sandbox::spawner::serve(control, true) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testarena: sandbox spawner: {e}");
            ExitCode::FAILURE
        }
    }
}
