//! Execution of one queue.
pub mod console;
pub mod git;
pub mod logs;
pub mod pipeline;
pub mod process;
pub mod profile;
pub mod report;
pub mod worker;

/// The directory of a queue's files under the data directory.
pub fn queue_dir(data_dir: &std::path::Path, id: i64) -> std::path::PathBuf {
    data_dir.join("queues").join(id.to_string())
}
