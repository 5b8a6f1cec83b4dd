//! `testarena repro QUEUE CASE`: fetches a failed case's repro bundle from the server and
//! replays that case here with the same engine as `testarena run`, without building: the
//! bundle's files (testarena.toml, the scenario, the firmware images at their paths in the
//! checkout) are committed into a repository of their own in a temporary directory, and that
//! repository is run with the build skipped and only the case asked for.

use crate::client::{self, ConnArgs, IdArg, EXIT_TROUBLE};
use crate::config::{CommonArgs, EngineArgs};
use crate::run::{self, RunArgs};
use clap::Args;
use serde::Deserialize;
use std::path::{Component, Path, PathBuf};
use testarena_core::repro::{Manifest, TRANSCRIPT};

/// Largest bundle unpacked (what the worker keeps is bounded well below it).
const MAX_UNPACKED: u64 = 1 << 30;

/// The branch of the replay repository.
const BRANCH: &str = "testarena-repro";

/// `testarena repro`'s options.
#[derive(Debug, Args)]
pub struct ReproArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(flatten)]
    pub id: IdArg,
    /// The failed case's id
    #[arg(value_name = "CASE")]
    pub case: String,
    /// The task (scenario) id, when two scenarios of the queue share the case id
    #[arg(long, value_name = "N")]
    pub task: Option<i64>,
    /// Directory for the replay's reports (and the bundle); replaced if an earlier run made it
    #[arg(long, value_name = "DIR", default_value = "testarena-repro")]
    pub out: PathBuf,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `case.json` of a bundle.
#[derive(Debug, Deserialize)]
struct CaseFile {
    scenario: String,
    case: String,
    status: String,
    message: Option<String>,
}

/// Runs `testarena repro`; returns the exit code (that of `testarena run`: 0 passed, 1 failed,
/// 2 error, 3 bad input or the server refused).
pub async fn repro(args: ReproArgs, common: &CommonArgs) -> i32 {
    let scratch = match tempfile::Builder::new()
        .prefix("testarena-repro-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => return fail(format!("cannot make a temporary directory: {e}")),
    };
    let bundle = match fetch(&args, common).await {
        Ok(b) => b,
        Err(f) => {
            eprintln!("testarena repro: {}", f.message);
            return f.code;
        }
    };
    let prepared = match prepare(&bundle, scratch.path()) {
        Ok(p) => p,
        Err(m) => return fail(m),
    };
    println!(
        "testarena repro: queue {} case {} ({}: {}), {} commit {}\n  emulator: {}{}",
        args.id.id.trim_start_matches('#'),
        prepared.case.case,
        prepared.case.status,
        // Its first line: the rest (the last lines seen) is what the replay prints live.
        prepared
            .case
            .message
            .as_deref()
            .and_then(|m| m.lines().next())
            .unwrap_or(""),
        prepared.manifest.repo,
        prepared.manifest.commit,
        prepared.manifest.emulator_command,
        left_out(&prepared.manifest),
    );
    let run_args = RunArgs {
        repo: prepared.repo.display().to_string(),
        branch: Some(BRANCH.into()),
        scenarios: vec![prepared
            .repo
            .join(&prepared.case.scenario)
            .display()
            .to_string()],
        cases: vec![prepared.case.case.clone()],
        out: args.out.clone(),
        engine: args.engine.clone(),
        replay: true,
        // The queue's own default is not in the bundle; the scenario's `retries` still apply.
        retries: None,
    };
    let code = run::run(run_args, common).await;
    keep_bundle(&args.out, &bundle, &prepared.dir);
    code
}

fn fail(message: String) -> i32 {
    eprintln!("testarena repro: {message}");
    EXIT_TROUBLE
}

/// The bundle from the server.
async fn fetch(args: &ReproArgs, common: &CommonArgs) -> Result<Vec<u8>, client::Fail> {
    let api = client::connect(&args.conn, common)?;
    let id = client::parse_id(&args.id)?;
    Ok(api.repro(id, &args.case, args.task).await?)
}

/// An unpacked bundle made into a repository.
struct Prepared {
    /// The unpacked bundle (manifest, case.json, transcript, files/).
    dir: PathBuf,
    /// The replay repository (a git work tree of `files/`).
    repo: PathBuf,
    manifest: Manifest,
    case: CaseFile,
}

/// Unpacks `bundle` into `scratch` and commits its files into a repository there.
fn prepare(bundle: &[u8], scratch: &Path) -> Result<Prepared, String> {
    let dir = scratch.join("bundle");
    unpack(bundle, &dir).map_err(|e| format!("cannot unpack the bundle: {e}"))?;
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| format!("the bundle has no {name}: {e}"))
    };
    let manifest: Manifest = serde_json::from_slice(&read("manifest.json")?)
        .map_err(|e| format!("the bundle's manifest.json: {e}"))?;
    let case: CaseFile = serde_json::from_slice(&read("case.json")?)
        .map_err(|e| format!("the bundle's case.json: {e}"))?;
    let repo = dir.join("files");
    std::fs::create_dir_all(&repo).map_err(|e| format!("cannot create {}: {e}", repo.display()))?;
    if !manifest.testarena_toml {
        std::fs::write(repo.join("testarena.toml"), made_toml(&manifest))
            .map_err(|e| format!("cannot write testarena.toml: {e}"))?;
    }
    if !repo.join(&case.scenario).is_file() {
        return Err(format!(
            "the bundle has no scenario file {} (left out?)",
            case.scenario
        ));
    }
    commit(&repo)?;
    Ok(Prepared {
        dir,
        repo,
        manifest,
        case,
    })
}

