//! Execution of one queue.
