//! Where a queue's files live under the data directory; shared by the worker that writes them
//! and the server that serves them.

use std::path::{Path, PathBuf};

/// `<data>/queues/<id>`: everything a queue wrote.
pub fn queue_dir(data_dir: &Path, id: i64) -> PathBuf {
    data_dir.join("queues").join(id.to_string())
}

/// A name safe as a file name: ASCII letters, digits, `-`, `_` and `.`; anything else is `_`.
pub fn file_safe(s: &str) -> String {
    let safe: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // "." and ".." would name directories, not files.
    if safe.chars().all(|c| c == '.') {
        safe.replace('.', "_")
    } else {
        safe
    }
}

/// `<queue dir>/<NN>-<scenario stem>`: the files of one task (scenario).
pub fn task_dir(queue_dir: &Path, position: i64, scenario: &str) -> PathBuf {
    let stem = Path::new(scenario)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    queue_dir.join(format!("{:02}-{}", position + 1, file_safe(&stem)))
}

/// The plain-text log of one case.
pub fn case_log(task_dir: &Path, case_id: &str) -> PathBuf {
    task_dir.join(format!("{}.log", file_safe(case_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe() {
        assert_eq!(file_safe("TC_1.a-b"), "TC_1.a-b");
        assert_eq!(file_safe("../x y"), ".._x_y");
        assert_eq!(file_safe(".."), "__");
        let q = queue_dir(Path::new("/d"), 7);
        assert_eq!(
            task_dir(&q, 0, "scenarios/smoke.xml"),
            PathBuf::from("/d/queues/7/01-smoke")
        );
        assert_eq!(
            case_log(&task_dir(&q, 1, "a/b c.xml"), "TC"),
            PathBuf::from("/d/queues/7/02-b_c/TC.log")
        );
    }
}
