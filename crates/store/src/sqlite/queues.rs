//! SQLite: queues as the API sees them (the portable SQL of `crate::portable`).

use super::Sqlite;

crate::portable::queues_impl!(Sqlite, sqlx::SqliteConnection);
