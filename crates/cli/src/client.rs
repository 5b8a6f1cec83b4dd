//! The client commands (`submit`, `queues`, `show`, `logs`, `abort`, `rm`, `junit`, `bisect`,
//! `completions`): talk to a TestArena server over its REST API.
//!
//! Exit codes: 0 success (or a passed queue), 1 a failed queue, 2 an errored or aborted queue,
//! 3 bad input, an API refusal or connection trouble.

pub(crate) mod bisect;
pub(crate) mod history;
pub(crate) mod render;
pub(crate) mod wait;

use crate::config::{self, CommonArgs};
use clap::{Args, Subcommand};
use std::io::{IsTerminal, Write};
use testarena_client::{Client, ClientError, NewQueue, QueueListQuery, QueueStatus};

/// Server used when neither a flag, the environment nor the config file names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Exit code: success, or the queue passed.
pub const EXIT_OK: i32 = 0;
/// Exit code: the queue failed (the firmware misbehaved).
pub const EXIT_FAILED: i32 = 1;
/// Exit code: the queue ended in error (infrastructure) or was aborted.
pub const EXIT_ERROR: i32 = 2;
/// Exit code: bad input, an API refusal, or the server could not be reached.
pub const EXIT_TROUBLE: i32 = 3;

/// Where the server is and how to prove who we are.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// TestArena server URL [config key: server_url; default: http://127.0.0.1:8080]
    #[arg(long, env = "TESTARENA_URL", value_name = "URL")]
    pub server: Option<String>,
    /// API token, sent as `Authorization: Bearer <token>` [config key: token]
    #[arg(
        long,
        env = "TESTARENA_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// A queue id as typed on the command line (`12` or `#12`).
#[derive(Debug, Clone, Args)]
pub struct IdArg {
    /// Queue id
    #[arg(value_name = "ID")]
    pub id: String,
}

/// `testarena submit`.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Git URL of the firmware repository (or a local path the server allows)
    #[arg(long, value_name = "URL")]
    pub repo: String,
    /// Branch to test
    #[arg(long, value_name = "BRANCH")]
    pub branch: String,
    /// Scenario file in the repository; repeatable [default: the repository's default set]
    #[arg(long = "scenario", value_name = "PATH.xml")]
    pub scenarios: Vec<String>,
    /// 0..9, higher runs first [default: 5]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i64>,
    /// Display name [default: the branch]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Exact commit to test instead of the branch head
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// Label a worker must have to run the queue (e.g. esp32); repeatable, or comma-separated
    #[arg(long = "label", value_name = "LABEL", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Build even when the worker holds a cached build of this commit (and refresh it)
    #[arg(long)]
    pub no_cache: bool,
    /// Try a failed case again up to N times (0..5) when its scenario does not say; a case
    /// that fails, then passes, is flaky [default: 0]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub retries: Option<i64>,
    /// Follow the queue: show progress, stream its console, exit with its verdict
    /// (0 passed, 1 failed, 2 error or aborted)
    #[arg(long)]
    pub wait: bool,
    /// Print the API's JSON instead of text (with --wait: the finished queue, no console)
    #[arg(long)]
    pub json: bool,
}

