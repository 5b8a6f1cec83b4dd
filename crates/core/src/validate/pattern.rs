//! User-written regular expressions (scenario patterns, `[emulator] ready`) checked before
//! they run: compiled within a size limit, and timed on worst-case lines so that no pattern
//! can stall the console.

use std::time::{Duration, Instant};

/// Largest compiled size of one user-written regular expression (scenario patterns,
/// `[emulator] ready`), in bytes. It bounds memory, compile time and the worst search time
/// on any line, also for a pattern that [`check_pattern`]'s timing would not catch.
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;
/// Length of the worst-case console line [`check_pattern`] times a pattern on, in bytes: the
/// longest line the runner matches, [`crate::limits::MAX_LINE`].
pub const PATTERN_LINE_BYTES: usize = crate::limits::MAX_LINE;
/// Longest time one search (`is_match` or `find`) of a user pattern may take on a worst-case
/// line of [`PATTERN_LINE_BYTES`].
pub const PATTERN_TIME_LIMIT: Duration = Duration::from_millis(50);

/// Compiled-size classes [`check_pattern`] reports in [`CheckedPattern::size`]: a pattern
/// counts as the smallest class it compiles within.
const PATTERN_SIZE_CLASSES: [usize; 3] = [16 << 10, 128 << 10, PATTERN_SIZE_LIMIT];
/// Line lengths timed in turn, so that a slow pattern is refused on a short line, cheaply.
const PATTERN_PROBE_LENGTHS: [usize; 4] = [1 << 10, 4 << 10, 16 << 10, PATTERN_LINE_BYTES];

/// Why a user-written regular expression was refused; the text reads after the pattern,
/// e.g. "pattern `x` takes 80 ms on a 64 KiB line; …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Not valid `regex` syntax; holds the regex crate's one-line reason.
    #[error("is not a valid regular expression: {0}")]
    Syntax(String),
    /// Compiles to more than [`PATTERN_SIZE_LIMIT`].
    #[error(
        "is too large: compiled, it exceeds the size limit of {} MiB (counted repetitions of \
         Unicode classes are big: `\\w{{1,32}}` alone needs over 1 MiB; write `\\w+`, `(?-u:\\w){{1,32}}` \
         or `[A-Za-z0-9_]{{1,32}}` instead)",
        PATTERN_SIZE_LIMIT >> 20
    )]
    TooLarge,
    /// One search on a worst-case line takes longer than [`PATTERN_TIME_LIMIT`].
    #[error(
        "takes {}{} ms on a {} KiB line; the limit is {} ms",
        if *.complete { "" } else { "over " },
        .took.as_millis(),
        PATTERN_LINE_BYTES >> 10,
        PATTERN_TIME_LIMIT.as_millis()
    )]
    TooSlow {
        /// The slowest search measured.
        took: Duration,
        /// Whether it was measured on a full-length line (else on a shorter one already).
        complete: bool,
    },
}

/// A user pattern that passed [`check_pattern`], with what it costs.
#[derive(Debug, Clone)]
pub struct CheckedPattern {
    /// The compiled pattern (within [`PATTERN_SIZE_LIMIT`]).
    pub regex: regex::Regex,
    /// Upper bound of its compiled size in bytes: 16 KiB, 128 KiB or [`PATTERN_SIZE_LIMIT`].
    pub size: usize,
    /// Its slowest search on a worst-case line of [`PATTERN_LINE_BYTES`].
    pub line_time: Duration,
    /// Wall time spent compiling and timing it.
    pub check_time: Duration,
}

/// Compiles a user pattern within [`PATTERN_SIZE_LIMIT`], without timing it (for patterns
/// that passed [`check_pattern`] before, e.g. a combination the runner builds).
pub fn compile_pattern(pattern: &str) -> Result<regex::Regex, PatternError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| pattern_error(&e))
}

/// Compiles and checks a user-written pattern: valid syntax, compiled size within
/// [`PATTERN_SIZE_LIMIT`], and no search slower than [`PATTERN_TIME_LIMIT`] on worst-case
/// console lines of [`PATTERN_LINE_BYTES`] (`a` only, printable ASCII, random `a`/`b`).
/// The regex crate matches in linear time, but the constant can be large: `(?:.{0,30}){30}Q`
/// takes about 900 ms on 64 KiB of random `a`/`b`, `a.{600}Z` about 200 ms. A normal
/// pattern is checked in well under a millisecond; a slow one costs a few times the limit.
///
/// The timing is a heuristic: a line built for one pattern can be slower than these. The size
/// limit is the hard bound (with 1 MiB, about a second per 64 KiB line at worst).
/// A pattern that passed once is not timed again in the same process.
pub fn check_pattern(pattern: &str) -> Result<CheckedPattern, PatternError> {
    let start = Instant::now();
    let mut compiled = None;
    for (i, &limit) in PATTERN_SIZE_CLASSES.iter().enumerate() {
        match regex::RegexBuilder::new(pattern).size_limit(limit).build() {
            Ok(re) => {
                compiled = Some((re, limit));
                break;
            }
            Err(regex::Error::CompiledTooBig(_)) if i + 1 < PATTERN_SIZE_CLASSES.len() => {}
            Err(e) => return Err(pattern_error(&e)),
        }
    }
    let (regex, size) = compiled.ok_or(PatternError::TooLarge)?;
    let line_time = match timed_before(pattern) {
        Some(line_time) => line_time,
        None => {
            let line_time = pattern_line_time(&regex)?;
            remember_timing(pattern, line_time);
            line_time
        }
    };
    Ok(CheckedPattern {
        regex,
        size,
        line_time,
        check_time: start.elapsed(),
    })
}

