//! PostgreSQL: queues as the API sees them (the portable SQL of `crate::portable`).

use super::Postgres;

crate::portable::queues_impl!(Postgres, sqlx::PgConnection);
