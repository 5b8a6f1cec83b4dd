//! Postgres: a case's history across queues (the portable SQL of `crate::history`).

use super::{all, Postgres};

crate::portable::history_impl!(
    Postgres,
    sqlx::PgConnection,
    crate::dialect::Dialect::Postgres
);
