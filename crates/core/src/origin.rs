//! Where a queue came from (a Gitea push), kept with the queue so that its verdict can be
//! reported back there.

use serde::{Deserialize, Serialize};

/// Where a queue came from, when that matters for reporting back.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Origin {
    /// Gitea repository full name, `owner/name`.
    pub gitea_repo: String,
    /// Commit status context, `testarena/<set>`.
    pub context: String,
}
