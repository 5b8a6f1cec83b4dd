//! The repro bundle of a queue with failed or errored cases: at its end, the firmware images
//! the emulator booted, `testarena.toml`, the scenario files and a manifest (repository,
//! commit, emulator command) are copied from the checkout into `repro/` of the queue's
//! directory and shipped into the database with its other files (the checkout is not), so the
//! server can hand out a bundle per case with no need of the worker's disk.

use super::Run;
use crate::profile::Profile;
use std::path::{Path, PathBuf};
use testarena_core::repo_config::ConsoleKind;
use testarena_core::repro::{self, LeftOut, Manifest};
use testarena_core::CaseStatus;

/// What is copied into a bundle, in order (the size bound keeps the first that fit).
#[derive(Debug, PartialEq)]
struct Wanted {
    images: Vec<String>,
    scenarios: Vec<String>,
}

impl Run<'_> {
    /// Writes the bundle when a case failed or errored (the checkout was made and the
    /// repository's profile read); returns the paths written, to be shipped whole.
    pub(super) async fn keep_repro(&self) -> Vec<PathBuf> {
        let Some(profile) = &self.profile else {
            return Vec::new();
        };
        if self.cfg.local.no_repro {
            return Vec::new();
        }
        let Ok(detail) = self.store.queue(self.queue.id).await else {
            return Vec::new();
        };
        let bad = |s: CaseStatus| matches!(s, CaseStatus::Failed | CaseStatus::Error);
        let scenarios: Vec<String> = detail
            .tasks
            .iter()
            .filter(|(_, cases)| cases.iter().any(|c| bad(c.status)))
            .map(|(t, _)| t.scenario.clone())
            .collect();
        if scenarios.is_empty() {
            return Vec::new();
        }
        let commit = detail.queue.commit.clone().unwrap_or_default();
        let wanted = Wanted {
            images: images(profile, &self.work),
            scenarios,
        };
        let manifest = self.manifest(profile, commit);
        let (work, dir) = (self.work.clone(), self.dir.join(repro::REPRO_DIR));
        let local = self.cfg.local.scenarios.clone();
        let written = tokio::task::spawn_blocking(move || {
            write_bundle(&work, &dir, &local, manifest, &wanted, repro::DEFAULT_CAP)
        })
        .await;
        match written {
            Ok(Ok((paths, left_out))) => {
                let mut said = format!("repro bundle kept ({} files)", paths.len());
                for l in &left_out {
                    said.push_str(&format!(
                        "; left out {} ({} bytes): {}",
                        l.path, l.bytes, l.why
                    ));
                }
                self.logs.event(&said);
                paths
            }
            Ok(Err(e)) => {
                self.logs
                    .event(&format!("warning: cannot keep a repro bundle: {e}"));
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "keeping the repro bundle failed");
                Vec::new()
            }
        }
    }

    /// The manifest, but for what the copy decides (images, scenarios, what was left out).
    fn manifest(&self, profile: &Profile, commit: String) -> Manifest {
        Manifest {
            version: repro::MANIFEST_VERSION,
            queue: self.queue.id,
            repo: testarena_core::redact::redact(&self.queue.repo),
            branch: self.queue.branch.clone(),
            commit,
            emulator_command: profile.emulator_command.clone().unwrap_or_default(),
            console: match profile.console {
                ConsoleKind::Stdio => "stdio".into(),
                ConsoleKind::Tcp => "tcp".into(),
            },
            ready: profile.ready.clone(),
            boot_timeout_ms: profile.boot_timeout.as_millis() as u64,
            firmware: profile.firmware.clone(),
            elf: profile.elf.clone(),
            testarena_toml: false,
            images: Vec::new(),
            scenarios: Vec::new(),
            left_out: Vec::new(),
            cap: repro::DEFAULT_CAP,
        }
    }
}

/// The firmware images of a profile: `firmware`, `elf`, and every word of the emulator
/// command that names a regular file of the checkout (`-kernel build/fw.elf`,
/// `-drive file=build/flash.bin,if=mtd`); absolute paths are the host's, not the firmware's.
fn images(profile: &Profile, work: &Path) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let named = profile.firmware.iter().chain(profile.elf.iter()).cloned();
    let command = profile.emulator_command.as_deref().unwrap_or("");
    let words = command
        .split_whitespace()
        .flat_map(|w| w.split(','))
        .map(|w| w.rsplit('=').next().unwrap_or(w))
        .map(|w| w.trim_matches(|c| c == '"' || c == '\''))
        .map(String::from);
    for path in named.chain(words) {
        let path = path.trim_start_matches("./").to_string();
        let is_file = std::fs::symlink_metadata(work.join(&path)).is_ok_and(|m| m.is_file());
        if repro::is_plain_path(&path) && is_file && !found.contains(&path) {
            found.push(path);
        }
    }
    found
}

