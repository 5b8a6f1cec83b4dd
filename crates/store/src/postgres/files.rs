//! PostgreSQL: a queue's files as chunks (the portable SQL of `crate::portable`; the fencing
//! read locks the queue row `FOR SHARE`).

use super::Postgres;

crate::portable::files_impl!(Postgres, sqlx::PgConnection, "FOR SHARE");
