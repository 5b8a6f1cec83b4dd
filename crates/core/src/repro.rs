//! Repro bundles: what a worker keeps of a queue with failed or errored cases so that one of
//! them can be replayed elsewhere without a build (`GET …/cases/{case}/repro`,
//! `testarena repro`). The worker stores the files under [`REPRO_DIR`] among the queue's
//! files; the server adds the case's transcript when it hands a bundle out.

use serde::{Deserialize, Serialize};

/// The folder of a queue's files that holds its bundle.
pub const REPRO_DIR: &str = "repro";
/// The bundle's manifest, among the queue's files.
pub const MANIFEST: &str = "repro/manifest.json";
/// The folder of the bundle that holds the repository's files, at their paths in the checkout.
pub const FILES_DIR: &str = "repro/files";
/// The case's transcript in a bundle handed out (not stored: made from the queue log).
pub const TRANSCRIPT: &str = "transcript.log";
/// The version of the manifest's layout.
pub const MANIFEST_VERSION: u32 = 1;
/// Default bound of a queue's bundle (every file of it together).
pub const DEFAULT_CAP: u64 = 64 * 1024 * 1024;

/// `repro/manifest.json`: where the firmware came from and how it was booted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// The queue the bundle is of.
    pub queue: i64,
    /// The repository (credentials redacted).
    pub repo: String,
    pub branch: String,
    /// The commit that was built and booted.
    pub commit: String,
    /// The emulator command exactly as `testarena.toml` (or the ESP-IDF profile) gives it,
    /// run with `sh -c` in the checkout (`{console_port}` is a free port at boot).
    pub emulator_command: String,
    /// `stdio` or `tcp`.
    pub console: String,
    pub ready: Option<String>,
    pub boot_timeout_ms: u64,
    pub firmware: Option<String>,
    pub elf: Option<String>,
    /// Whether the checkout had a `testarena.toml` (under `files/`); without one the replay
    /// makes one from this manifest.
    pub testarena_toml: bool,
    /// The firmware images kept, by path in the checkout (under `files/`).
    pub images: Vec<String>,
    /// The scenario files kept, by path (under `files/`).
    pub scenarios: Vec<String>,
    /// What was not kept, and why (over the size bound, unreadable).
    pub left_out: Vec<LeftOut>,
    /// The bound the bundle was kept under, in bytes.
    pub cap: u64,
}

/// A file the bundle does not hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeftOut {
    pub path: String,
    pub bytes: u64,
    pub why: String,
}

/// The path of a repository file kept in the bundle (`repro/files/<path>`).
pub fn kept_name(path: &str) -> String {
    format!("{FILES_DIR}/{path}")
}

/// A path the bundle may hold (relative, plain components only): a name from the manifest is
/// never trusted to stay inside the directory it is unpacked into.
pub fn is_plain_path(path: &str) -> bool {
    use std::path::Component;
    !path.is_empty()
        && std::path::Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_kept() {
        assert!(is_plain_path("build/fw.elf"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./"] {
            assert!(!is_plain_path(bad), "{bad}");
        }
        assert_eq!(kept_name("build/fw.elf"), "repro/files/build/fw.elf");
    }
}
