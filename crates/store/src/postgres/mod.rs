//! The PostgreSQL backend: its connection setup and migrations, and the SQL of every operation
//! of the [`Backend`] seam in PostgreSQL's dialect. Claims take the next queue with
//! `FOR UPDATE SKIP LOCKED`; triggers keep the change counter and send NOTIFY on every change
//! (`testarena_changes`), on new work (`testarena_work`) and on new chunks of a queue's files
//! (`testarena_files`), and when a bisect may need a decision (`testarena_bisects`, migration
//! 0013), which [`Backend::wait_for`] listens to.

mod bisects;
mod copy;
mod details;
mod files;
mod history;
mod page;
mod queues;
mod reports;
mod tokens;
mod work;

use crate::backend::{Backend, Fut, Wakeup};
use crate::reads::{Reads, KEPT_READS};
use crate::rows::Columns;
use crate::{Result, StoreError, StoreOptions};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channels the triggers of migrations/postgres notify.
const CHANGES_CHANNEL: &str = "testarena_changes";
const WORK_CHANNEL: &str = "testarena_work";
const FILES_CHANNEL: &str = "testarena_files";
const BISECTS_CHANNEL: &str = "testarena_bisects";

/// A pool of connections to one PostgreSQL database, and the wake-ups its NOTIFYs give.
pub(crate) struct Postgres {
    pool: PgPool,
    /// Connections kept for the API's hot reads (`crate::reads`).
    reads: Arc<Reads<sqlx::Postgres>>,
    /// One listener per process, started on first use: woken on every change and on new work.
    listener: tokio::sync::OnceCell<Arc<Listening>>,
    /// Where the listener connects (it may hold a password: never printed).
    url: String,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("pool", &self.pool)
            .finish()
    }
}

/// What the listener task signals.
#[derive(Debug, Default)]
struct Listening {
    changes: Notify,
    work: Notify,
    files: Notify,
    bisects: Notify,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }
}

impl Columns for PgRow {
    fn int(&self, column: &str) -> Result<i64> {
        Ok(self.try_get(column)?)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.try_get(column)?)
    }
    fn text(&self, column: &str) -> Result<String> {
        Ok(self.try_get(column)?)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }
}

/// Maps every row with `f`.
fn all<T>(rows: &[PgRow], f: impl Fn(&PgRow) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

impl Postgres {
    /// Connects to the database at `url` (postgres://USER@HOST/DB) and migrates it.
    pub(crate) async fn open(url: &str, options: &StoreOptions) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(opts)
            .await?;
        // Two processes migrating at once: sqlx takes an advisory lock around the run. A
        // database that is up to date is left alone, so a role without the right to change
        // the schema (a server or worker role, see deploy/postgres) can open it.
        if !up_to_date(&pool).await {
            MIGRATOR.run(&pool).await?;
        }
        Ok(Postgres {
            pool,
            reads: Arc::new(Reads::new(KEPT_READS)),
            listener: tokio::sync::OnceCell::new(),
            url: url.to_string(),
        })
    }

    /// Runs an update that only applies while the worker holds the queue; `ClaimLost` otherwise.
    async fn held_update<'q>(
        &self,
        id: i64,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<()> {
        let done = query.execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::ClaimLost(id));
        }
        Ok(())
    }

    /// The process's listener, started on first use.
    async fn listening(&self) -> Arc<Listening> {
        self.listener
            .get_or_init(|| async {
                let l = Arc::new(Listening::default());
                let task = tokio::spawn(listen(self.url.clone(), Arc::downgrade(&l)));
                *l.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
                l
            })
            .await
            .clone()
    }
}

/// Whether every migration this binary knows, and no other, was applied successfully: then
/// there is nothing to run (an unknown one is left to the migrator, which refuses it).
async fn up_to_date(pool: &PgPool) -> bool {
    let applied: Vec<i64> =
        match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
        {
            Ok(v) => v,
            Err(_) => return false,
        };
    let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    known.iter().all(|v| applied.contains(v)) && applied.iter().all(|v| known.contains(v))
}

/// Listens to both channels and wakes the waiters of each; reconnects after a lost connection
/// (waking everybody then, since a NOTIFY may have been missed). Ends with its [`Listening`].
async fn listen(url: String, to: std::sync::Weak<Listening>) {
    loop {
        match PgListener::connect(&url).await {
            Ok(mut l) => {
                if let Err(e) = l
                    .listen_all([
                        CHANGES_CHANNEL,
                        WORK_CHANNEL,
                        FILES_CHANNEL,
                        BISECTS_CHANNEL,
                    ])
                    .await
                {
                    tracing::warn!(error = %e, "cannot LISTEN; polling only");
                } else {
                    loop {
                        let n = l.recv().await;
                        let Some(to) = to.upgrade() else { return };
                        match n {
                            Ok(n) if n.channel() == WORK_CHANNEL => wake(&to.work),
                            Ok(n) if n.channel() == FILES_CHANNEL => wake(&to.files),
                            Ok(n) if n.channel() == BISECTS_CHANNEL => wake(&to.bisects),
                            Ok(_) => wake(&to.changes),
                            Err(e) => {
                                tracing::warn!(error = %e, "lost the LISTEN connection");
                                wake(&to.work);
                                wake(&to.changes);
                                wake(&to.files);
                                wake(&to.bisects);
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot connect to LISTEN; polling only"),
        }
        if to.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Wakes every waiter, and the next one to come if none waits now (a NOTIFY that arrives while
/// the waiter is busy is not lost).
fn wake(n: &Notify) {
    n.notify_waiters();
    n.notify_one();
}

impl Backend for Postgres {
    fn ping(&self) -> Fut<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if let Some(l) = self.listener.get() {
                if let Some(t) = l.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    t.abort();
                }
            }
            self.reads.close().await;
            self.pool.close().await
        })
    }

    fn notifies(&self) -> bool {
        true
    }

    fn wait_for(
        &self,
        what: Wakeup,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let l = self.listening().await;
            let notify = match what {
                Wakeup::Work => &l.work,
                Wakeup::Change => &l.changes,
                Wakeup::Files => &l.files,
                Wakeup::Bisects => &l.bisects,
            };
            let _ = tokio::time::timeout(timeout, notify.notified()).await;
        })
    }
}
