//! `testarena run`: the whole pipeline on the developer's machine, no server.
//!
//! It is the worker's own engine on a throw-away SQLite store in a temporary directory: one
//! queue is created and claimed there and run in this process by the same pipeline a worker
//! runs (checkout, build, boot, scenarios, verdict, shipping into the store); the queue log is
//! followed from the store to stdout as it grows; at the end the queue's files are written
//! out as the server's archive has them (queue.log, build.log, junit.xml, a log and an HTML
//! page per case) and a verdict table is printed. The exit code is that of `submit --wait`.

mod source;

use crate::client::render::{tasks_table, verdict_text};
use crate::client::wait::Lines;
use crate::client::{EXIT_ERROR, EXIT_FAILED, EXIT_OK, EXIT_TROUBLE};
use crate::config::{self, CommonArgs, EngineArgs, WorkerArgs};
use clap::Args;
use source::Source;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use testarena_core::{NewQueue, QueueStatus};
use testarena_runner::git::{FetchPolicy, MirrorCache};
use testarena_runner::pipeline::{self, LocalRun, QueueControl, RunnerConfig, StopReason};
use testarena_runner::ship::QUEUE_LOG;
use testarena_store::Store;
use tokio_util::sync::CancellationToken;

/// The file that marks a directory as made by `testarena run` (so a later run may replace it).
const MARKER: &str = ".testarena-run";

/// How much of the queue log is read at once while following it.
const LOG_CHUNK: u64 = 256 * 1024;

/// How often the queue log is looked at for new lines (the worker ships every 250 ms).
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// `testarena run`'s options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The firmware: a local directory (its work tree as it is, uncommitted and untracked
    /// files included, ignored ones not) or a git URL (needs --branch)
    #[arg(long, value_name = "DIR|URL", default_value = ".")]
    pub repo: String,
    /// Branch to test: needed with a URL; with a local directory, tests that branch as
    /// committed instead of the work tree
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
    /// Scenario file on this machine (read from here, committed or not), else a path in the
    /// repository; repeatable [default: the repository's default set]
    #[arg(long = "scenario", value_name = "PATH.xml")]
    pub scenarios: Vec<String>,
    /// Run only the case with this id (in every scenario); repeatable
    #[arg(long = "case", value_name = "ID")]
    pub cases: Vec<String>,
    /// Directory for the reports; replaced if an earlier `testarena run` made it
    #[arg(long, value_name = "DIR", default_value = "testarena-run")]
    pub out: PathBuf,
    /// Try a failed case again up to N times (0..5) when its scenario does not say; a case
    /// that fails, then passes, is flaky [default: 0]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub retries: Option<i64>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Replay a repro bundle: the repository holds the images already, nothing is built.
    #[arg(skip)]
    pub replay: bool,
}

/// Why a run could not give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The command line names something unusable (exit 3).
    #[error("{0}")]
    BadInput(String),
    /// This machine could not run it: git, the disk, the sandbox (exit 2).
    #[error("{0}")]
    Io(String),
    /// The run's own database failed (exit 2).
    #[error("the run's database: {0}")]
    Store(#[from] testarena_store::StoreError),
}

impl RunError {
    fn exit_code(&self) -> i32 {
        match self {
            RunError::BadInput(_) => EXIT_TROUBLE,
            RunError::Io(_) | RunError::Store(_) => EXIT_ERROR,
        }
    }
}

/// Runs `testarena run`; returns the exit code (messages already printed).
pub async fn run(args: RunArgs, common: &CommonArgs) -> i32 {
    let code = match run_checked(args, common).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("testarena run: {e}");
            e.exit_code()
        }
    };
    let _ = std::io::stdout().flush();
    code
}

