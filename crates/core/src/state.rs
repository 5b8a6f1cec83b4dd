//! Queue, phase and case states, and the one place that decides which transitions are allowed.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident ($what:literal) { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The lower-case name used in the API and the database.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} '{}' (expected one of: {})",
                        $what, other,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(
    /// Where a queue is in its life.
    QueueStatus ("queue status") { Waiting => "waiting", Running => "running", Passed => "passed", Failed => "failed", Error => "error", Aborted => "aborted" }
);

string_enum!(
    /// What a running queue is doing now.
    Phase ("phase") { Cloning => "cloning", Building => "building", Testing => "testing", Reporting => "reporting" }
);

string_enum!(
    /// Where a task (one scenario) or a test case is in its life. `Flaky`: it failed, then
    /// passed when it was tried again (`retries`); it counts as passed for the queue's verdict.
    CaseStatus ("case status") { Pending => "pending", Running => "running", Passed => "passed", Failed => "failed", Error => "error", Skipped => "skipped", Flaky => "flaky" }
);

impl QueueStatus {
    /// The status every queue starts in.
    pub const INITIAL: QueueStatus = QueueStatus::Waiting;

    /// True once the queue can no longer change.
    pub fn is_finished(self) -> bool {
        !matches!(self, QueueStatus::Waiting | QueueStatus::Running)
    }

    /// Every status a queue may become `to` from, in declaration order.
    pub fn sources(to: QueueStatus) -> Vec<QueueStatus> {
        QueueStatus::ALL
            .iter()
            .copied()
            .filter(|from| from.can_become(to))
            .collect()
    }

    /// Whether a queue may go from `self` to `to`.
    pub fn can_become(self, to: QueueStatus) -> bool {
        use QueueStatus::*;
        match (self, to) {
            (Waiting, Running | Aborted | Error) => true,
            // A running queue taken back after its lease ran out waits again.
            (Running, Waiting | Passed | Failed | Error | Aborted) => true,
            _ => false,
        }
    }
}

impl CaseStatus {
    /// The status every case and task starts in.
    pub const INITIAL: CaseStatus = CaseStatus::Pending;

    /// True once the case has its verdict.
    pub fn is_finished(self) -> bool {
        !matches!(self, CaseStatus::Pending | CaseStatus::Running)
    }

    /// Every status a case (or task) may become `to` from, in declaration order.
    pub fn sources(to: CaseStatus) -> Vec<CaseStatus> {
        CaseStatus::ALL
            .iter()
            .copied()
            .filter(|from| from.can_become(to))
            .collect()
    }

    /// What an unfinished case (or task) becomes when its queue ends before it does: one that
    /// was running is an `error`, one that never started is `skipped`; `None` once finished.
    pub fn cut_short(self) -> Option<CaseStatus> {
        match self {
            CaseStatus::Running => Some(CaseStatus::Error),
            CaseStatus::Pending => Some(CaseStatus::Skipped),
            _ => None,
        }
    }

    /// Whether a case (or task) may go from `self` to `to`.
    pub fn can_become(self, to: CaseStatus) -> bool {
        use CaseStatus::*;
        matches!(
            (self, to),
            (Pending, Running | Skipped | Error)
                | (Running, Passed | Failed | Error | Skipped | Flaky)
        )
    }

    /// Combines verdicts: the worst one wins (error > failed > flaky > passed > skipped).
    pub fn worst(self, other: CaseStatus) -> CaseStatus {
        fn rank(s: CaseStatus) -> u8 {
            match s {
                CaseStatus::Error => 6,
                CaseStatus::Failed => 5,
                CaseStatus::Running => 4,
                CaseStatus::Pending => 3,
                CaseStatus::Flaky => 2,
                CaseStatus::Passed => 1,
                CaseStatus::Skipped => 0,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// The final status of a queue from the verdicts of its cases (and of tasks without cases).
pub fn queue_verdict(results: impl IntoIterator<Item = CaseStatus>) -> QueueStatus {
    let mut worst: Option<CaseStatus> = None;
    for r in results {
        worst = Some(match worst {
            None => r,
            Some(w) => w.worst(r),
        });
    }
    match worst {
        Some(CaseStatus::Error) => QueueStatus::Error,
        Some(CaseStatus::Failed) => QueueStatus::Failed,
        // Flaky cases passed in the end: the queue passes (its summary counts them).
        Some(CaseStatus::Passed | CaseStatus::Flaky | CaseStatus::Skipped) => QueueStatus::Passed,
        // Nothing ran, or something never finished: that is the infrastructure's fault.
        _ => QueueStatus::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in QueueStatus::ALL {
            assert_eq!(s.as_str().parse::<QueueStatus>().ok(), Some(*s));
        }
        for s in CaseStatus::ALL {
            assert_eq!(s.as_str().parse::<CaseStatus>().ok(), Some(*s));
        }
        assert!("bogus"
            .parse::<QueueStatus>()
            .unwrap_err()
            .contains("waiting"));
    }

    #[test]
    fn finished_queues_never_change() {
        for from in QueueStatus::ALL.iter().filter(|s| s.is_finished()) {
            for to in QueueStatus::ALL {
                assert!(!from.can_become(*to), "{from} -> {to}");
            }
        }
        assert!(QueueStatus::Waiting.can_become(QueueStatus::Aborted));
        assert!(!QueueStatus::Waiting.can_become(QueueStatus::Passed));
    }

    #[test]
    fn sources_list_exactly_the_allowed_transitions() {
        assert_eq!(
            QueueStatus::sources(QueueStatus::Running),
            vec![QueueStatus::Waiting]
        );
        assert_eq!(
            QueueStatus::sources(QueueStatus::Waiting),
            vec![QueueStatus::Running]
        );
        for to in QueueStatus::ALL {
            for from in QueueStatus::ALL {
                assert_eq!(
                    QueueStatus::sources(*to).contains(from),
                    from.can_become(*to)
                );
            }
        }
        for to in CaseStatus::ALL {
            for from in CaseStatus::ALL {
                assert_eq!(
                    CaseStatus::sources(*to).contains(from),
                    from.can_become(*to)
                );
            }
        }
    }

    #[test]
    fn cutting_short_is_an_allowed_transition_to_a_verdict() {
        for s in CaseStatus::ALL {
            match s.cut_short() {
                Some(to) => assert!(s.can_become(to) && to.is_finished(), "{s} -> {to}"),
                None => assert!(s.is_finished(), "{s}"),
            }
        }
        assert!(!QueueStatus::INITIAL.is_finished());
        assert!(!CaseStatus::INITIAL.is_finished());
    }

    #[test]
    fn verdict_takes_the_worst() {
        use CaseStatus::*;
        assert_eq!(queue_verdict([Passed, Passed]), QueueStatus::Passed);
        assert_eq!(
            queue_verdict([Passed, Failed, Skipped]),
            QueueStatus::Failed
        );
        assert_eq!(queue_verdict([Failed, Error]), QueueStatus::Error);
        assert_eq!(queue_verdict([Passed, Flaky]), QueueStatus::Passed);
        assert_eq!(queue_verdict([Flaky, Skipped]), QueueStatus::Passed);
        assert_eq!(queue_verdict([Flaky, Failed]), QueueStatus::Failed);
        assert_eq!(Passed.worst(Flaky), Flaky);
        assert!(Running.can_become(Flaky) && Flaky.is_finished());
        assert!(!Flaky.can_become(Passed) && !Pending.can_become(Flaky));
        assert_eq!(queue_verdict([]), QueueStatus::Error);
        assert!(!Passed.can_become(Failed));
    }
}
