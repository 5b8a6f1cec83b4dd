//! Postgres: a case's history across queues (the portable SQL of `crate::history`).

use super::{all, Postgres};
use crate::backend::Fut;

crate::history::history_impl!(Postgres, sqlx::PgConnection, crate::page::Dialect::Postgres);
