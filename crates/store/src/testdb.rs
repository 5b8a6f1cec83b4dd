//! Test databases: each test body runs against a fresh SQLite file and a fresh PostgreSQL
//! database (created with a random name through the `postgres` maintenance database and
//! dropped after the test, also when it fails). PostgreSQL must be reachable: its variants fail
//! with a clear message when it is not (`make test` starts it), they are never skipped.

use crate::{Store, StoreOptions};
use sqlx::Connection;
use std::sync::atomic::{AtomicU64, Ordering};

/// The maintenance database the test databases are made through; `TESTARENA_TEST_POSTGRES`
/// overrides it.
pub(crate) fn maintenance_url() -> String {
    std::env::var("TESTARENA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Which backend a test database is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sqlite,
    Postgres,
}

/// A fresh database for one test, and its store.
pub(crate) struct TestDb {
    pub store: Store,
    pub url: String,
    pub kind: Kind,
    /// The SQLite file's directory, removed on drop.
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database's name, dropped by [`TestDb::finish`].
    pg_name: Option<String>,
}

/// A name no other test (in this or another process) uses.
fn random_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "testarena_test_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The URL of database `name` on the maintenance database's server.
fn with_db(maintenance: &str, name: &str) -> String {
    let (base, query) = match maintenance.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (maintenance, String::new()),
    };
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    format!("{base}/{name}{query}")
}

async fn maintenance() -> sqlx::PgConnection {
    let url = maintenance_url();
    match sqlx::PgConnection::connect(&url).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL is unreachable at {url}: {e}. The PostgreSQL variants of the store's \
             tests need it: start it (`make test` does: pg_ctlcluster --skip-systemctl-redirect \
             <version> main start) or point TESTARENA_TEST_POSTGRES at a server"
        ),
    }
}

impl TestDb {
    /// A fresh database of `kind` with the default options.
    pub(crate) async fn new(kind: Kind) -> TestDb {
        TestDb::with(kind, &StoreOptions::default()).await
    }

    /// A fresh database of `kind`, opened with `options`.
    pub(crate) async fn with(kind: Kind, options: &StoreOptions) -> TestDb {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/t.db", dir.path().display());
                let store = Store::open_with(&url, options).await.unwrap();
                TestDb {
                    store,
                    url,
                    kind,
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            Kind::Postgres => {
                let name = random_name();
                let mut admin = maintenance().await;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let _ = admin.close().await;
                let url = with_db(&maintenance_url(), &name);
                let store = Store::open_with(&url, options).await.unwrap();
                TestDb {
                    store,
                    url,
                    kind,
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// Closes the store and drops the PostgreSQL database.
    pub(crate) async fn finish(self) {
        self.store.close().await;
        if let Some(name) = &self.pg_name {
            let mut admin = maintenance().await;
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
    }

    /// Runs one statement on a connection of its own (as another process would).
    pub(crate) async fn exec(&self, sql: &str) {
        match self.kind {
            Kind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
        }
    }

    /// The text columns of the first row of `sql` (NULL as `None`), on a connection of its own.
    pub(crate) async fn row(&self, sql: &str) -> Option<Vec<Option<String>>> {
        use sqlx::Row;
        match self.kind {
            Kind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                let r = sqlx::query(sql).fetch_optional(&mut c).await.unwrap()?;
                Some((0..r.len()).map(|i| r.get(i)).collect())
            }
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                let r = sqlx::query(sql).fetch_optional(&mut c).await.unwrap()?;
                Some((0..r.len()).map(|i| r.get(i)).collect())
            }
        }
    }
}

/// A fresh database of `kind` with no schema yet (its URL), to bring up by hand (the upgrade
/// tests apply older migrations first). The returned guard removes it.
pub(crate) async fn blank(kind: Kind) -> (String, Blank) {
    match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}/t.db?mode=rwc", dir.path().display());
            (url, Blank::Sqlite(dir))
        }
        Kind::Postgres => {
            let name = random_name();
            let mut admin = maintenance().await;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .unwrap();
            let _ = admin.close().await;
            (with_db(&maintenance_url(), &name), Blank::Postgres(name))
        }
    }
}

/// What [`blank`] made: [`Blank::remove`] it at the end.
pub(crate) enum Blank {
    /// The directory of the file, removed when dropped.
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(String),
}

impl Blank {
    /// Drops the PostgreSQL database (the SQLite directory goes with the value).
    pub(crate) async fn remove(self) {
        if let Blank::Postgres(name) = self {
            let mut admin = maintenance().await;
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
    }
}

/// Runs `body` on a fresh database of `kind`, then drops the database, also when `body` fails.
pub(crate) async fn run<F, Fut>(kind: Kind, body: F)
where
    F: FnOnce(TestDbRef) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let db = std::sync::Arc::new(TestDb::new(kind).await);
    let result = tokio::spawn(body(TestDbRef(db.clone()))).await;
    // The body's clones are gone once it ended (or panicked).
    match std::sync::Arc::try_unwrap(db) {
        Ok(db) => db.finish().await,
        Err(db) => db.store.close().await,
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A test's handle on its database.
#[derive(Clone)]
pub(crate) struct TestDbRef(pub std::sync::Arc<TestDb>);

impl std::ops::Deref for TestDbRef {
    type Target = TestDb;
    fn deref(&self) -> &TestDb {
        &self.0
    }
}

/// Makes each listed `async fn NAME(db: TestDbRef)` a module `NAME` with two tests, `sqlite`
/// and `postgres`, each on a fresh database of its kind.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::testdb::{run, Kind};
            #[tokio::test]
            async fn sqlite() {
                run(Kind::Sqlite, super::$name).await
            }
            #[tokio::test]
            async fn postgres() {
                run(Kind::Postgres, super::$name).await
            }
        }
    )*};
}
pub(crate) use on_both;
