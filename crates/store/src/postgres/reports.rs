//! PostgreSQL: commit statuses to report (the table is filled by a trigger, see
//! migrations/postgres/0001), in the portable SQL of `crate::portable`.

use super::Postgres;

crate::portable::reports_impl!(Postgres);
