//! `testarena token create|list|revoke`: API tokens, made and revoked in the database directly
//! (with the same `--database` / `--data-dir` / config as `serve`), so no server needs to run
//! and no token is needed to make the first one.

use crate::client::render;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::time::Duration;
use testarena_core::auth::Scope;
use testarena_store::{now_ms, rfc3339, Store, StoreError, TokenRow};

/// The `token` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Make a token; it is printed once, on the last line
    Create {
        /// A name for it (who or what uses it: ci, alice, release-bot); unique
        #[arg(long, value_name = "NAME")]
        name: String,
        /// What it may do: read (look), submit (also submit, re-run and abort its own queues)
        /// or admin (everything, including delete and abort of any queue)
        #[arg(long, value_name = "SCOPE", value_parser = scope)]
        scope: Scope,
        /// Let it expire after this long, e.g. 30d or 12h [default: never]
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        expires: Option<Duration>,
    },
    /// List the tokens: id, name, scope, created, last used, expiry (never a secret)
    List,
    /// Revoke a token by id or name: it stops working at once, on every server
    Revoke {
        /// The token's id or name
        #[arg(value_name = "ID|NAME")]
        which: String,
    },
}

fn scope(s: &str) -> Result<Scope, String> {
    s.parse()
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("'{s}': {e} (examples: 30d, 12h, 90m)"))
}

/// Runs a `token` subcommand on `store`.
pub async fn run(cmd: TokenCommand, store: &Store) -> Result<()> {
    match cmd {
        TokenCommand::Create {
            name,
            scope,
            expires,
        } => create(store, &name, scope, expires).await,
        TokenCommand::List => list(store).await,
        TokenCommand::Revoke { which } => revoke(store, &which).await,
    }
}

async fn create(store: &Store, name: &str, scope: Scope, expires: Option<Duration>) -> Result<()> {
    let expires_at = match expires {
        Some(d) => {
            let ms = i64::try_from(d.as_millis()).context("--expires is too long")?;
            Some(now_ms().checked_add(ms).context("--expires is too long")?)
        }
        None => None,
    };
    let made = store
        .create_token(name, scope, expires_at)
        .await
        .map_err(|e| match e {
            StoreError::Invalid(m) => anyhow::anyhow!("--name: {m}"),
            other => anyhow::Error::new(other).context("cannot create the token"),
        })?;
    let row = &made.row;
    println!(
        "created token {} '{}' with scope {}, {}",
        row.id,
        row.name,
        row.scope,
        match row.expires_at {
            Some(at) => format!("expiring {}", rfc3339(at)),
            None => "never expiring".to_string(),
        }
    );
    println!(
        "It is shown only this once; keep it secret. Clients send it as \
         'Authorization: Bearer <token>'; the CLI takes --token or TESTARENA_TOKEN."
    );
    println!("{}", made.text);
    Ok(())
}

/// A time for the table, or `-`.
fn when(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_string(), rfc3339)
}

async fn list(store: &Store) -> Result<()> {
    let tokens = store.tokens().await.context("cannot list the tokens")?;
    if tokens.is_empty() {
        eprintln!("no tokens (make one with: testarena token create --name NAME --scope SCOPE)");
        return Ok(());
    }
    let now = now_ms();
    let rows: Vec<Vec<String>> = tokens.iter().map(|t| row(t, now)).collect();
    print!(
        "{}",
        render::table(
            &["ID", "NAME", "SCOPE", "CREATED", "LAST USED", "EXPIRES"],
            &rows
        )
    );
    Ok(())
}

fn row(t: &TokenRow, now: i64) -> Vec<String> {
    let expires = match t.expires_at {
        Some(at) if t.expired_at(now) => format!("{} (expired)", rfc3339(at)),
        Some(at) => rfc3339(at),
        None => "never".to_string(),
    };
    vec![
        t.id.to_string(),
        t.name.clone(),
        t.scope.to_string(),
        rfc3339(t.created_at),
        when(t.last_used_at),
        expires,
    ]
}

async fn revoke(store: &Store, which: &str) -> Result<()> {
    let gone = store.revoke_token(which).await.map_err(|e| match e {
        StoreError::TokenNotFound(_) => {
            anyhow::anyhow!("{e} (see `testarena token list`)")
        }
        other => anyhow::Error::new(other).context("cannot revoke the token"),
    })?;
    println!(
        "revoked token {} '{}' (scope {}): it no longer works on any server",
        gone.id, gone.name, gone.scope
    );
    Ok(())
}
