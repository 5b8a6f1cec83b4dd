//! The SQLite backend: its connection setup and migrations, and the SQL of every operation of
//! the [`Backend`] seam in SQLite's dialect.

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

use crate::backend::{Backend, Fut};
use crate::reads::{Reads, KEPT_READS};
use crate::rows::Columns;
use crate::{Result, StoreError, StoreOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A pool of connections to one SQLite database file.
#[derive(Clone, Debug)]
pub(crate) struct Sqlite {
    pool: SqlitePool,
    /// Connections kept for the API's hot reads (`crate::reads`).
    reads: Arc<Reads<sqlx::Sqlite>>,
}

impl Columns for SqliteRow {
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
fn all<T>(rows: &[SqliteRow], f: impl Fn(&SqliteRow) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

impl Sqlite {
    /// Opens the database; `pragmas` are set on every connection (tests use them to make a
    /// small database "full").
    pub(crate) async fn open(
        url: &str,
        options: &StoreOptions,
        pragmas: &[(&'static str, String)],
    ) -> Result<Self> {
        let mut opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        for (key, value) in pragmas {
            opts = opts.pragma(*key, value.clone());
        }
        if let Some(parent) = opts.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // A local file: checking each connection before use only adds a round trip.
            .test_before_acquire(false)
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Sqlite {
            pool,
            reads: Arc::new(Reads::new(KEPT_READS)),
        })
    }

    /// Runs an update that only applies while the worker holds the queue; `ClaimLost` otherwise.
    async fn held_update<'q>(
        &self,
        id: i64,
        query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> Result<()> {
        let done = query.execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::ClaimLost(id));
        }
        Ok(())
    }
}

impl Backend for Sqlite {
    fn ping(&self) -> Fut<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.reads.close().await;
            self.pool.close().await
        })
    }
}