async fn run_checked(args: RunArgs, common: &CommonArgs) -> Result<i32, RunError> {
    let scratch = tempfile::Builder::new()
        .prefix("testarena-run-")
        .tempdir()
        .map_err(|e| RunError::Io(format!("cannot make a temporary directory: {e}")))?;
    let data_dir = scratch.path().join("data");
    let s = settings(common, &args.engine, &data_dir)?;
    init_logging(s.log_json);
    let source = source::resolve(&args.repo, args.branch.as_deref(), scratch.path())?;
    let (names, texts) = scenarios(&args.scenarios, &source)?;
    check_cases(&args.cases, &names, &texts)?;
    prepare_out(&args.out)?;
    s.sandbox.check().map_err(|e| RunError::Io(e.to_string()))?;
    if let Err(e) = testarena_runner::process::become_subreaper() {
        tracing::warn!(error = %e, "cannot become a child subreaper; daemonized build children may escape");
    }
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| RunError::Io(format!("cannot create {}: {e}", data_dir.display())))?;
    let store = Store::open(&s.database_url).await?;
    let result = run_queue(&args, &s, &source, names, texts, &store).await;
    store.close().await;
    result
}

/// The settings of `up`'s worker (flags, environment, config file), on the run's own data
/// directory and database.
fn settings(
    common: &CommonArgs,
    engine: &EngineArgs,
    data_dir: &Path,
) -> Result<config::Settings, RunError> {
    let common = CommonArgs {
        data_dir: Some(data_dir.to_path_buf()),
        database: Some(format!(
            "sqlite://{}",
            data_dir.join("testarena.db").display()
        )),
        ..common.clone()
    };
    // One queue, no claims from elsewhere: concurrency, labels and grace do not apply; no
    // build cache, as a work tree may hold uncommitted changes.
    let worker = WorkerArgs {
        concurrency: None,
        labels: Vec::new(),
        grace: None,
        build_cache_size: Some(0),
        engine: engine.clone(),
    };
    config::settings(&common, None, Some(&worker), None)
        .map_err(|e| RunError::BadInput(format!("{e:#}")))
}

/// Logs go to stderr, warnings and errors only unless `TESTARENA_LOG` says otherwise: the
/// console and the verdict are what a developer reads here.
fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESTARENA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Set once per process; a second call (none here) would only be refused.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The queue's scenario names, and the texts of those read from this machine. A path that is
/// a file here (or under the local work tree) is read and checked now, and named by its path
/// in the work tree (else by its file name); another names a file of the repository (not for
/// a work tree, which is all here).
fn scenarios(
    given: &[String],
    source: &Source,
) -> Result<(Vec<String>, BTreeMap<String, String>), RunError> {
    let mut names = Vec::new();
    let mut texts = BTreeMap::new();
    for g in given {
        let here = Path::new(g);
        let found = match &source.work_tree {
            _ if here.is_file() => Some(here.to_path_buf()),
            Some(top) if top.join(g).is_file() => Some(top.join(g)),
            _ => None,
        };
        let Some(path) = found else {
            if source.snapshot {
                return Err(RunError::BadInput(format!(
                    "--scenario {g}: no such file (here or in the work tree)"
                )));
            }
            testarena_core::validate::check_scenario_path(g)
                .map_err(|m| RunError::BadInput(format!("--scenario {g}: {m}")))?;
            names.push(g.clone());
            continue;
        };
        let name = scenario_name(&path, source.work_tree.as_deref());
        testarena_core::validate::check_scenario_path(&name)
            .map_err(|m| RunError::BadInput(format!("--scenario {g}: {m}")))?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| RunError::BadInput(format!("--scenario {g}: cannot read: {e}")))?;
        if let Err(e) = testarena_scenario::parse(&text) {
            let lines: Vec<String> = e
                .diagnostics
                .iter()
                .map(|d| format!("{g}:{}:{}: {}", d.line, d.column, d.message))
                .collect();
            return Err(RunError::BadInput(format!(
                "invalid scenario file {g}:\n{}",
                lines.join("\n")
            )));
        }
        if texts.insert(name.clone(), text).is_some() {
            return Err(RunError::BadInput(format!(
                "--scenario {g}: given twice (as {name})"
            )));
        }
        names.push(name);
    }
    Ok((names, texts))
}

