//! Where a queue's files live: in a worker's scratch directory while it runs the queue, and
//! by the same names (paths relative to that directory) in the database, where the server
//! reads them.

use std::path::{Path, PathBuf};

/// `<data>/queues/<id>`: the scratch directories of a queue's attempts on this worker.
pub fn queue_dir(data_dir: &Path, id: i64) -> PathBuf {
    data_dir.join("queues").join(id.to_string())
}

/// `<data>/queues/<id>/<attempt>`: one attempt's checkout and files, until they are shipped.
/// Its own per attempt: a worker that lost its claim cannot touch the next attempt's files.
pub fn attempt_dir(data_dir: &Path, id: i64, attempt: i64) -> PathBuf {
    queue_dir(data_dir, id).join(attempt.to_string())
}

/// The name of the plain-text log of a case of the task at `position` running `scenario`
/// (its path in the queue's files).
pub fn case_log_name(position: i64, scenario: &str, case_id: &str) -> String {
    case_log(&task_dir(Path::new(""), position, scenario), case_id)
        .to_string_lossy()
        .into_owned()
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
        assert_eq!(case_log_name(1, "a/b c.xml", "T/C"), "02-b_c/T_C.log");
        assert_eq!(
            attempt_dir(Path::new("/d"), 7, 2),
            PathBuf::from("/d/queues/7/2")
        );
    }
}
