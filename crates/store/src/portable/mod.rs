//! SQL that SQLite and PostgreSQL both speak, written once and expanded into each backend
//! module: what differs between the dialects stays in `sqlite/` and `postgres/`.

mod bisects;
mod files;
mod history;
mod pages;
mod queues;
mod reports;
mod work;

pub(crate) use bisects::bisects_impl;
pub(crate) use files::files_impl;
pub(crate) use history::history_impl;
pub(crate) use pages::pages_impl;
pub(crate) use queues::queues_impl;
pub(crate) use reports::reports_impl;
pub(crate) use work::work_impl;
