//! Everything Gitea: the push webhook that makes queues ([`webhook`]), and the reporter that
//! sets their commit statuses as they start and end ([`reporter`]), following queue state
//! changes in the database (so it works whoever runs the queue: a worker in this process,
//! another process, several workers).
//!
//! The `[gitea]` settings ([`GiteaConfig`], [`GiteaRule`]) are defined here; the origin a queue
//! carries ([`testarena_core::origin::Origin`]) is in core, since the store keeps it.

mod config;
pub(crate) mod reporter;
pub(crate) mod webhook;

pub use config::{glob_match, GiteaConfig, GiteaRule};
pub use reporter::Reporter;
