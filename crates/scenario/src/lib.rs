//! Scenario XML model, parser and checker.
//!
//! A scenario file describes how to drive a firmware's serial console: what to send, which
//! output to expect, which host commands to run. [`parse`] turns the XML text into a
//! [`Scenario`] or into a [`ParseError`] listing every problem it found, each with its line
//! and column. The crate is pure: it does no I/O (it only reads the clock, to time regular
//! expressions) and never panics on any input; its memory and time are bounded for any input
//! (see [`parse`] and the `MAX_*` constants).
//!
//! The user reference of the format is `docs/scenarios.md` in the repository.
//!
//! Text content of `<send>`, `<expect>`, `<expect-not>`, `<run>`, `<fail-pattern>` and
//! `<description>` is taken exactly as written (after XML entity and CDATA decoding) except
//! that leading and trailing whitespace (space, tab, CR, LF) written literally in the file is
//! trimmed; whitespace written as a character reference (`&#32;`, `&#13;`) or inside CDATA
//! is kept.

#![warn(missing_docs)]

mod parse;
mod position;
mod prescan;
mod text;

#[cfg(test)]
mod fuzz_tests;

use std::fmt;
use std::time::Duration;

pub use parse::parse;

/// Scenario format version this crate reads (the optional `version` attribute of `<scenario>`).
pub const FORMAT_VERSION: &str = "1";
/// Largest scenario file [`parse`] accepts, in bytes.
pub const MAX_SOURCE_BYTES: usize = 4 * 1024 * 1024;
/// Longest scenario or test case name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest test case id, in characters.
pub const MAX_ID_CHARS: usize = 100;
/// Largest timeout of any kind (24 hours).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);
/// Most `retries` a `<scenario>` or `<testcase>` may ask for (re-runs of a failed case).
pub const MAX_RETRIES: u8 = testarena_core::limits::MAX_RETRIES;
/// Longest `<sleep>`, in milliseconds (1 hour).
pub const MAX_SLEEP_MS: u64 = 3_600_000;
/// Scenario timeout when `<scenario timeout>` is absent.
pub const DEFAULT_SCENARIO_TIMEOUT: Duration = Duration::from_secs(600);
/// Test case timeout when `<testcase timeout>` is absent (capped at the scenario timeout).
pub const DEFAULT_CASE_TIMEOUT: Duration = Duration::from_secs(60);
/// `<expect>` timeout when its `timeout` attribute is absent.
pub const DEFAULT_EXPECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `<expect-not>` watch window when its `timeout` attribute is absent.
pub const DEFAULT_EXPECT_NOT_TIMEOUT: Duration = Duration::from_secs(1);
/// `<run>` timeout when its `timeout` attribute is absent.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many diagnostics are reported for one file.
pub const MAX_DIAGNOSTICS: usize = 100;
/// Deepest element nesting [`parse`] accepts (the root is level 1; a scenario needs 3). Checked
/// on the raw text before the XML parser runs, because that parser recurses once per level.
pub const MAX_DEPTH: usize = 32;
/// Most elements one scenario file may hold; checked on the raw text before parsing.
pub const MAX_ELEMENTS: usize = 200_000;
/// Most XML nodes (elements, text runs, comments, processing instructions) the XML parser builds.
pub const MAX_XML_NODES: usize = 500_000;
/// Most test cases one scenario may have.
pub const MAX_TEST_CASES: usize = 10_000;
/// Most compiled regex size, summed over a file's distinct patterns (each counted as 16 KiB,
/// 128 KiB or 1 MiB, see [`testarena_core::validate::CheckedPattern::size`]).
pub const MAX_PATTERNS_SIZE: usize = 256 << 20;
/// Most time checking all of a file's distinct patterns may take (compiling and timing them).
pub const MAX_PATTERNS_CHECK_TIME: Duration = Duration::from_secs(5);
/// Longest time one search of a pattern may take on a worst-case 64 KiB console line.
pub const PATTERN_TIME_LIMIT: Duration = testarena_core::validate::PATTERN_TIME_LIMIT;

