//! How to build and boot a checked-out repository: its `testarena.toml`, or the ESP-IDF profile
//! for an ESP-IDF project without one (a `testarena.toml` in such a project overrides pieces).

use std::path::Path;
use std::time::Duration;
use testarena_core::repo_config::{ConsoleKind, RepoConfig};

/// Default build timeout when the repository sets none.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default boot timeout when the repository sets none.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// ESP-IDF: build, then merge the flash image QEMU boots from.
pub const ESP_IDF_BUILD: &str = "idf.py build && cd build && esptool.py --chip esp32 merge_bin --fill-flash-size 4MB -o merged-flash.bin @flash_args";
/// ESP-IDF: Espressif's QEMU with the esp32 machine; the UART on a TCP port QEMU waits on, so
/// no boot output is lost.
pub const ESP_IDF_EMULATOR: &str = "qemu-system-xtensa -nographic -monitor none -machine esp32 -drive file=build/merged-flash.bin,if=mtd,format=raw -serial tcp:127.0.0.1:{console_port},server=on,wait=on";
/// ESP-IDF: the image `TESTARENA_FIRMWARE` names.
pub const ESP_IDF_FIRMWARE: &str = "build/merged-flash.bin";

/// Everything the pipeline needs to know about a repository.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Which profile this is, for the log: "testarena.toml" or "esp-idf".
    pub kind: &'static str,
    pub build_command: Option<String>,
    pub build_timeout: Duration,
    pub emulator_command: Option<String>,
    pub console: ConsoleKind,
    pub ready: Option<String>,
    pub boot_timeout: Duration,
    pub firmware: Option<String>,
    /// The booted ELF, for decoding crash addresses (relative to the checkout).
    pub elf: Option<String>,
    pub default_scenarios: Vec<String>,
    /// The build may use the host's network.
    pub build_network: bool,
    /// The emulator and `<run>` steps may use the host's network.
    pub emulator_network: bool,
    /// `[env]` of `testarena.toml`.
    pub env: Vec<(String, String)>,
    /// What the build cache keeps of a build (paths in the checkout); empty: the whole
    /// checkout but `.git`.
    pub build_outputs: Vec<String>,
}

/// Why no profile could be made.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{0}")]
    Config(#[from] testarena_core::repo_config::RepoConfigError),
    #[error("cannot read testarena.toml: {0}")]
    Io(#[from] std::io::Error),
    #[error("no testarena.toml at the repository root, and it is not an ESP-IDF project (no CMakeLists.txt including project.cmake); add a testarena.toml (see docs/testarena-toml.md)")]
    Unknown,
}

/// True if `dir` is an ESP-IDF project: a top-level CMakeLists.txt that includes IDF's project.cmake.
pub fn is_esp_idf(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("CMakeLists.txt"))
        .map(|t| t.contains("tools/cmake/project.cmake"))
        .unwrap_or(false)
}

/// The ELF an ESP-IDF project builds: `build/<project>.elf`, `<project>` from its top-level
/// `project(NAME)` call; `None` if that name cannot be read.
pub fn esp_idf_elf(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("CMakeLists.txt")).ok()?;
    let re = regex::Regex::new(r"(?im)^\s*project\s*\(\s*([A-Za-z0-9_.+-]+)").ok()?;
    let name = re.captures(&text)?.get(1)?.as_str();
    Some(format!("build/{name}.elf"))
}

