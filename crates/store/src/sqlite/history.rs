//! Sqlite: a case's history across queues (the portable SQL of `crate::history`).

use super::{all, Sqlite};

crate::portable::history_impl!(
    Sqlite,
    sqlx::SqliteConnection,
    crate::dialect::Dialect::Sqlite
);