fn pattern_error(e: &regex::Error) -> PatternError {
    match e {
        regex::Error::CompiledTooBig(_) => PatternError::TooLarge,
        other => {
            // The syntax error is a multi-line drawing; its last `error:` line is the cause.
            let text = other.to_string();
            let cause = text
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .map(str::to_string)
                .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "));
            PatternError::Syntax(cause)
        }
    }
}

/// Patterns that passed the timing in this process and their line time, so that checking one
/// again (the same scenario parsed for every queue) costs only its compile. Refusals are not
/// kept: one measured on a busy machine is measured again next time.
type TimingMemo = std::sync::Mutex<(std::collections::HashMap<String, Duration>, usize)>;

/// Text held by the timing memo before it is emptied.
const TIMING_MEMO_BYTES: usize = 1 << 20;

fn timing_memo() -> &'static TimingMemo {
    static MEMO: std::sync::OnceLock<TimingMemo> = std::sync::OnceLock::new();
    MEMO.get_or_init(Default::default)
}

fn timed_before(pattern: &str) -> Option<Duration> {
    let memo = timing_memo().lock().unwrap_or_else(|e| e.into_inner());
    memo.0.get(pattern).copied()
}

fn remember_timing(pattern: &str, line_time: Duration) {
    if pattern.len() > TIMING_MEMO_BYTES / 16 {
        return;
    }
    let mut memo = timing_memo().lock().unwrap_or_else(|e| e.into_inner());
    if memo.1 + pattern.len() > TIMING_MEMO_BYTES {
        *memo = Default::default();
    }
    memo.1 += pattern.len();
    memo.0.insert(pattern.to_string(), line_time);
}

/// The worst-case lines: 64 KiB of `a`; 64 KiB cycling through printable ASCII; 64 KiB of
/// `a` and `b` in a fixed pseudo-random order (it makes the lazy DFA of patterns like
/// `a.{100}Z` meet ever new states, where the first two lines keep it in a few).
fn probe_lines() -> &'static [String; 3] {
    static LINES: std::sync::OnceLock<[String; 3]> = std::sync::OnceLock::new();
    LINES.get_or_init(|| {
        let printable = (b' '..=b'~').map(char::from).cycle();
        // xorshift64: deterministic, so every check sees the same line.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let coin = std::iter::repeat_with(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x & 1 == 0 {
                'a'
            } else {
                'b'
            }
        });
        [
            "a".repeat(PATTERN_LINE_BYTES),
            printable.take(PATTERN_LINE_BYTES).collect(),
            coin.take(PATTERN_LINE_BYTES).collect(),
        ]
    })
}

/// The slowest of `is_match` and `find` on `line`.
fn search_time(regex: &regex::Regex, line: &str) -> Duration {
    let start = Instant::now();
    std::hint::black_box(regex.is_match(std::hint::black_box(line)));
    let is_match = start.elapsed();
    let start = Instant::now();
    std::hint::black_box(regex.find(std::hint::black_box(line)));
    is_match.max(start.elapsed())
}

/// Times `regex` on ever longer prefixes of the probe lines; refuses it at the first prefix
/// on which it is over the limit, so a very slow pattern is never run on a full line.
fn pattern_line_time(regex: &regex::Regex) -> Result<Duration, PatternError> {
    // A clone has its own search caches, dropped here rather than kept with the pattern.
    let probe = regex.clone();
    let mut worst = Duration::ZERO;
    for line in probe_lines() {
        for length in PATTERN_PROBE_LENGTHS {
            let part = line.get(..length).unwrap_or(line);
            let mut took = search_time(&probe, part);
            // A busy machine can stall one measurement: confirm a narrow excess twice.
            for _ in 0..2 {
                if took <= PATTERN_TIME_LIMIT || took >= 3 * PATTERN_TIME_LIMIT {
                    break;
                }
                took = took.min(search_time(&probe, part));
            }
            if took > PATTERN_TIME_LIMIT {
                return Err(PatternError::TooSlow {
                    took,
                    complete: length >= PATTERN_LINE_BYTES,
                });
            }
            worst = worst.max(took);
        }
    }
    Ok(worst)
}