/// One parsed scenario file: global settings, setup, test cases and teardown.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Scenario name (attribute `name`, required, 1..=200 characters).
    pub name: String,
    /// Free text from the `description` attribute or the `<description>` element.
    pub description: Option<String>,
    /// Wall-clock limit of the whole scenario (attribute `timeout`, default 600 s).
    pub timeout: Duration,
    /// A case fails when the console is silent this long (attribute `idle-timeout`).
    pub idle_timeout: Option<Duration>,
    /// Whether the emulator boots once or once per test case (attribute `boot`).
    pub boot: BootMode,
    /// How many times a failed case is tried again (attribute `retries`, 0..=5); `None`: the
    /// queue's `retries` decides.
    pub retries: Option<u8>,
    /// All scenario-level `<fail-pattern>`s combined as `(?:a)|(?:b)`.
    pub fail_pattern: Option<regex::Regex>,
    /// Steps of `<setup>`, run after each boot before the cases.
    pub setup: Vec<Step>,
    /// The test cases in file order (at least one).
    pub cases: Vec<TestCase>,
    /// Steps of `<teardown>`, run after the last case.
    pub teardown: Vec<Step>,
}

/// When the emulator is (re)started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BootMode {
    /// One emulator run for all test cases (`boot="once"`, the default).
    #[default]
    Once,
    /// A fresh emulator for every test case (`boot="per-case"`).
    PerCase,
}

/// One `<testcase>`: its settings and steps.
#[derive(Debug, Clone)]
pub struct TestCase {
    /// Unique id (`[A-Za-z0-9_.-]{1,100}`), also used as a file name.
    pub id: String,
    /// Display name (attribute `name`, default the id).
    pub name: String,
    /// Wall-clock limit of this case (default 60 s, capped at the scenario timeout).
    pub timeout: Duration,
    /// Idle limit of this case; overrides the scenario's when set.
    pub idle_timeout: Option<Duration>,
    /// How many times this case is tried again when it fails (attribute `retries`, 0..=5);
    /// overrides the scenario's when set.
    pub retries: Option<u8>,
    /// The case's own `<fail-pattern>`s combined (see [`Scenario::fail_pattern_for`]).
    pub fail_pattern: Option<regex::Regex>,
    /// The steps in file order.
    pub steps: Vec<Step>,
}

/// One step with the source line of its element (1-based).
#[derive(Debug, Clone)]
pub struct Step {
    /// Line of the step's start tag in the scenario file.
    pub line: u32,
    /// What the step does.
    pub action: Action,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// `<send>`: write `text` to the console, then a newline unless `newline` is false.
    Send {
        /// Text to write (trimmed; may be empty).
        text: String,
        /// Whether a newline follows the text.
        newline: bool,
    },
    /// `<expect>`: wait up to `timeout` for a line matching `pattern`.
    Expect {
        /// Regular expression tried on each line.
        pattern: regex::Regex,
        /// How long to wait.
        timeout: Duration,
    },
    /// `<expect-not>`: fail if `pattern` shows up within `timeout`.
    ExpectNot {
        /// Regular expression that must not appear.
        pattern: regex::Regex,
        /// How long to watch.
        timeout: Duration,
    },
    /// `<run>`: run `command` on the host with `sh -c`.
    Run {
        /// Shell command line.
        command: String,
        /// Kill the command after this long.
        timeout: Duration,
        /// Exit code that counts as success.
        exit_code: i32,
    },
    /// `<sleep>`: wait without looking at the console.
    Sleep {
        /// How long to wait.
        duration: Duration,
    },
    /// `<reboot/>`: restart the emulator and wait for it to be ready again.
    Reboot,
}

/// One problem in a scenario file, with its 1-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// What is wrong, naming the element or attribute.
    pub message: String,
}

/// Why a scenario file was rejected: every problem found, in source order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", join_lines(.diagnostics))]
pub struct ParseError {
    /// The problems, sorted by position; never empty.
    pub diagnostics: Vec<Diagnostic>,
}

fn join_lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(Diagnostic::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl BootMode {
    /// The attribute value: `"once"` or `"per-case"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Once => "once",
            BootMode::PerCase => "per-case",
        }
    }
}

impl fmt::Display for BootMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Action {
    /// The element name of this step, e.g. `"expect-not"`.
    pub fn element_name(&self) -> &'static str {
        match self {
            Action::Send { .. } => "send",
            Action::Expect { .. } => "expect",
            Action::ExpectNot { .. } => "expect-not",
            Action::Run { .. } => "run",
            Action::Sleep { .. } => "sleep",
            Action::Reboot => "reboot",
        }
    }
}

