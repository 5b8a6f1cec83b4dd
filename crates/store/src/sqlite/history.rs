//! Sqlite: a case's history across queues (the portable SQL of `crate::history`).

use super::{all, Sqlite};
use crate::backend::Fut;

crate::history::history_impl!(Sqlite, sqlx::SqliteConnection, crate::page::Dialect::Sqlite);
