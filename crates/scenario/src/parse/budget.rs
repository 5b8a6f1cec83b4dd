//! A file's regex budget: each distinct pattern compiled and timed once, and all of them together within a compiled size and a checking time.

use super::*;

/// The file's patterns so far: each distinct one is compiled and timed once, and all of them
/// together stay within a compiled size and a checking time.
pub(crate) struct PatternBudget {
    /// Outcome per distinct source (a clone of a `Regex` shares its compiled program).
    seen: HashMap<String, Result<Regex, PatternError>>,
    size: usize,
    time: Duration,
    max_size: usize,
    max_time: Duration,
    /// Set once a total is over; later patterns are then skipped without a message.
    exhausted: bool,
}

/// Why a pattern is not usable.
pub(super) enum Refusal {
    /// The pattern itself is bad.
    Pattern(PatternError),
    /// The file's patterns together are over a budget (the message), or were before.
    Budget(Option<String>),
}

impl PatternBudget {
    pub(crate) fn new(max_size: usize, max_time: Duration) -> Self {
        PatternBudget {
            seen: HashMap::new(),
            size: 0,
            time: Duration::ZERO,
            max_size,
            max_time,
            exhausted: false,
        }
    }

    pub(super) fn check(&mut self, source: &str) -> Result<Regex, Refusal> {
        if let Some(outcome) = self.seen.get(source) {
            return outcome.clone().map_err(Refusal::Pattern);
        }
        if self.exhausted {
            return Err(Refusal::Budget(None));
        }
        let start = std::time::Instant::now();
        let outcome = check_pattern(source);
        self.time += start.elapsed();
        self.size += outcome.as_ref().map_or(0, |checked| checked.size);
        let over = if self.size > self.max_size {
            Some(format!(
                "the regular expressions of this file together compile to over {} MiB (each \
                 distinct one counts as 16 KiB, 128 KiB or 1 MiB); use fewer distinct patterns \
                 or split the scenario",
                self.max_size >> 20
            ))
        } else if self.time > self.max_time {
            Some(format!(
                "checking the regular expressions of this file took over {}; use fewer or \
                 simpler distinct patterns or split the scenario",
                format_seconds(self.max_time)
            ))
        } else {
            None
        };
        if over.is_some() {
            self.exhausted = true;
            return Err(Refusal::Budget(over));
        }
        let outcome = outcome.map(|checked| checked.regex);
        self.seen.insert(source.to_string(), outcome.clone());
        outcome.map_err(Refusal::Pattern)
    }
}
