//! Resolving a code address against an ELF, in-process: its DWARF line tables and inlining
//! information (the `addr2line` crate), or its symbol table when it has no DWARF.

use object::Object;
use std::fmt;
use std::path::{Path, PathBuf};

/// One function an address is in: the innermost first when calls were inlined.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub function: Option<String>,
    /// Relative to the checkout when the source was built there.
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.function.as_deref().unwrap_or("??"))?;
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, " at {file}:{line}"),
            (Some(file), None) => write!(f, " at {file}"),
            _ => Ok(()),
        }
    }
}

/// What an address is.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    /// From the DWARF, innermost frame first.
    Frames(Vec<Frame>),
    /// Only the symbol table knows it (no DWARF for it).
    Symbol(String),
    /// Neither does.
    Nothing,
}

/// An ELF opened for resolving, or why it cannot be used.
pub enum Elf {
    Loaded {
        /// Boxed: the loader is large, the other variant a short note.
        loader: Box<addr2line::Loader>,
        /// The checkout, stripped from the front of source paths.
        root: PathBuf,
    },
    /// A sentence saying why (the file is missing, not an ELF, or stripped).
    Unusable(String),
}

impl Elf {
    /// Opens `path`; never fails: what goes wrong becomes [`Elf::Unusable`].
    pub fn load(path: &Path, root: &Path) -> Elf {
        if let Err(note) = inside(path, root).and_then(|()| check(path)) {
            return Elf::Unusable(note);
        }
        match addr2line::Loader::new(path) {
            Ok(loader) => Elf::Loaded {
                loader: Box::new(loader),
                root: root.to_path_buf(),
            },
            Err(e) => Elf::Unusable(format!("cannot be read as an ELF: {e}")),
        }
    }

    /// Why the ELF cannot be used, if it cannot.
    pub fn unusable(&self) -> Option<&str> {
        match self {
            Elf::Unusable(note) => Some(note),
            Elf::Loaded { .. } => None,
        }
    }

    /// What `addr` is in this ELF.
    pub fn resolve(&self, addr: u64) -> Resolved {
        let Elf::Loaded { loader, root } = self else {
            return Resolved::Nothing;
        };
        let frames = dwarf_frames(loader, addr, root);
        if !frames.is_empty() {
            return Resolved::Frames(frames);
        }
        match loader.find_symbol(addr) {
            Some(name) => Resolved::Symbol(addr2line::demangle_auto(name.into(), None).into()),
            None => Resolved::Nothing,
        }
    }
}

/// Largest ELF read: far above any firmware's (an ESP-IDF app's is tens of MB), so that a
/// repository cannot make the worker read without end.
const MAX_ELF_BYTES: u64 = 512 << 20;