/// Unpacks a bundle's regular files into `dir`, without its top folder; a name that is not a
/// plain relative path is refused (the server's, but unpacked on the developer's disk).
fn unpack(bundle: &[u8], dir: &Path) -> std::io::Result<()> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bundle));
    let mut total = 0u64;
    for entry in tar.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path()?.into_owned();
        let inner: PathBuf = path.components().skip(1).collect();
        let plain = inner
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if !plain || inner.as_os_str().is_empty() {
            return Err(std::io::Error::other(format!(
                "a file named {} leaves the bundle",
                path.display()
            )));
        }
        total += entry.size();
        if total > MAX_UNPACKED {
            return Err(std::io::Error::other("the bundle is larger than 1 GiB"));
        }
        let to = dir.join(inner);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = std::fs::File::create(&to)?;
        // The entry reads no further than its own size.
        std::io::copy(&mut entry, &mut out)?;
    }
    Ok(())
}

/// A `testarena.toml` for a project that had none (an ESP-IDF project: the profile's emulator
/// command, console, ready pattern and images, from the manifest).
fn made_toml(m: &Manifest) -> String {
    let mut t = String::from("[emulator]\n");
    t.push_str(&format!("command = {:?}\n", m.emulator_command));
    t.push_str(&format!("console = {:?}\n", m.console));
    if let Some(r) = &m.ready {
        t.push_str(&format!("ready = {r:?}\n"));
    }
    t.push_str(&format!("boot_timeout = \"{}ms\"\n", m.boot_timeout_ms));
    if let Some(f) = &m.firmware {
        t.push_str(&format!("firmware = {f:?}\n"));
    }
    if let Some(e) = &m.elf {
        t.push_str(&format!("elf = {e:?}\n"));
    }
    t
}

/// Commits every file of `repo` (a new repository) on [`BRANCH`].
fn commit(repo: &Path) -> Result<(), String> {
    let steps: [&[&str]; 3] = [
        &["init", "--quiet", "-b", BRANCH],
        // Ignored nowhere: images under build/ are what the replay needs.
        &["add", "--all", "--force", "."],
        &[
            "commit",
            "--quiet",
            "--no-verify",
            "-m",
            "testarena repro bundle",
        ],
    ];
    for args in steps {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(repo)
            .env("GIT_AUTHOR_NAME", "testarena repro")
            .env("GIT_AUTHOR_EMAIL", "testarena-repro@localhost")
            .env("GIT_COMMITTER_NAME", "testarena repro")
            .env("GIT_COMMITTER_EMAIL", "testarena-repro@localhost")
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "git {} failed: {}",
                args[0],
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// What the bundle says it left out, as a line to print (empty if nothing).
fn left_out(m: &Manifest) -> String {
    m.left_out
        .iter()
        .map(|l| {
            format!(
                "\n  not in the bundle: {} ({} bytes): {}",
                l.path, l.bytes, l.why
            )
        })
        .collect()
}

/// Keeps the bundle and the case's original transcript next to the replay's reports, to
/// compare; a failure to is only said.
fn keep_bundle(out: &Path, bundle: &[u8], dir: &Path) {
    if !out.is_dir() {
        return;
    }
    let kept = std::fs::write(out.join("repro.tar.gz"), bundle).and_then(|()| {
        std::fs::copy(dir.join(TRANSCRIPT), out.join("original-transcript.log")).map(|_| ())
    });
    match kept {
        Ok(()) => println!(
            "bundle in {0}/repro.tar.gz, the failed run's transcript in {0}/original-transcript.log",
            out.display()
        ),
        Err(e) => eprintln!("testarena repro: cannot keep the bundle in {}: {e}", out.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            // `append_data` refuses `..`; the raw name is what a hostile server could send.
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            tar.append(&h, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn unpacks_plain_files_and_refuses_names_that_leave() {
        let d = tempfile::tempdir().unwrap();
        let good = tar_gz(&[
            ("repro-1-A/files/build/fw.elf", b"elf"),
            ("repro-1-A/case.json", b"{}"),
        ]);
        unpack(&good, &d.path().join("b")).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("b/files/build/fw.elf")).unwrap(),
            b"elf"
        );
        let bad = tar_gz(&[("repro-1-A/../../evil", b"x")]);
        let e = unpack(&bad, &d.path().join("c")).unwrap_err().to_string();
        assert!(e.contains("leaves the bundle"), "{e}");
        assert!(!d.path().join("evil").exists());
    }

    #[test]
    fn a_toml_is_made_from_the_manifest_when_the_project_had_none() {
        let m = Manifest {
            version: 1,
            queue: 1,
            repo: "r".into(),
            branch: "b".into(),
            commit: "c".into(),
            emulator_command: "qemu -drive file=build/f.bin".into(),
            console: "tcp".into(),
            ready: Some("^ready$".into()),
            boot_timeout_ms: 1500,
            firmware: Some("build/f.bin".into()),
            elf: None,
            testarena_toml: false,
            images: vec!["build/f.bin".into()],
            scenarios: Vec::new(),
            left_out: Vec::new(),
            cap: 1,
        };
        let cfg = testarena_core::repo_config::RepoConfig::parse(&made_toml(&m)).unwrap();
        assert_eq!(
            cfg.emulator.command.as_deref(),
            Some("qemu -drive file=build/f.bin")
        );
        assert_eq!(
            cfg.emulator.console,
            testarena_core::repo_config::ConsoleKind::Tcp
        );
        assert_eq!(
            cfg.emulator.boot_timeout,
            Some(std::time::Duration::from_millis(1500))
        );
        assert!(cfg.build.command.is_none());
    }
}
