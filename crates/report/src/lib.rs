//! Reports of a queue: the line format of every `.log` file, the per-case HTML page and the
//! JUnit XML file.
//!
//! - [`format_line`] writes one log line: `2026-11-25T15:08:56.123Z | text` for output
//!   (console, build, command) and `2026-11-25T15:08:56.123Z # text` for TestArena's own events.
//! - [`write_case_html`] turns a case's `.log` into a self-contained HTML page, streaming.
//! - [`write_junit`] writes `junit.xml`: one testsuite per scenario, one testcase per case.

mod html;
mod junit;
mod log;

pub use html::{
    line_to_html, page_start, render_case_page, write_case_html, CaseMeta, MAX_HTML_LOG,
};
pub use junit::{write_junit, CaseLog, JunitCase, JunitSuite, JunitTry};
pub use log::{escape_text, format_line, parse_line, LineKind};

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The sibling path a report is written to before it is renamed into place, so that a reader
/// never sees half a file.
fn temp_sibling(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes a file through `write` into a temporary sibling and renames it over `path`; on error
/// the temporary file is removed.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut out)?;
        out.flush()
    })();
    match result {
        Ok(()) => std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod test_util {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory under the system temp dir, removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "testarena-report-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::TempDir;
    use super::*;

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let dir = TempDir::new("atomic");
        let path = dir.path().join("a.txt");
        write_atomically(&path, |w| std::io::Write::write_all(w, b"hi")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hi");
        assert!(!temp_sibling(&path).exists());

        let failed = write_atomically(&path, |_| Err(std::io::Error::other("boom")));
        assert!(failed.is_err());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"hi",
            "old file kept on error"
        );
        assert!(!temp_sibling(&path).exists());
    }
}
