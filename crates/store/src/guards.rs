//! The statuses in the SQL statements, rendered from `core::state` (the one place that says
//! which transitions are allowed): no statement spells a status itself, and each guard of a
//! transition (`WHERE status IN (…)`) lists exactly the statuses core lets it start from.

use testarena_core::{CaseStatus, QueueStatus};

/// A status as an SQL string literal; statuses are lower-case words, nothing needs escaping.
fn lit(status: &str) -> String {
    assert!(
        status.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "not a status: {status}"
    );
    format!("'{status}'")
}

/// `'a', 'b'`.
fn list(statuses: impl IntoIterator<Item = &'static str>) -> String {
    statuses.into_iter().map(lit).collect::<Vec<_>>().join(", ")
}

/// A queue status as an SQL value.
pub(crate) fn q(status: QueueStatus) -> String {
    lit(status.as_str())
}

/// A case (or task) status as an SQL value.
pub(crate) fn c(status: CaseStatus) -> String {
    lit(status.as_str())
}

/// `status IN (…)`: every status core lets a queue become `to` from.
pub(crate) fn queue_may_become(to: QueueStatus) -> String {
    let from = QueueStatus::sources(to);
    assert!(!from.is_empty(), "no queue may become {to}");
    format!("status IN ({})", list(from.iter().map(|s| s.as_str())))
}

/// `status = 'from'`, the guard of a queue moving from `from` to `to`, which core must allow.
pub(crate) fn queue_moves(from: QueueStatus, to: QueueStatus) -> String {
    assert!(from.can_become(to), "core forbids a queue {from} -> {to}");
    format!("status = {}", q(from))
}

/// The condition that a queue is running and held by the [`Holder`](crate::Holder) whose
/// [`token`](crate::Holder::token) (worker id and attempt) is bound next:
/// `status = 'running' AND worker_id || '#' || attempts = ` (followed by the parameter). The
/// attempt is the fencing token: a worker whose lease ran out and whose queue was claimed
/// again (even by the same worker id) changes nothing of the newer attempt.
pub(crate) fn held() -> String {
    format!(
        "status = {} AND worker_id || '#' || attempts = ",
        q(QueueStatus::Running)
    )
}

/// The condition that a queue is running for the worker whose id is bound next (any attempt):
/// `status = 'running' AND worker_id = ` (followed by the parameter).
pub(crate) fn running_for() -> String {
    format!("status = {} AND worker_id = ", q(QueueStatus::Running))
}

/// `status IN (…)` of the cases (or tasks) that have no verdict yet.
pub(crate) fn unfinished() -> String {
    let open = CaseStatus::ALL.iter().filter(|s| !s.is_finished());
    format!("status IN ({})", list(open.map(|s| s.as_str())))
}

/// `CASE status WHEN 'running' THEN 'error' … END`: what an unfinished case (or task) becomes
/// when its queue ends before it, as [`CaseStatus::cut_short`] says; use with [`unfinished`].
pub(crate) fn cut_short() -> String {
    let arms: Vec<String> = CaseStatus::ALL
        .iter()
        .filter_map(|s| {
            s.cut_short()
                .map(|to| format!("WHEN {} THEN {}", c(*s), c(to)))
        })
        .collect();
    format!("CASE status {} END", arms.join(" "))
}

/// A bisect status as an SQL value.
pub(crate) fn b(status: testarena_core::bisect::BisectStatus) -> String {
    lit(status.as_str())
}

/// `status IN (…)` of the queues that have not ended yet.
pub(crate) fn queue_unfinished() -> String {
    let open = QueueStatus::ALL.iter().filter(|s| !s.is_finished());
    format!("status IN ({})", list(open.map(|s| s.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_list_what_core_allows() {
        assert_eq!(
            queue_may_become(QueueStatus::Running),
            "status IN ('waiting')"
        );
        assert_eq!(
            queue_may_become(QueueStatus::Waiting),
            "status IN ('running')"
        );
        assert_eq!(
            queue_moves(QueueStatus::Waiting, QueueStatus::Aborted),
            "status = 'waiting'"
        );
        assert_eq!(
            held(),
            "status = 'running' AND worker_id || '#' || attempts = "
        );
        assert_eq!(running_for(), "status = 'running' AND worker_id = ");
        assert_eq!(unfinished(), "status IN ('pending', 'running')");
        assert_eq!(
            cut_short(),
            "CASE status WHEN 'pending' THEN 'skipped' WHEN 'running' THEN 'error' END"
        );
    }

    #[test]
    #[should_panic(expected = "core forbids")]
    fn a_guard_core_forbids_is_refused() {
        queue_moves(QueueStatus::Passed, QueueStatus::Running);
    }
}