/// The client subcommands, flattened into the binary's command list.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Submit a queue to a TestArena server (optionally wait for its verdict)
    Submit(SubmitArgs),
    /// List queues, newest first
    Queues {
        #[command(flatten)]
        conn: ConnArgs,
        /// Only queues in this state (waiting, running, passed, failed, error, aborted)
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// How many queues to list (1..500) [default: 50]
        #[arg(long, value_name = "N")]
        limit: Option<String>,
        /// Only queues with a case that got worse than in the previous run of their branch
        #[arg(long)]
        worse: bool,
        /// Print the API's JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show one queue with its scenarios and test cases
    Show {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        id: IdArg,
        /// Print the API's JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Print a queue's console log
    Logs {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        id: IdArg,
        /// Keep printing new output until the queue finishes
        #[arg(short, long)]
        follow: bool,
    },
    /// Abort a waiting or running queue
    Abort {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        id: IdArg,
        /// Print the API's JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Delete a queue and its files
    Rm {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        id: IdArg,
    },
    /// Print a queue's JUnit XML report (e.g. `testarena junit 12 > report.xml`)
    Junit {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        id: IdArg,
    },
    /// Find the commit that broke a scenario: bisect the range from --good to --bad on the
    /// server, one step queue per tested commit (exit 0 found, 2 could not decide)
    Bisect(bisect::BisectArgs),
    /// Show a test case's last results across queues: its pass and flaky rates and the
    /// commits where its verdict changed
    History(history::HistoryArgs),
    /// Compare the cases of two queues: newly failing, newly passing, still failing, new and
    /// removed
    Compare(history::CompareArgs),
    /// Print a shell completion script (e.g. `testarena completions bash > /etc/bash_completion.d/testarena`)
    Completions {
        /// Shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// A failure of a client command: what to print, and the exit code.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) code: i32,
    pub(crate) message: String,
}

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Fail {
        let mut message = e.to_string();
        if let Some(advice) = auth_advice(&e) {
            message.push('\n');
            message.push_str(&advice);
        }
        Fail {
            code: EXIT_TROUBLE,
            message,
        }
    }
}

/// What to do about a refusal for want of a token (401) or of scope (403), indented under
/// the error; `None` for any other error.
fn auth_advice(e: &ClientError) -> Option<String> {
    use testarena_core::auth::{needed_scope, Scope};
    match (e.status(), e.code()) {
        (Some(401), _) => Some(
            "  This server needs an API token: pass it with --token TOKEN, the TESTARENA_TOKEN \
             environment variable, or `token = \"...\"` in the config file.\n  \
             An administrator creates one on the server's host with \
             `testarena token create --name NAME --scope submit` (read: look only; admin: also \
             delete and abort any queue)."
                .to_string(),
        ),
        (Some(403), Some("forbidden")) => {
            let needed = e
                .api_message()
                .and_then(needed_scope)
                .unwrap_or(Scope::Admin);
            Some(format!(
                "  This needs a token with scope {needed}. Ask an administrator for one \
                 (`testarena token create --name NAME --scope {needed}`) and pass it with --token \
                 or TESTARENA_TOKEN."
            ))
        }
        _ => None,
    }
}

fn trouble(message: impl Into<String>) -> Fail {
    Fail {
        code: EXIT_TROUBLE,
        message: message.into(),
    }
}

/// Runs a client command; returns the process exit code (messages are already printed).
pub async fn run(cmd: ClientCommand, common: &CommonArgs) -> i32 {
    let code = match dispatch(cmd, common).await {
        Ok(code) => code,
        Err(f) => {
            eprintln!("testarena: {}", f.message);
            f.code
        }
    };
    let _ = std::io::stdout().flush();
    code
}

async fn dispatch(cmd: ClientCommand, common: &CommonArgs) -> Result<i32, Fail> {
    match cmd {
        ClientCommand::Submit(a) => {
            let api = connect(&a.conn, common)?;
            submit(&api, a).await
        }
        ClientCommand::Queues {
            conn,
            status,
            limit,
            worse,
            json,
        } => {
            let api = connect(&conn, common)?;
            queues(&api, status, limit, worse, json).await
        }
        ClientCommand::Show { conn, id, json } => {
            let api = connect(&conn, common)?;
            show(&api, parse_id(&id)?, json).await
        }
        ClientCommand::Logs { conn, id, follow } => {
            let api = connect(&conn, common)?;
            wait::copy_log(&api, parse_id(&id)?, follow).await?;
            Ok(EXIT_OK)
        }
        ClientCommand::Abort { conn, id, json } => {
            let api = connect(&conn, common)?;
            abort(&api, parse_id(&id)?, json).await
        }
        ClientCommand::Rm { conn, id } => {
            let api = connect(&conn, common)?;
            let id = parse_id(&id)?;
            api.delete(id).await?;
            println!("queue {id} deleted");
            Ok(EXIT_OK)
        }
        ClientCommand::Junit { conn, id } => {
            let api = connect(&conn, common)?;
            let id = parse_id(&id)?;
            let xml = api.junit(id).await?;
            write_stdout(xml.as_bytes())?;
            Ok(EXIT_OK)
        }
        ClientCommand::Bisect(a) => {
            let api = connect(&a.conn, common)?;
            bisect::bisect(&api, a).await
        }
        ClientCommand::History(a) => history::history(a, common).await,
        ClientCommand::Compare(a) => history::compare(a, common).await,
        ClientCommand::Completions { shell } => {
            let mut cmd = <crate::Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "testarena", &mut out);
            write_stdout(&out)?;
            Ok(EXIT_OK)
        }
    }
}

/// Layers the server URL and token: flag, then environment (both via clap), then the config
/// file, then the default.
pub(crate) fn connect(conn: &ConnArgs, common: &CommonArgs) -> Result<Client, Fail> {
    let needs_file = conn.server.is_none() || conn.token.is_none();
    let file = if !needs_file {
        config::FileConfig::default()
    } else {
        match config::read_file(common.config.as_deref()) {
            Ok(f) => f,
            Err(e) if common.config.is_some() => return Err(trouble(format!("{e:#}"))),
            Err(e) => {
                // The default server config may be unreadable for a normal user: go on.
                eprintln!("testarena: warning: ignoring the config file: {e:#}");
                config::FileConfig::default()
            }
        }
    };
    let server = conn
        .server
        .clone()
        .or(file.server_url)
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let mut builder = Client::builder(&server)
        .user_agent(concat!("testarena-cli/", env!("CARGO_PKG_VERSION")))
        .on_retry(|n| eprintln!("testarena: {}", retry_message(n)));
    if let Some(token) = conn.token.clone().or(file.token) {
        builder = builder.token(token);
    }
    Ok(builder.build()?)
}

/// What the CLI prints before it tries a call again: why, and how long it waits.
fn retry_message(n: &testarena_client::RetryNotice) -> String {
    format!(
        "{} failed ({}); waiting {:.1}s before trying again ({} of {})",
        n.call,
        n.reason,
        n.wait.as_secs_f64(),
        n.retry,
        n.of
    )
}

pub(crate) fn parse_id(arg: &IdArg) -> Result<i64, Fail> {
    let raw = arg.id.trim();
    let digits = raw.strip_prefix('#').unwrap_or(raw);
    testarena_core::parse_id(digits).ok_or_else(|| {
        trouble(format!(
            "'{raw}' is not a queue id (ids are positive numbers)"
        ))
    })
}

fn write_stdout(data: &[u8]) -> Result<(), Fail> {
    let mut out = std::io::stdout().lock();
    match out.write_all(data).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // The reader went away (`| head`): not our problem.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(trouble(format!("cannot write to stdout: {e}"))),
    }
}