/// The ELF is a regular file inside the checkout, of a sane size: the worker reads it outside
/// the sandbox, so a symbolic link the repository committed must not lead elsewhere.
fn inside(path: &Path, root: &Path) -> Result<(), String> {
    let real = path
        .canonicalize()
        .map_err(|e| format!("cannot be read ({e})"))?;
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    if !real.starts_with(&root) {
        return Err("is outside the checkout (a symbolic link?): not read".into());
    }
    let meta = real
        .metadata()
        .map_err(|e| format!("cannot be read ({e})"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() > MAX_ELF_BYTES {
        return Err(format!(
            "is larger than {} MiB: not read",
            MAX_ELF_BYTES >> 20
        ));
    }
    Ok(())
}

/// The ELF is readable and has something to resolve with (a `.debug_info` or a symbol
/// table); otherwise a note that says which.
fn check(path: &Path) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot be read ({e})"))?;
    let file =
        object::File::parse(&*data).map_err(|e| format!("cannot be read as an ELF ({e})"))?;
    let dwarf = file.section_by_name(".debug_info").is_some();
    let symbols = file.symbols().next().is_some();
    if !dwarf && !symbols {
        return Err(
            "is stripped (no symbols, no DWARF debug information): build it with -g and do not strip it"
                .into(),
        );
    }
    Ok(())
}

/// The DWARF frames of `addr`, innermost first; empty when the DWARF does not cover it.
fn dwarf_frames(loader: &addr2line::Loader, addr: u64, root: &Path) -> Vec<Frame> {
    let mut out = Vec::new();
    let Ok(mut frames) = loader.find_frames(addr) else {
        return out;
    };
    while let Ok(Some(frame)) = frames.next() {
        let function = frame
            .function
            .as_ref()
            .and_then(|f| f.demangle().ok())
            .map(|name| name.into_owned());
        let location = frame.location.as_ref();
        out.push(Frame {
            function,
            file: location.and_then(|l| l.file).map(|f| relative(f, root)),
            line: location.and_then(|l| l.line),
        });
    }
    // A frame with neither a function nor a place says nothing.
    out.retain(|f| f.function.is_some() || f.file.is_some());
    out
}

/// `file` relative to the checkout if it is inside it (the build ran there).
fn relative(file: &str, root: &Path) -> String {
    Path::new(file)
        .strip_prefix(root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| file.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::ObjectSymbol;
    use std::process::Command;

    /// A C file whose `known_function` is all on line 3 (its entry's line, whichever the
    /// compiler picks: the signature or the opening brace).
    const FIXTURE: &str = "int other(int x);\n\nint known_function(int x) { return other(x) + 1; }\n\nint other(int x) { return x * 3; }\n\nvoid _start(void) { known_function(2); for (;;) {} }\n";

    /// Builds the fixture with the host's C compiler (-g, at fixed addresses) into `dir`.
    fn build_fixture(dir: &Path) -> PathBuf {
        std::fs::write(dir.join("fixture.c"), FIXTURE).unwrap();
        let elf = dir.join("fixture.elf");
        let out = Command::new("cc")
            .args([
                "-g",
                "-O0",
                "-no-pie",
                "-nostdlib",
                "-static",
                "-fno-inline",
            ])
            .arg("fixture.c")
            .arg("-o")
            .arg(&elf)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        elf
    }

    /// The address of `name` in the ELF's symbol table.
    fn symbol_address(elf: &Path, name: &str) -> u64 {
        let data = std::fs::read(elf).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let found = file.symbols().find(|s| s.name() == Ok(name));
        found.unwrap().address()
    }

    fn strip(elf: &Path, args: &[&str], to: &Path) {
        let out = Command::new("strip")
            .args(args)
            .arg(elf)
            .arg("-o")
            .arg(to)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn a_function_address_resolves_to_its_name_and_source_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = build_fixture(dir.path());
        let addr = symbol_address(&path, "known_function");
        let elf = Elf::load(&path, dir.path());
        assert_eq!(elf.unusable(), None);
        let Resolved::Frames(frames) = elf.resolve(addr) else {
            panic!("not resolved: {:?}", elf.resolve(addr));
        };
        assert_eq!(
            frames[0].to_string(),
            "known_function at fixture.c:3",
            "relative to the checkout: {frames:?}"
        );
        assert_eq!(elf.resolve(0x10), Resolved::Nothing, "below any code");
    }

    #[test]
    fn a_symbols_only_elf_gives_names_and_a_stripped_one_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let path = build_fixture(dir.path());
        let addr = symbol_address(&path, "known_function");

        let no_dwarf = dir.path().join("no-dwarf.elf");
        strip(&path, &["--strip-debug"], &no_dwarf);
        let elf = Elf::load(&no_dwarf, dir.path());
        assert_eq!(elf.resolve(addr), Resolved::Symbol("known_function".into()));

        let stripped = dir.path().join("stripped.elf");
        strip(&path, &["--strip-all"], &stripped);
        let note = Elf::load(&stripped, dir.path())
            .unusable()
            .map(String::from);
        assert!(
            note.as_deref().is_some_and(|n| n.contains("is stripped")),
            "{note:?}"
        );

        let outside = tempfile::tempdir().unwrap();
        let link = dir.path().join("link.elf");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let note = Elf::load(&link, outside.path())
            .unusable()
            .map(String::from);
        assert!(
            note.as_deref()
                .is_some_and(|n| n.contains("outside the checkout")),
            "{note:?}"
        );

        let not_elf = dir.path().join("fixture.c");
        let note = Elf::load(&not_elf, dir.path()).unusable().map(String::from);
        assert!(
            note.as_deref()
                .is_some_and(|n| n.starts_with("cannot be read as an ELF")),
            "{note:?}"
        );
    }
}
