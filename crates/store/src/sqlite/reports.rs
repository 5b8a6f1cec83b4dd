//! SQLite: commit statuses to report (the table is filled by a trigger, see migration 0005),
//! in the portable SQL of `crate::portable`.

use super::Sqlite;

crate::portable::reports_impl!(Sqlite);