/// A local scenario file's name in the queue: its path in the work tree, else its file name.
fn scenario_name(path: &Path, work_tree: Option<&Path>) -> String {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    match work_tree.and_then(|t| real.strip_prefix(t).ok()) {
        Some(rel) => rel.to_string_lossy().into_owned(),
        None => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// When every scenario was read here, each `--case` must be one of theirs (a typo would run
/// nothing and pass).
fn check_cases(
    cases: &[String],
    names: &[String],
    texts: &BTreeMap<String, String>,
) -> Result<(), RunError> {
    if cases.is_empty() || names.is_empty() || names.len() != texts.len() {
        return Ok(());
    }
    let known: Vec<String> = texts
        .values()
        .filter_map(|t| testarena_scenario::parse(t).ok())
        .flat_map(|s| s.cases.into_iter().map(|c| c.id))
        .collect();
    for c in cases {
        if !known.contains(c) {
            return Err(RunError::BadInput(format!(
                "--case {c}: no such case in the scenarios given (they have {})",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// Makes `out` an empty directory of ours: new, or one an earlier run made (replaced); any
/// other directory or file is left alone and refused.
fn prepare_out(out: &Path) -> Result<(), RunError> {
    let io = |e: std::io::Error| RunError::Io(format!("cannot prepare {}: {e}", out.display()));
    match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
        Ok(m) if m.is_dir() && out.join(MARKER).is_file() => {
            std::fs::remove_dir_all(out).map_err(io)?;
        }
        Ok(m) if m.is_dir() && std::fs::read_dir(out).map_err(io)?.next().is_none() => {}
        Ok(_) => {
            return Err(RunError::BadInput(format!(
                "--out {}: exists and was not made by `testarena run`; name another directory",
                out.display()
            )))
        }
    }
    std::fs::create_dir_all(out).map_err(io)?;
    std::fs::write(
        out.join(MARKER),
        "made by `testarena run`; the next run replaces this directory\n",
    )
    .map_err(io)
}

/// Creates, claims and runs the queue, following its log; then the reports and the verdict.
async fn run_queue(
    args: &RunArgs,
    s: &config::Settings,
    source: &Source,
    names: Vec<String>,
    texts: BTreeMap<String, String>,
    store: &Store,
) -> Result<i32, RunError> {
    let new = NewQueue {
        scenarios: (!names.is_empty()).then_some(names),
        name: Some("testarena run".into()),
        retries: args.retries,
        ..NewQueue::new(&source.repo, &source.branch)
    };
    let valid = new
        .validate(&source.allowed_roots)
        .map_err(|e| RunError::BadInput(e.to_string()))?;
    let id = store.create_queue(&valid).await?.queue.id;
    let cfg = runner_config(s, &texts, &args.cases, args.replay);
    // No heartbeat takes the queue back: the lease only has to outlast the run.
    let lease = (s.queue_timeout + Duration::from_secs(3600)).as_millis() as i64;
    let Some(queue) = store.claim(&cfg.worker_id, lease).await? else {
        return Err(RunError::Io("the run's queue could not be claimed".into()));
    };
    say(&format!("testarena run: {}\n", source.description));
    let policy = FetchPolicy {
        allowed_roots: source.allowed_roots.clone(),
        allowed_hosts: s.allowed_hosts.clone(),
        stall_timeout: s.clone_stall_timeout,
    };
    let mirrors = MirrorCache::new(s.data_dir.join("git")).with_policy(policy);
    let ctl = Arc::new(QueueControl::default());
    let stop_on_signal =
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(stop_on_signal(ctl.clone())));
    let done = CancellationToken::new();
    let follower = tokio::spawn(follow(store.clone(), id, done.clone()));
    pipeline::run_queue(store, &cfg, &mirrors, queue, &ctl).await;
    drop(stop_on_signal);
    done.cancel();
    let _ = follower.await;
    report(args, store, id, ctl.reason()).await
}

/// The worker's settings for this one queue.
fn runner_config(
    s: &config::Settings,
    texts: &BTreeMap<String, String>,
    cases: &[String],
    replay: bool,
) -> RunnerConfig {
    let hostname = testarena_runner::worker::hostname();
    RunnerConfig {
        data_dir: s.data_dir.clone(),
        worker_id: format!("{hostname}-{}-run", std::process::id()),
        hostname,
        boot_id: testarena_runner::worker::boot_id(),
        queue_timeout: s.queue_timeout,
        clone_timeout: s.clone_timeout,
        log_cap: s.log_cap,
        sandbox: Arc::new(s.sandbox.clone()),
        local: LocalRun {
            scenarios: texts.clone(),
            cases: cases.to_vec(),
            no_build: replay,
            // The run's database is thrown away: a bundle kept there would only be copied.
            no_repro: true,
        },
        // Never: the work tree may hold uncommitted changes (its commit is a snapshot).
        build_cache: None,
    }
}

/// On SIGINT or SIGTERM, stops the queue as an abort does: its processes get TERM, a grace
/// period, then KILL, and the reports are still written.
async fn stop_on_signal(ctl: Arc<QueueControl>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot handle SIGINT/SIGTERM: an interrupt ends the run without clean-up");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    eprintln!("testarena run: interrupted; stopping the run");
    ctl.stop(StopReason::Aborted);
}

/// Prints the queue log to stdout as the worker ships it into the store, until `done` and all
/// of it is printed.
async fn follow(store: Store, id: i64, done: CancellationToken) {
    let mut offset = 0u64;
    let mut lines = Lines::default();
    let mut out_ok = true;
    loop {
        // Read after the run ended: the last read then sees everything it shipped.
        let finished = done.is_cancelled();
        let chunk = store
            .read_file(id, QUEUE_LOG, offset, LOG_CHUNK)
            .await
            .unwrap_or_default();
        offset += chunk.len() as u64;
        let whole = lines.push(&chunk);
        out_ok = out_ok && print_lines(&whole).is_ok();
        if chunk.len() as u64 >= LOG_CHUNK {
            continue;
        }
        if finished {
            let rest = lines.rest();
            if out_ok {
                let _ = print_lines(&rest);
            }
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
            _ = done.cancelled() => {}
        }
    }
}

/// Writes `text` to stdout; a reader gone away (`| head`) is no reason to stop the run.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Writes queue log lines to stdout as `HH:MM:SS.mmm | text` (the date dropped: it is today).
fn print_lines(data: &[u8]) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for line in String::from_utf8_lossy(data).lines() {
        match testarena_report::parse_line(line) {
            Some((ts, kind, text)) => {
                let time = ts.get(11..23).unwrap_or(ts);
                let mark = match kind {
                    testarena_report::LineKind::Output => '|',
                    testarena_report::LineKind::Event => '#',
                };
                writeln!(out, "{time} {mark} {text}")?;
            }
            None => writeln!(out, "{line}")?,
        }
    }
    out.flush()
}

/// What was written, briefly: the queue's own files by name, the cases' pages by count.
fn reports_written(written: &[String]) -> String {
    let (cases, own): (Vec<&String>, Vec<&String>) = written.iter().partition(|n| n.contains('/'));
    let mut parts: Vec<String> = own.iter().map(|n| n.to_string()).collect();
    if !cases.is_empty() {
        parts.push(format!("{} case logs and pages", cases.len()));
    }
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

/// Writes the reports into `--out`, prints the verdict table and says what the exit code is.
async fn report(
    args: &RunArgs,
    store: &Store,
    id: i64,
    stopped: Option<StopReason>,
) -> Result<i32, RunError> {
    let detail = store.queue(id).await?;
    let written = testarena_server::export_queue(store, id, &args.out)
        .await
        .map_err(|e| RunError::Io(format!("cannot write the reports: {e}")))?;
    let q = testarena_server::api_queue(&detail);
    let mut out = String::from("\n");
    if !q.tasks.is_empty() {
        out.push_str(&tasks_table(&q));
    }
    let s = &q.summary;
    let error = q
        .error
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    let flaky = match s.flaky {
        0 => String::new(),
        n => format!(", {n} flaky"),
    };
    out.push_str(&format!(
        "\n{} ({} passed, {} failed, {} error, {} skipped{flaky}){error}\n",
        verdict_text(&q),
        s.passed,
        s.failed,
        s.error,
        s.skipped
    ));
    out.push_str(&format!(
        "reports in {}/: {}\n",
        args.out.display(),
        reports_written(&written)
    ));
    say(&out);
    let ran_none = s.total == 0 && !args.cases.is_empty() && q.status != QueueStatus::Error;
    if ran_none {
        eprintln!(
            "testarena run: no case matched --case {}",
            args.cases.join(", --case ")
        );
        return Ok(EXIT_TROUBLE);
    }
    if stopped == Some(StopReason::Aborted) {
        return Ok(EXIT_ERROR);
    }
    Ok(match q.status {
        QueueStatus::Passed => EXIT_OK,
        QueueStatus::Failed => EXIT_FAILED,
        _ => EXIT_ERROR,
    })
}
