//! `testarena`: the server, the worker, both at once, and tools around them.

mod config;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use config::{CommonArgs, ServerArgs, Settings};
use std::process::ExitCode;
use std::sync::Arc;
use testarena_server::{AppState, ServerConfig};
use testarena_store::Store;
use tokio::sync::Notify;

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
    },
    /// Create or upgrade the database schema, then exit
    Migrate,
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESTARENA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received");
}

async fn open_store(s: &Settings) -> Result<Store> {
    std::fs::create_dir_all(&s.data_dir).with_context(|| format!("cannot create data directory {}", s.data_dir.display()))?;
    Store::open(&s.database_url).await.with_context(|| format!("cannot open database {}", s.database_url))
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

async fn serve(s: Settings) -> Result<()> {
    let store = open_store(&s).await?;
    let state = AppState {
        store: store.clone(),
        config: Arc::new(ServerConfig { data_dir: s.data_dir.clone(), allowed_roots: s.allowed_roots.clone() }),
        new_work: Arc::new(Notify::new()),
    };
    let listener = tokio::net::TcpListener::bind(s.listen).await.with_context(|| format!("cannot listen on {}", s.listen))?;
    announce(&listener)?;
    testarena_server::serve_on(state, listener, shutdown_signal()).await.context("server failed")?;
    store.close().await;
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve { server } => {
            let s = config::settings(&cli.common, Some(&server), None)?;
            init_logging(s.log_json);
            serve(s).await
        }
        Command::Migrate => {
            let s = config::settings(&cli.common, None, None)?;
            init_logging(s.log_json);
            let store = open_store(&s).await?;
            store.close().await;
            println!("database {} is up to date", s.database_url);
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