/// Prints an API answer as the server sent it (one line of JSON, fields in the API's order).
fn print_json(text: &str) -> Result<(), Fail> {
    write_stdout(format!("{}\n", text.trim_end()).as_bytes())
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// The exit code for a finished queue's verdict.
fn verdict_code(status: QueueStatus) -> i32 {
    match status {
        QueueStatus::Passed => EXIT_OK,
        QueueStatus::Failed => EXIT_FAILED,
        _ => EXIT_ERROR,
    }
}

async fn submit(api: &Client, a: SubmitArgs) -> Result<i32, Fail> {
    let new = NewQueue {
        repo: a.repo,
        branch: a.branch,
        scenarios: (!a.scenarios.is_empty()).then_some(a.scenarios),
        name: a.name,
        priority: a.priority,
        commit: a.commit,
        labels: (!a.labels.is_empty()).then_some(a.labels),
        no_cache: a.no_cache,
        retries: a.retries,
    };
    let created = api.create_queue_answer(&new).await?;
    let id = created.value.id;
    if a.json && !a.wait {
        print_json(&created.text)?;
        return Ok(EXIT_OK);
    }
    if !a.json {
        println!("queue {id} submitted");
        println!("{}", api.dashboard_url(id));
    } else {
        eprintln!("queue {id} submitted: {}", api.dashboard_url(id));
    }
    if !a.wait {
        return Ok(EXIT_OK);
    }
    let _ = std::io::stdout().flush();
    let tty = std::io::stderr().is_terminal();
    let finished = match wait::wait(api, id, !a.json, tty).await {
        Ok(q) => q,
        Err(e) if e.is_not_found() => {
            eprintln!("testarena: queue {id} was deleted while waiting for it");
            return Ok(EXIT_ERROR);
        }
        Err(e) => return Err(e.into()),
    };
    if a.json {
        print_json(&api.queue_answer(id).await?.text)?;
    }
    eprintln!("queue {id} {}", render::describe(&finished));
    for line in render::problems(&finished) {
        eprintln!("  {line}");
    }
    eprintln!("  {}", api.dashboard_url(id));
    Ok(verdict_code(finished.status))
}

async fn queues(
    api: &Client,
    status: Option<String>,
    limit: Option<String>,
    worse: bool,
    json: bool,
) -> Result<i32, Fail> {
    // The values go as typed: the server checks them and explains a refusal.
    let query = QueueListQuery {
        status,
        limit,
        worse: worse.then(|| "true".to_string()),
        ..Default::default()
    };
    let answer = api.queues_answer(&query).await?;
    if json {
        print_json(&answer.text)?;
        return Ok(EXIT_OK);
    }
    let list = answer.value;
    if list.queues.is_empty() {
        eprintln!("no queues");
        return Ok(EXIT_OK);
    }
    write_stdout(render::queue_table(&list.queues, now()).as_bytes())?;
    if list.next.is_some() {
        eprintln!(
            "(the newest {} shown; more exist: raise --limit, up to 500)",
            list.queues.len()
        );
    }
    Ok(EXIT_OK)
}

async fn show(api: &Client, id: i64, json: bool) -> Result<i32, Fail> {
    let answer = api.queue_answer(id).await?;
    if json {
        print_json(&answer.text)?;
        return Ok(EXIT_OK);
    }
    let q = answer.value;
    write_stdout(render::queue_detail(&q, &api.dashboard_url(id), now()).as_bytes())?;
    Ok(EXIT_OK)
}

async fn abort(api: &Client, id: i64, json: bool) -> Result<i32, Fail> {
    let answer = api.abort_answer(id).await?;
    if json {
        print_json(&answer.text)?;
        return Ok(EXIT_OK);
    }
    let q = answer.value;
    if q.status == QueueStatus::Aborted {
        println!("queue {id} aborted");
    } else {
        println!("queue {id}: abort requested; the worker is stopping it");
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_map_to_exit_codes() {
        assert_eq!(verdict_code(QueueStatus::Passed), 0);
        assert_eq!(verdict_code(QueueStatus::Failed), 1);
        assert_eq!(verdict_code(QueueStatus::Error), 2);
        assert_eq!(verdict_code(QueueStatus::Aborted), 2);
    }

    #[test]
    fn a_retry_says_what_it_waits_for() {
        let n = testarena_client::RetryNotice {
            call: "POST /api/v1/queues".into(),
            reason: "too many requests; try again in 2 s (rate_limited, HTTP 429)".into(),
            wait: std::time::Duration::from_secs(2),
            retry: 1,
            of: 5,
        };
        assert_eq!(
            retry_message(&n),
            "POST /api/v1/queues failed (too many requests; try again in 2 s (rate_limited, HTTP 429)); waiting 2.0s before trying again (1 of 5)"
        );
    }

    #[test]
    fn ids_accept_a_hash() {
        let id = |s: &str| parse_id(&IdArg { id: s.into() }).ok();
        assert_eq!(id("12"), Some(12));
        assert_eq!(id("#12"), Some(12));
        assert_eq!(id("x"), None);
        assert_eq!(id("0"), None);
    }
}
