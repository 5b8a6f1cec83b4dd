//! Contract test of the ESP-IDF profile. Espressif's toolchain and esp32 QEMU cannot be
//! installed here, so recording stand-ins for `idf.py`, `esptool.py` and `qemu-system-xtensa`
//! are put first on PATH (and so are visible, read-only, in the worker's sandbox, where the
//! TCP console lives in the emulator's own network namespace): the test checks that TestArena detects an ESP-IDF project, calls
//! them with the documented command lines, and talks to the UART over the TCP port it gave.
//! Tested against the real toolchain: not in CI.

mod common;

use common::App;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use testarena_client::{NewQueue, QueueStatus};

const IDF_PY: &str = r#"#!/bin/sh
echo "RECORD idf.py $*"
mkdir -p build
printf -- '--flash_mode dio 0x1000 bootloader/bootloader.bin\n' > build/flash_args
echo "Project build complete."
"#;

const ESPTOOL_PY: &str = r#"#!/bin/sh
echo "RECORD esptool.py $* (cwd $(basename "$PWD"))"
: > merged-flash.bin
"#;

/// Plays an ESP32 on the `-serial tcp:HOST:PORT,server=on,wait=on` UART: a boot banner, then
/// answers `ping` with `pong`.
const QEMU: &str = r#"#!/usr/bin/env python3
import os, re, socket, sys
print("RECORD qemu-system-xtensa " + " ".join(sys.argv[1:]), flush=True)
args = " ".join(sys.argv[1:])
m = re.search(r"-serial tcp:([0-9.]+):(\d+),server=on,wait=on", args)
if not m or "-machine esp32" not in args or "file=build/merged-flash.bin,if=mtd,format=raw" not in args:
    sys.exit("unexpected command line: " + args)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((m.group(1), int(m.group(2))))
srv.listen(1)
conn, _ = srv.accept()
conn.sendall(b"ESP-ROM:esp32\r\nI (0) cpu_start: Starting scheduler.\r\nmain_task: Calling app_main()\r\n")
buf = b""
while True:
    data = conn.recv(1024)
    if not data:
        break
    buf += data
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        if line.strip() == b"ping":
            conn.sendall(b"pong\r\n")
"#;

fn write_exe(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    let mut perm = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(path, perm).unwrap();
}

#[tokio::test]
async fn esp_idf_profile_contract_with_recording_stand_ins() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    write_exe(&bin.join("idf.py"), IDF_PY);
    write_exe(&bin.join("esptool.py"), ESPTOOL_PY);
    write_exe(&bin.join("qemu-system-xtensa"), QEMU);
    let repo = tmp.path().join("repos/hello");
    std::fs::create_dir_all(repo.join("scenarios")).unwrap();
    std::fs::write(repo.join("CMakeLists.txt"), "cmake_minimum_required(VERSION 3.16)\ninclude($ENV{IDF_PATH}/tools/cmake/project.cmake)\nproject(hello)\n").unwrap();
    std::fs::write(
        repo.join("scenarios/boot.xml"),
        r#"<scenario name="boot"><testcase id="TC_BOOT"><expect timeout="20">app_main</expect><send>ping</send><expect timeout="5">^pong$</expect></testcase></scenario>"#,
    )
    .unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "esp-idf app",
        ],
    ] {
        assert!(Command::new("git")
            .args(args)
            .current_dir(&repo)
            .status()
            .unwrap()
            .success());
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::env::set_var("PATH", &path);
    let roots = tmp.path().join("repos");
    let app = App::start(
        "up",
        &tmp.path().join("data"),
        &["--allow-local-repos", roots.to_str().unwrap()],
    );
    let id = app
        .submit(&NewQueue::new(repo.to_str().unwrap(), "main"))
        .await
        .id;
    let q = app
        .wait_until(id, Duration::from_secs(60), |q| q.status.is_finished())
        .await;
    // The stand-ins run in the worker's sandbox: they say how they were called on stdout,
    // which the queue's log keeps.
    let log = app.log_text(id).await;
    assert_eq!(q.status, QueueStatus::Passed, "{q:#?}\n{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("| RECORD ").map(|(_, call)| call))
        .collect();
    assert_eq!(lines[0], "idf.py build");
    assert_eq!(lines[1], "esptool.py --chip esp32 merge_bin --fill-flash-size 4MB -o merged-flash.bin @flash_args (cwd build)");
    assert!(lines[2].starts_with("qemu-system-xtensa -nographic -monitor none -machine esp32 -drive file=build/merged-flash.bin,if=mtd,format=raw -serial tcp:127.0.0.1:"));
    assert!(log.contains("# profile: esp-idf"), "{log}");
}