/// Copies `testarena.toml`, the scenario files (the developer's texts of a local run first)
/// and the images into `dir/files/`, at most `cap` bytes in all, and writes the manifest.
/// Returns the paths written and what was left out.
fn write_bundle(
    work: &Path,
    dir: &Path,
    local: &std::collections::BTreeMap<String, String>,
    mut manifest: Manifest,
    wanted: &Wanted,
    cap: u64,
) -> std::io::Result<(Vec<PathBuf>, Vec<LeftOut>)> {
    let files = dir.join("files");
    std::fs::create_dir_all(&files)?;
    let mut written = Vec::new();
    let mut left = cap;
    let mut keep = |path: &str, data: Option<&str>, m: &mut Manifest| -> std::io::Result<bool> {
        let from = work.join(path);
        let bytes = match data {
            Some(d) => d.len() as u64,
            None => match std::fs::symlink_metadata(&from) {
                Ok(meta) if meta.is_file() => meta.len(),
                _ => return Ok(false),
            },
        };
        if bytes > left {
            m.left_out.push(LeftOut {
                path: path.to_string(),
                bytes,
                why: format!("over the bundle's bound of {cap} bytes"),
            });
            return Ok(false);
        }
        let to = files.join(path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match data {
            Some(d) => std::fs::write(&to, d)?,
            None => {
                std::fs::copy(&from, &to)?;
            }
        }
        left -= bytes;
        written.push(to);
        Ok(true)
    };
    manifest.testarena_toml = keep("testarena.toml", None, &mut manifest)?;
    for s in &wanted.scenarios {
        if repro::is_plain_path(s) && keep(s, local.get(s).map(String::as_str), &mut manifest)? {
            manifest.scenarios.push(s.clone());
        }
    }
    for i in &wanted.images {
        if keep(i, None, &mut manifest)? {
            manifest.images.push(i.clone());
        }
    }
    let left_out = manifest.left_out.clone();
    let path = dir.join("manifest.json");
    let text = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
    std::fs::write(&path, text)?;
    written.push(path);
    Ok((written, left_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(command: &str) -> Profile {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("testarena.toml"),
            format!("[emulator]\ncommand = {command:?}\nelf = \"build/fw.elf\"\n"),
        )
        .unwrap();
        crate::profile::load(d.path()).unwrap()
    }

    fn manifest() -> Manifest {
        Manifest {
            version: 1,
            queue: 1,
            repo: "r".into(),
            branch: "b".into(),
            commit: "c".into(),
            emulator_command: "e".into(),
            console: "stdio".into(),
            ready: None,
            boot_timeout_ms: 1,
            firmware: None,
            elf: None,
            testarena_toml: false,
            images: Vec::new(),
            scenarios: Vec::new(),
            left_out: Vec::new(),
            cap: 0,
        }
    }

    #[test]
    fn images_are_the_checkout_files_the_command_names() {
        let w = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(w.path().join("build")).unwrap();
        for f in ["build/fw.elf", "build/flash.bin", "build/other.bin"] {
            std::fs::write(w.path().join(f), "x").unwrap();
        }
        let p = profile(
            "qemu -kernel ./build/fw.elf -drive file=build/flash.bin,if=mtd -bios /etc/hostname -x build/missing.bin",
        );
        assert_eq!(
            images(&p, w.path()),
            vec!["build/fw.elf", "build/flash.bin"]
        );
    }

    #[test]
    fn the_bound_leaves_big_images_out_and_says_so() {
        let (w, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir_all(w.path().join("build")).unwrap();
        std::fs::create_dir_all(w.path().join("scenarios")).unwrap();
        std::fs::write(w.path().join("testarena.toml"), "[build]\n").unwrap();
        std::fs::write(w.path().join("build/small.bin"), vec![1u8; 10]).unwrap();
        std::fs::write(w.path().join("build/big.bin"), vec![1u8; 1000]).unwrap();
        let local = [("scenarios/s.xml".to_string(), "<scenario/>".to_string())].into();
        let wanted = Wanted {
            images: vec!["build/big.bin".into(), "build/small.bin".into()],
            scenarios: vec!["scenarios/s.xml".into()],
        };
        let dir = out.path().join("repro");
        let (paths, left) = write_bundle(w.path(), &dir, &local, manifest(), &wanted, 100).unwrap();
        assert_eq!(paths.len(), 4, "{paths:?}");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].path, "build/big.bin");
        let m: Manifest =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        assert!(m.testarena_toml);
        assert_eq!(m.images, vec!["build/small.bin"]);
        assert_eq!(m.scenarios, vec!["scenarios/s.xml"]);
        assert_eq!(
            std::fs::read_to_string(dir.join("files/scenarios/s.xml")).unwrap(),
            "<scenario/>"
        );
    }
}
