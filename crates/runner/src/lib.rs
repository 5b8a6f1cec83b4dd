//! Execution of one queue.
pub mod bisect;
pub mod build_cache;
pub mod console;
pub mod emulators;
pub mod git;
pub mod logs;
pub mod panics;
pub mod pipeline;
pub mod process;
pub mod profile;
pub mod reserve;
pub mod sandbox;
pub mod ship;
pub mod worker;
