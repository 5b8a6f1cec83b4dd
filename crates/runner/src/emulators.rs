//! The emulators a worker's host offers, as labels: each `qemu-system-*` binary on `PATH` (its
//! name) and the machines it emulates (`-machine help`), found once at start so a queue that
//! asks for `esp32` goes to a worker that can boot one.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testarena_core::validate::check_label;

/// How long one `qemu-system-* -machine help` may take before it is killed (and its machines
/// left out).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The labels of the emulators on `PATH`: every `qemu-system-*` binary's name and the machines
/// it offers, sorted, without duplicates; each probe is limited to `timeout`.
pub fn detect(timeout: Duration) -> Vec<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let probes: Vec<_> = qemu_binaries(&path)
        .into_iter()
        .map(|(name, bin)| {
            let probe = std::thread::spawn(move || machines(&bin, timeout));
            (name, probe)
        })
        .collect();
    let mut labels = BTreeSet::new();
    for (name, probe) in probes {
        labels.extend(probe.join().unwrap_or_default());
        labels.insert(name);
    }
    labels.into_iter().collect()
}

/// Every `qemu-system-*` executable on `path` (a `PATH` value): (its name, its path); the first
/// of a name wins, as the shell would find it; names that are not valid labels are left out.
pub fn qemu_binaries(path: &OsStr) -> Vec<(String, PathBuf)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for dir in std::env::split_paths(path) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut found: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .filter(|(name, p)| {
                name.starts_with("qemu-system-") && check_label(name).is_ok() && executable(p)
            })
            .collect();
        found.sort();
        for (name, p) in found {
            if seen.insert(name.clone()) {
                out.push((name, p));
            }
        }
    }
    out
}

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The machines `bin -machine help` lists; nothing if it fails or takes over `timeout`.
fn machines(bin: &Path, timeout: Duration) -> Vec<String> {
    let child = Command::new(bin)
        .args(["-machine", "help"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return Vec::new();
    };
    let mut stdout = child.stdout.take();
    // Read on a thread, so a long listing never blocks the child on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.take(1 << 20).read_to_string(&mut text);
        }
        text
    });
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!(emulator = %bin.display(), "cannot list its machines (-machine help)");
                return Vec::new();
            }
        }
    }
    parse_machine_help(&reader.join().unwrap_or_default())
}

/// The machine names of a `-machine help` listing (`name   description` after a heading line);
/// `none` (the empty machine) and names that are not valid labels are left out.
pub fn parse_machine_help(text: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) || line.trim_end().ends_with(':') {
            continue;
        }
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name != "none" && check_label(name).is_ok() {
            out.insert(name.to_string());
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_help_is_parsed_into_machine_names() {
        let xtensa = "Supported machines are:\n\
            esp32                Espressif ESP32 machine\n\
            esp32s3              Espressif ESP32S3 machine\n\
            kc705                kc705 EVB (dc232b)\n\
            lx60-nommu           lx60 noMMU EVB (dc233c)\n\
            none                 empty machine\n\
            sim                  sim machine (dc232b) (default)\n";
        assert_eq!(
            parse_machine_help(xtensa),
            ["esp32", "esp32s3", "kc705", "lx60-nommu", "sim"]
        );
        let x86 = "Supported machines are:\n\
            microvm              microvm (i386)\n\
            pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-8.2)\n\
            pc-i440fx-8.2        Standard PC (i440FX + PIIX, 1996) (default)\n\
            Weird_Name           not a label\n\
            \n";
        assert_eq!(parse_machine_help(x86), ["microvm", "pc", "pc-i440fx-8.2"]);
        assert!(parse_machine_help("").is_empty());
    }

    #[test]
    fn qemu_binaries_on_the_path_are_found_first_wins() {
        use std::os::unix::fs::PermissionsExt;
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let script = |dir: &Path, name: &str, body: &str, mode: u32| {
            let p = dir.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let help = "echo 'Supported machines are:'; echo 'esp32  Espressif ESP32'; echo 'sim  sim'";
        script(a.path(), "qemu-system-xtensa", help, 0o755);
        script(b.path(), "qemu-system-xtensa", "exit 1", 0o755);
        script(b.path(), "qemu-system-riscv32", "exec sleep 30", 0o755);
        script(b.path(), "qemu-system-arm", "", 0o644);
        script(b.path(), "qemu-img", "", 0o755);
        let path = std::env::join_paths([a.path(), b.path()]).unwrap();
        let found = qemu_binaries(&path);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["qemu-system-xtensa", "qemu-system-riscv32"]);
        assert_eq!(found[0].1, a.path().join("qemu-system-xtensa"));
        assert_eq!(
            machines(&found[0].1, Duration::from_secs(5)),
            ["esp32", "sim"]
        );
        let t = Instant::now();
        assert!(machines(&found[1].1, Duration::from_millis(300)).is_empty());
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the probe was cut short"
        );
    }
}