/// Reads the profile of the checkout at `dir`.
pub fn load(dir: &Path) -> Result<Profile, ProfileError> {
    let toml_path = dir.join("testarena.toml");
    let cfg = match std::fs::read_to_string(&toml_path) {
        Ok(text) => Some(RepoConfig::parse(&text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let esp = is_esp_idf(dir);
    let cfg = match (cfg, esp) {
        (None, false) => return Err(ProfileError::Unknown),
        (cfg, _) => cfg.unwrap_or_default(),
    };
    let mut p = Profile {
        kind: if esp { "esp-idf" } else { "testarena.toml" },
        build_command: cfg.build.command,
        build_timeout: cfg.build.timeout.unwrap_or(DEFAULT_BUILD_TIMEOUT),
        emulator_command: cfg.emulator.command.clone(),
        console: cfg.emulator.console,
        ready: cfg.emulator.ready,
        boot_timeout: cfg.emulator.boot_timeout.unwrap_or(DEFAULT_BOOT_TIMEOUT),
        firmware: cfg.emulator.firmware,
        elf: cfg.emulator.elf,
        default_scenarios: cfg.scenarios.default,
        build_network: cfg.build.network.unwrap_or(true),
        emulator_network: cfg.emulator.network,
        env: cfg.env.into_iter().collect(),
        build_outputs: cfg.build.outputs.unwrap_or_default(),
    };
    if esp {
        p.build_command
            .get_or_insert_with(|| ESP_IDF_BUILD.to_string());
        if cfg.emulator.command.is_none() {
            p.emulator_command = Some(ESP_IDF_EMULATOR.to_string());
            p.console = ConsoleKind::Tcp;
        }
        p.firmware
            .get_or_insert_with(|| ESP_IDF_FIRMWARE.to_string());
        if p.elf.is_none() {
            p.elf = esp_idf_elf(dir);
        }
        if p.build_outputs.is_empty() {
            p.build_outputs = vec!["build".to_string()];
        }
    }
    if p.default_scenarios.is_empty() {
        p.default_scenarios = vec!["scenarios/*.xml".to_string()];
    }
    Ok(p)
}

/// Expands the default scenario globs inside `dir` into sorted, de-duplicated relative paths.
pub fn expand_scenarios(dir: &Path, patterns: &[String]) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for pat in patterns {
        testarena_core::validate::check_scenario_path(pat)
            .map_err(|e| format!("scenarios.default '{pat}': {e}"))?;
        let full = dir.join(pat);
        let full = full.to_string_lossy();
        let paths = glob::glob(&full).map_err(|e| format!("scenarios.default '{pat}': {e}"))?;
        for p in paths.flatten() {
            if let Ok(rel) = p.strip_prefix(dir) {
                found.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_idf_without_toml_gets_the_profile() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("CMakeLists.txt"),
            "include($ENV{IDF_PATH}/tools/cmake/project.cmake)\nproject(x)\n",
        )
        .unwrap();
        let p = load(d.path()).unwrap();
        assert_eq!(p.kind, "esp-idf");
        assert!(p.build_command.unwrap().starts_with("idf.py build"));
        assert!(p.emulator_command.unwrap().contains("-machine esp32"));
        assert_eq!(p.console, ConsoleKind::Tcp);
        assert_eq!(p.default_scenarios, vec!["scenarios/*.xml"]);
        assert_eq!(p.elf.as_deref(), Some("build/x.elf"));
        assert_eq!(p.build_outputs, vec!["build"], "what the build cache keeps");
    }

    #[test]
    fn elf_comes_from_the_toml_first() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("CMakeLists.txt"),
            "cmake_minimum_required(VERSION 3.16)\ninclude($ENV{IDF_PATH}/tools/cmake/project.cmake)\n  PROJECT( hello_world )\n",
        )
        .unwrap();
        assert_eq!(
            esp_idf_elf(d.path()).as_deref(),
            Some("build/hello_world.elf")
        );
        std::fs::write(
            d.path().join("testarena.toml"),
            "[emulator]\nelf = \"out/app.elf\"\n",
        )
        .unwrap();
        assert_eq!(load(d.path()).unwrap().elf.as_deref(), Some("out/app.elf"));
    }

    #[test]
    fn toml_overrides_and_unknown_projects_are_refused() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(load(d.path()), Err(ProfileError::Unknown)));
        std::fs::write(
            d.path().join("testarena.toml"),
            "[build]\ncommand = \"make\"\n[emulator]\ncommand = \"qemu\"\n",
        )
        .unwrap();
        let p = load(d.path()).unwrap();
        assert_eq!(p.build_command.as_deref(), Some("make"));
        assert_eq!(p.console, ConsoleKind::Stdio);
        std::fs::write(d.path().join("testarena.toml"), "[build]\nbogus = 1\n").unwrap();
        assert!(load(d.path()).unwrap_err().to_string().contains("bogus"));
    }

    #[test]
    fn globs_expand_sorted() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("scenarios")).unwrap();
        for f in ["b.xml", "a.xml", "c.txt"] {
            std::fs::write(d.path().join("scenarios").join(f), "").unwrap();
        }
        let got = expand_scenarios(d.path(), &["scenarios/*.xml".into()]).unwrap();
        assert_eq!(got, vec!["scenarios/a.xml", "scenarios/b.xml"]);
        assert!(expand_scenarios(d.path(), &["../*.xml".into()]).is_err());
    }
}