impl fmt::Display for Action {
    /// A short human description for logs, e.g. `<expect> "login: "`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Send { text, newline } => {
                write!(f, "<send> {text:?}")?;
                if !newline {
                    f.write_str(" (no newline)")?;
                }
                Ok(())
            }
            Action::Expect { pattern, .. } | Action::ExpectNot { pattern, .. } => {
                write!(f, "<{}> {:?}", self.element_name(), pattern.as_str())
            }
            Action::Run { command, .. } => write!(f, "<run> {command:?}"),
            Action::Sleep { duration } => write!(f, "<sleep> {}", format_seconds(*duration)),
            Action::Reboot => f.write_str("<reboot>"),
        }
    }
}

impl fmt::Display for Step {
    /// The action and its source line, e.g. `<expect> "ok" (line 12)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (line {})", self.action, self.line)
    }
}

impl Scenario {
    /// One line for `testarena validate`, e.g. `smoke: 3 test cases, boot once, timeout 300s`
    /// (and `, retries 2` when the scenario sets them).
    pub fn summary(&self) -> String {
        let n = self.cases.len();
        let retries = self
            .retries
            .map(|r| format!(", retries {r}"))
            .unwrap_or_default();
        format!(
            "{}: {} test case{}, boot {}, timeout {}{retries}",
            self.name,
            n,
            if n == 1 { "" } else { "s" },
            self.boot,
            format_seconds(self.timeout)
        )
    }

    /// How many times `case` is tried again when it fails: the case's `retries`, else the
    /// scenario's, else `default` (the queue's).
    pub fn retries_for(&self, case: &TestCase, default: u8) -> u8 {
        case.retries.or(self.retries).unwrap_or(default)
    }

    /// The fail pattern in force while `case` runs: the scenario's and the case's combined.
    pub fn fail_pattern_for(&self, case: &TestCase) -> Option<regex::Regex> {
        match (&self.fail_pattern, &case.fail_pattern) {
            (None, None) => None,
            (Some(a), None) => Some(a.clone()),
            (None, Some(b)) => Some(b.clone()),
            // `parse` checked that this combination compiles; the fallback is for hand-built values.
            (Some(a), Some(b)) => combine_patterns(&[a.as_str(), b.as_str()])
                .ok()
                .or_else(|| Some(b.clone())),
        }
    }

    /// The idle timeout in force while `case` runs (the case's, else the scenario's).
    pub fn idle_timeout_for(&self, case: &TestCase) -> Option<Duration> {
        case.idle_timeout.or(self.idle_timeout)
    }
}

/// Formats a duration as seconds for messages: `300s`, `0.5s`.
pub fn format_seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Compiled size limit of one pattern: Unicode classes are large, `\w{1,32}` alone is over it
/// (`\w+` and `(?-u:\w){1,32}` are small). It also bounds the worst search time on any line.
pub const REGEX_SIZE_LIMIT: usize = testarena_core::validate::PATTERN_SIZE_LIMIT;

/// Compiles a pattern the way scenario patterns are compiled (with [`REGEX_SIZE_LIMIT`]),
/// without the timing [`parse`] does on every pattern.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// Combines regex sources into one alternation `(?:a)|(?:b)`; a single pattern stays as is.
pub(crate) fn combine_patterns(patterns: &[&str]) -> Result<regex::Regex, regex::Error> {
    compile_regex(&combined_source(patterns))
}

/// The source of the alternation `(?:a)|(?:b)` of `patterns`; a single pattern stays as is.
///
/// Inline flags like `(?i)` stay inside their group. A pattern in `(?x)` mode that ends in a
/// `#` comment gets a newline before its closing parenthesis, so the comment ends there.
pub(crate) fn combined_source(patterns: &[&str]) -> String {
    match patterns {
        [single] => single.to_string(),
        many => many
            .iter()
            .map(|p| {
                let plain = format!("(?:{p})");
                if p.contains('#') && compile_regex(&plain).is_err() {
                    format!("(?:{p}\n)")
                } else {
                    plain
                }
            })
            .collect::<Vec<_>>()
            .join("|"),
    }
}
