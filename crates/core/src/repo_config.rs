//! `testarena.toml`, the file at a repository's root that says how to build and boot it.

use serde::Deserialize;
use std::time::Duration;

/// The whole `testarena.toml`. Unknown keys are rejected with their name.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    #[serde(default)]
    pub build: BuildConfig,
    #[serde(default)]
    pub emulator: EmulatorConfig,
    #[serde(default)]
    pub scenarios: ScenariosConfig,
    /// `[env]`: variables set for the build, the emulator and `<run>` steps.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

/// `[build]`: how to build the firmware.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// Run with `sh -c` in the checkout. Default for ESP-IDF projects: `idf.py build`.
    pub command: Option<String>,
    /// How long the build may take.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Whether the build may use the network (fetch dependencies). Default: yes.
    pub network: Option<bool>,
    /// What the build produces that the emulator and steps need (paths relative to the
    /// checkout, files or directories): what the worker's build cache keeps and restores.
    /// Default: `["build"]` for ESP-IDF projects, else the whole checkout but `.git`.
    pub outputs: Option<Vec<String>>,
}

/// How the worker talks to the emulator's console.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleKind {
    /// The emulator's stdin/stdout.
    #[default]
    Stdio,
    /// A TCP serial port; `{console_port}` in the command is replaced by a free port.
    Tcp,
}

/// `[emulator]`: how to boot the firmware.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmulatorConfig {
    /// Run with `sh -c` in the checkout.
    pub command: Option<String>,
    #[serde(default)]
    pub console: ConsoleKind,
    /// Regex awaited on the console before the first step.
    pub ready: Option<String>,
    /// How long to wait for `ready` (or for the TCP console to accept).
    #[serde(default, with = "humantime_serde")]
    pub boot_timeout: Option<Duration>,
    /// Path of the built firmware image, given to host commands as `TESTARENA_FIRMWARE`.
    pub firmware: Option<String>,
    /// Path of the ELF that was booted (with its DWARF), relative to the repository root:
    /// code addresses a crash prints are resolved against it. Default for ESP-IDF projects:
    /// `build/<project>.elf`.
    pub elf: Option<String>,
    /// Whether the emulator and `<run>` steps may use the host's network. Default: no (they
    /// share a loopback-only namespace with the worker's console connection).
    #[serde(default)]
    pub network: bool,
}

/// `[scenarios]`: which scenario files run when a queue names none.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScenariosConfig {
    /// Glob patterns relative to the repository root.
    #[serde(default)]
    pub default: Vec<String>,
}

/// Why a `testarena.toml` was refused.
#[derive(Debug, thiserror::Error)]
#[error("testarena.toml: {0}")]
pub struct RepoConfigError(String);

impl RepoConfig {
    /// Parses the text of a `testarena.toml`, checking its regex.
    pub fn parse(text: &str) -> Result<Self, RepoConfigError> {
        let cfg: RepoConfig =
            toml::from_str(text).map_err(|e| RepoConfigError(e.to_string().trim().to_string()))?;
        if let Some(ready) = &cfg.emulator.ready {
            crate::validate::check_pattern(ready)
                .map_err(|e| RepoConfigError(format!("emulator.ready: pattern {ready:?} {e}")))?;
        }
        for name in cfg.env.keys() {
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(RepoConfigError(format!(
                    "env: '{name}' is not a valid variable name (letters, digits, _)"
                )));
            }
            if name.starts_with("TESTARENA_") {
                return Err(RepoConfigError(format!(
                    "env: '{name}': TESTARENA_* variables are set by TestArena"
                )));
            }
        }
        if let Some(elf) = &cfg.emulator.elf {
            check_inside_repo(elf)
                .map_err(|e| RepoConfigError(format!("emulator.elf: '{elf}' {e}")))?;
        }
        for (field, value) in [
            ("build.command", &cfg.build.command),
            ("emulator.command", &cfg.emulator.command),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(RepoConfigError(format!("{field} must not be empty")));
            }
        }
        for out in cfg.build.outputs.iter().flatten() {
            check_inside_repo(out)
                .map_err(|e| RepoConfigError(format!("build.outputs: '{out}' {e}")))?;
        }
        Ok(cfg)
    }
}

/// A path inside the checkout (the ELF, a build output): relative, no `..` (nor `..` written
/// with backslashes), not `.git`, naming something below the root.
fn check_inside_repo(path: &str) -> Result<(), &'static str> {
    let p = std::path::Path::new(path);
    if path.trim().is_empty() {
        return Err("must not be empty");
    }
    if path.split('\\').any(|c| c == "..") {
        return Err("must be a relative path inside the repository, without '..'");
    }
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) if n == ".git" => return Err("must not be .git"),
            std::path::Component::Normal(_) | std::path::Component::CurDir => {}
            _ => return Err("must be a relative path inside the repository, without '..'"),
        }
    }
    if !p
        .components()
        .any(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return Err("must name a file or directory inside the repository");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let cfg = RepoConfig::parse(
            r#"
[build]
command = "make"
timeout = "10m"
[emulator]
command = "qemu-system-xtensa -M sim -kernel build/fw.elf"
console = "tcp"
ready = "^ready>"
boot_timeout = "30s"
[scenarios]
default = ["scenarios/*.xml"]
"#,
        )
        .unwrap();
        assert_eq!(cfg.build.timeout, Some(Duration::from_secs(600)));
        assert_eq!(cfg.emulator.console, ConsoleKind::Tcp);
        assert_eq!(cfg.scenarios.default, vec!["scenarios/*.xml"]);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = RepoConfig::parse("[build]\ncomand = \"make\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("comand"), "{e}");
        let e = RepoConfig::parse("[emulatr]\n").unwrap_err().to_string();
        assert!(e.contains("emulatr"), "{e}");
        let e = RepoConfig::parse("[emulator]\nready = \"(\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ready"), "{e}");
    }

    #[test]
    fn elf_must_stay_inside_the_repository() {
        let ok = RepoConfig::parse("[emulator]\nelf = \"build/fw.elf\"\n").unwrap();
        assert_eq!(ok.emulator.elf.as_deref(), Some("build/fw.elf"));
        for bad in [
            "/etc/passwd",
            "../x.elf",
            "build/../../x.elf",
            "..\\x.elf",
            " ",
            ".git",
        ] {
            let e = RepoConfig::parse(&format!("[emulator]\nelf = {bad:?}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("emulator.elf"), "{bad}: {e}");
        }
    }

    #[test]
    fn slow_or_huge_ready_patterns_are_refused() {
        let e = RepoConfig::parse("[emulator]\nready = '(?:.{0,30}){30}Q'\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("emulator.ready") && e.contains("the limit is 50 ms"),
            "{e}"
        );
        let e = RepoConfig::parse("[emulator]\nready = '.{0,10000}Z'\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("emulator.ready") && e.contains("too large"),
            "{e}"
        );
    }

    #[test]
    fn build_outputs_stay_inside_the_checkout() {
        let cfg = RepoConfig::parse("[build]\noutputs = [\"build\", \"out/fw.bin\"]\n").unwrap();
        assert_eq!(cfg.build.outputs.unwrap(), vec!["build", "out/fw.bin"]);
        for bad in ["/etc", "../x", "a/../../b", ".git", "", "."] {
            let text = format!("[build]\noutputs = [{bad:?}]\n");
            let e = RepoConfig::parse(&text).unwrap_err().to_string();
            assert!(e.contains("build.outputs"), "{bad}: {e}");
        }
    }
}
