//! Which SQL dialect a statement is written for, where the two backends' SQL differs.

/// The SQL dialect of a statement written for one backend (`crate::page`, `crate::history`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}
