//! The scenario parser: XML → [`Scenario`], collecting every problem as a [`Diagnostic`].

use std::collections::HashMap;
use std::time::Duration;

use regex::Regex;
use roxmltree::{Document, Node, ParsingOptions};
use testarena_core::validate::{check_pattern, PatternError};

use crate::position::LineIndex;
use crate::{
    combined_source, format_seconds, Action, BootMode, Diagnostic, ParseError, Scenario, Step,
    TestCase, DEFAULT_CASE_TIMEOUT, DEFAULT_EXPECT_NOT_TIMEOUT, DEFAULT_EXPECT_TIMEOUT,
    DEFAULT_RUN_TIMEOUT, DEFAULT_SCENARIO_TIMEOUT, FORMAT_VERSION, MAX_DIAGNOSTICS, MAX_ID_CHARS,
    MAX_NAME_CHARS, MAX_PATTERNS_CHECK_TIME, MAX_PATTERNS_SIZE, MAX_RETRIES, MAX_SLEEP_MS,
    MAX_SOURCE_BYTES, MAX_TEST_CASES, MAX_TIMEOUT, MAX_XML_NODES,
};

mod budget;
use budget::*;

mod root;
mod steps;

const SCENARIO_ATTRIBUTES: &[&str] = &[
    "name",
    "version",
    "description",
    "timeout",
    "idle-timeout",
    "boot",
    "retries",
];
const SCENARIO_CHILDREN: &[&str] = &[
    "description",
    "fail-pattern",
    "setup",
    "testcase",
    "teardown",
];
const CASE_ATTRIBUTES: &[&str] = &["id", "name", "timeout", "idle-timeout", "retries"];
const STEP_ELEMENTS: &[&str] = &["send", "expect", "expect-not", "run", "sleep", "reboot"];
const CASE_CHILDREN: &[&str] = &[
    "fail-pattern",
    "send",
    "expect",
    "expect-not",
    "run",
    "sleep",
    "reboot",
];
/// Longest piece of user text quoted back in a message.
const QUOTE_CHARS: usize = 40;

/// Parses and checks a scenario file; on failure returns every problem found.
///
/// Bounded for any input: the file size, nesting depth and element count are checked before
/// the XML is parsed, the test case count before the cases are, and every regular expression
/// is compiled and timed within [`crate::REGEX_SIZE_LIMIT`] and [`crate::PATTERN_TIME_LIMIT`],
/// all of them together within [`MAX_PATTERNS_SIZE`] and [`MAX_PATTERNS_CHECK_TIME`].
pub fn parse(source: &str) -> Result<Scenario, ParseError> {
    parse_within(
        source,
        PatternBudget::new(MAX_PATTERNS_SIZE, MAX_PATTERNS_CHECK_TIME),
    )
}

/// [`parse`] with the given budget for the file's patterns (tests use small ones).
pub(crate) fn parse_within(source: &str, patterns: PatternBudget) -> Result<Scenario, ParseError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(ParseError {
            diagnostics: vec![Diagnostic {
                line: 1,
                column: 1,
                message: format!(
                    "the file has {} bytes; a scenario file may have at most {MAX_SOURCE_BYTES}",
                    source.len()
                ),
            }],
        });
    }
    let lines = LineIndex::new(source);
    // roxmltree recurses once per nesting level: refuse deep files before it sees them.
    if let Err(v) = crate::prescan::check(source) {
        let (line, column) = lines.position(v.offset);
        return Err(ParseError {
            diagnostics: vec![Diagnostic {
                line,
                column,
                message: v.message,
            }],
        });
    }
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: u32::try_from(MAX_XML_NODES).unwrap_or(u32::MAX),
    };
    let doc = match Document::parse_with_options(source, options) {
        Ok(doc) => doc,
        Err(e) => {
            return Err(ParseError {
                diagnostics: vec![xml_diagnostic(source, &lines, &e)],
            })
        }
    };
    let mut parser = Parser {
        source,
        lines,
        diagnostics: Vec::new(),
        truncated: false,
        patterns,
    };
    let scenario = parser.scenario(doc.root_element());
    parser.finish(scenario)
}

/// Turns a well-formedness error into a diagnostic at its position, without roxmltree's " at L:C".
fn xml_diagnostic(source: &str, lines: &LineIndex<'_>, e: &roxmltree::Error) -> Diagnostic {
    use roxmltree::Error as E;
    let (line, column) = match e {
        E::DtdDetected => lines.position(find_ascii_ci(source, "<!DOCTYPE").unwrap_or(0)),
        E::UnclosedRootNode | E::UnexpectedEndOfStream => lines.end(),
        _ => (e.pos().row, e.pos().col),
    };
    let text = e.to_string();
    let text = text.replace(&format!(" at {}", e.pos()), "");
    let message = match e {
        E::DtdDetected => "a DOCTYPE (DTD) is not allowed in a scenario file".to_string(),
        E::NodesLimitReached => format!(
            "more than {MAX_XML_NODES} XML nodes (elements, text runs, comments, processing \
             instructions); split the scenario into several files"
        ),
        _ => format!("not well-formed XML: {text}"),
    };
    Diagnostic {
        line,
        column,
        message,
    }
}

fn find_ascii_ci(haystack: &str, needle: &str) -> Option<usize> {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    if n.is_empty() || h.len() < n.len() {
        return None;
    }
    (0..=h.len() - n.len()).find(|&i| {
        h.get(i..i + n.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(n))
    })
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn trim_xml(s: &str) -> &str {
    s.trim_matches(is_xml_space)
}

/// Quotes user text for a message: shortened to [`QUOTE_CHARS`] characters, control
/// characters escaped (a backslash stays one backslash, so regexes read as written).
fn quote(s: &str) -> String {
    let mut out = String::from("`");
    for c in s.chars().take(QUOTE_CHARS) {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    if s.chars().nth(QUOTE_CHARS).is_some() {
        out.push('…');
    }
    out.push('`');
    out
}

/// Parses a number of seconds: digits, optionally a dot and up to 9 more digits; > 0 and <= 24 h.
pub(crate) fn parse_seconds(value: &str) -> Result<Duration, String> {
    let v = trim_xml(value);
    let (int, frac) = match v.split_once('.') {
        Some((i, f)) => (i, f),
        None => (v, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty()
        || !all_digits(int)
        || (v.contains('.') && (frac.is_empty() || !all_digits(frac)))
    {
        return Err(format!(
            "{} is not a number of seconds (write e.g. `5` or `0.5`)",
            quote(v)
        ));
    }
    if frac.len() > 9 {
        return Err(format!("{} has more than 9 decimal places", quote(v)));
    }
    let int = int.trim_start_matches('0');
    let too_large = || {
        format!(
            "{} is more than the maximum of {}",
            quote(v),
            format_seconds(MAX_TIMEOUT)
        )
    };
    if int.len() > 6 {
        return Err(too_large());
    }
    let secs: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| too_large())?
    };
    let nanos: u32 = format!("{frac:0<9}").parse().map_err(|_| too_large())?;
    let d = Duration::new(secs, nanos);
    if d.is_zero() {
        return Err(format!("{} must be greater than 0", quote(v)));
    }
    if d > MAX_TIMEOUT {
        return Err(too_large());
    }
    Ok(d)
}

/// Checks a test case id: `[A-Za-z0-9_.-]{1,100}`, not `.` or `..`.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.chars().count() > MAX_ID_CHARS {
        return Err(format!("is longer than {MAX_ID_CHARS} characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "{} may contain only letters A-Z a-z, digits, `_`, `.` and `-`",
            quote(id)
        ));
    }
    if id == "." || id == ".." {
        return Err(format!("{} is not a usable file name", quote(id)));
    }
    Ok(())
}

/// Checks a display name: 1..=200 characters, not blank, no control characters.
fn check_name(name: &str) -> Result<(), String> {
    if trim_xml(name).is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("is longer than {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

struct Parser<'s> {
    source: &'s str,
    lines: LineIndex<'s>,
    diagnostics: Vec<Diagnostic>,
    truncated: bool,
    patterns: PatternBudget,
}

/// What the attributes of `<scenario>` say.
struct ScenarioHead {
    name: String,
    description: Option<String>,
    timeout: Duration,
    idle_timeout: Option<Duration>,
    boot: BootMode,
    retries: Option<u8>,
}

/// What the children of `<scenario>` hold.
#[derive(Default)]
struct ScenarioBody {
    description: Option<String>,
    fail_patterns: Vec<FailPattern>,
    setup: Option<Vec<Step>>,
    teardown: Option<Vec<Step>>,
    cases: Vec<(TestCase, Vec<FailPattern>)>,
}

/// A parsed `<fail-pattern>` and the offset of its element.
struct FailPattern {
    regex: Regex,
    offset: usize,
}

impl<'s> Parser<'s> {
    fn finish(mut self, scenario: Option<Scenario>) -> Result<Scenario, ParseError> {
        self.diagnostics.sort_by_key(|d| (d.line, d.column));
        if self.truncated {
            let (line, column) = self
                .diagnostics
                .last()
                .map_or((1, 1), |d| (d.line, d.column));
            self.diagnostics.push(Diagnostic {
                line,
                column,
                message: format!("too many problems; only the first {MAX_DIAGNOSTICS} are shown"),
            });
        }
        match scenario {
            Some(s) if self.diagnostics.is_empty() => Ok(s),
            _ => {
                if self.diagnostics.is_empty() {
                    self.diagnostics.push(Diagnostic {
                        line: 1,
                        column: 1,
                        message: "invalid scenario".into(),
                    });
                }
                Err(ParseError {
                    diagnostics: self.diagnostics,
                })
            }
        }
    }

    fn error_at(&mut self, offset: usize, message: String) {
        if self.diagnostics.len() >= MAX_DIAGNOSTICS {
            self.truncated = true;
            return;
        }
        let (line, column) = self.lines.position(offset);
        self.diagnostics.push(Diagnostic {
            line,
            column,
            message,
        });
    }

    fn error(&mut self, node: Node<'_, '_>, message: String) {
        self.error_at(node.range().start, message);
    }

    fn line_of(&self, node: Node<'_, '_>) -> u32 {
        self.lines.position(node.range().start).0
    }

    /// The element's local name if it has no namespace (the format uses none), else `None`.
    fn plain_name<'a>(node: Node<'a, '_>) -> Option<&'a str> {
        let name = node.tag_name();
        if name.namespace().is_some() {
            return None;
        }
        Some(name.name())
    }

    /// The element's name as written in the source (with any prefix).
    fn written_name(&self, node: Node<'_, '_>) -> String {
        let start = node.range().start + 1;
        let written = self
            .source
            .get(start..)
            .map(|rest| {
                rest.split(|c: char| is_xml_space(c) || c == '>' || c == '/')
                    .next()
                    .unwrap_or("")
            })
            .unwrap_or("");
        if written.is_empty() {
            node.tag_name().name().to_string()
        } else {
            written.chars().take(QUOTE_CHARS).collect()
        }
    }

    fn unknown_element(&mut self, node: Node<'_, '_>, parent: &str, allowed: &[&str]) {
        let name = self.written_name(node);
        let hint = if node.tag_name().namespace().is_some() {
            "; scenario elements have no XML namespace".to_string()
        } else {
            format!(" (expected one of: {})", allowed.join(", "))
        };
        self.error(
            node,
            format!("unknown element <{name}> in <{parent}>{hint}"),
        );
    }

    fn check_attributes(&mut self, node: Node<'_, '_>, element: &str, allowed: &[&str]) {
        for attribute in node.attributes() {
            if attribute.namespace().is_none() && allowed.contains(&attribute.name()) {
                continue;
            }
            let written = self
                .source
                .get(attribute.range_qname())
                .unwrap_or(attribute.name());
            let hint = if allowed.is_empty() {
                format!("<{element}> takes no attributes")
            } else {
                format!("allowed: {}", allowed.join(", "))
            };
            self.error_at(
                attribute.range().start,
                format!(
                    "unknown attribute `{}` on <{element}> ({hint})",
                    written.escape_debug()
                ),
            );
        }
    }

    /// The value and offset of an un-namespaced attribute.
    fn attribute<'a>(node: Node<'a, '_>, name: &str) -> Option<(&'a str, usize)> {
        node.attributes()
            .find(|a| a.namespace().is_none() && a.name() == name)
            .map(|a| (a.value(), a.range().start))
    }

    fn required<'a>(
        &mut self,
        node: Node<'a, '_>,
        element: &str,
        name: &str,
    ) -> Option<(&'a str, usize)> {
        let found = Self::attribute(node, name);
        if found.is_none() {
            self.error(node, format!("<{element}> needs the attribute `{name}`"));
        }
        found
    }

    /// A seconds attribute; `None` when absent or invalid (then a diagnostic is recorded).
    fn seconds(&mut self, node: Node<'_, '_>, element: &str, name: &str) -> Option<Duration> {
        let (value, at) = Self::attribute(node, name)?;
        match parse_seconds(value) {
            Ok(d) => Some(d),
            Err(why) => {
                self.error_at(at, format!("attribute `{name}` of <{element}>: {why}"));
                None
            }
        }
    }

    /// The `retries` attribute (a whole number 0..=[`MAX_RETRIES`]); `None` when absent or
    /// invalid (then a diagnostic is recorded).
    fn retries(&mut self, node: Node<'_, '_>, element: &str) -> Option<u8> {
        let (value, at) = Self::attribute(node, "retries")?;
        let v = trim_xml(value);
        match v.parse::<u8>() {
            Ok(n) if n <= MAX_RETRIES && v.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => {
                let why = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                    format!("{} is more than the maximum of {MAX_RETRIES}", quote(v))
                } else {
                    format!("{} is not a whole number (write e.g. `2`)", quote(v))
                };
                self.error_at(
                    at,
                    format!("attribute `retries` of <{element}>: {why}; it says how many times a failed test case is tried again, from 0 to {MAX_RETRIES}"),
                );
                None
            }
        }
    }

    /// Reports non-whitespace text directly inside an element that holds only elements.
    fn no_text(&mut self, node: Node<'_, '_>, element: &str) {
        for child in node.children().filter(|c| c.is_text()) {
            let text = child.text().unwrap_or("");
            if trim_xml(text).is_empty() {
                continue;
            }
            let range = child.range();
            let raw = self.source.get(range.clone()).unwrap_or("");
            let skip = raw.len() - raw.trim_start_matches(is_xml_space).len();
            self.error_at(
                range.start + skip,
                format!(
                    "unexpected text {} in <{element}>, which holds only elements",
                    quote(trim_xml(text))
                ),
            );
        }
    }

    /// Reports any content of an element that must be empty.
    fn must_be_empty(&mut self, node: Node<'_, '_>, element: &str) {
        self.no_text(node, element);
        for child in node.children().filter(|c| c.is_element()) {
            let name = self.written_name(child);
            self.error(
                child,
                format!("unexpected element <{name}> in <{element}>, which must be empty"),
            );
        }
    }

    /// The text of an element that holds only text, trimmed of literal surrounding whitespace.
    fn text(&mut self, node: Node<'_, '_>, element: &str) -> String {
        for child in node.children().filter(|c| c.is_element()) {
            let name = self.written_name(child);
            self.error(
                child,
                format!("unexpected element <{name}> in <{element}>, which holds only text"),
            );
        }
        crate::text::element_text(self.source, node)
    }

    /// Compiles the text of `node` as a regex; empty patterns are rejected.
    fn pattern(&mut self, node: Node<'_, '_>, element: &str) -> Option<Regex> {
        let text = self.text(node, element);
        if text.is_empty() {
            self.error(
                node,
                format!("<{element}> needs a regular expression; it is empty"),
            );
            return None;
        }
        if self.truncated {
            // The file is refused already and no message would be shown: save the work.
            return None;
        }
        match self.patterns.check(&text) {
            Ok(re) => Some(re),
            Err(refusal) => {
                let message = match refusal {
                    Refusal::Pattern(PatternError::Syntax(cause)) => {
                        format!(
                            "bad regular expression {} in <{element}>: {cause}",
                            quote(&text)
                        )
                    }
                    Refusal::Pattern(e) => {
                        format!("regular expression {} in <{element}> {e}", quote(&text))
                    }
                    Refusal::Budget(None) => return None,
                    Refusal::Budget(Some(message)) => message,
                };
                self.error(node, message);
                None
            }
        }
    }

    fn fail_pattern(&mut self, node: Node<'_, '_>) -> Option<FailPattern> {
        self.check_attributes(node, "fail-pattern", &[]);
        let regex = self.pattern(node, "fail-pattern")?;
        Some(FailPattern {
            regex,
            offset: node.range().start,
        })
    }

    /// Combines fail patterns; reports at the first one when the combination does not compile.
    fn combine(&mut self, patterns: &[FailPattern], others: Option<&Regex>) -> Option<Regex> {
        let first = patterns.first()?;
        let mut sources: Vec<&str> = others.map(Regex::as_str).into_iter().collect();
        sources.extend(patterns.iter().map(|p| p.regex.as_str()));
        if others.is_none() && patterns.len() == 1 {
            return Some(first.regex.clone());
        }
        if self.truncated {
            return None;
        }
        match self.patterns.check(&combined_source(&sources)) {
            Ok(re) => Some(re),
            Err(refusal) => {
                let what = if others.is_some() {
                    " with the scenario's"
                } else {
                    ""
                };
                let message = match refusal {
                    Refusal::Pattern(PatternError::Syntax(cause)) => format!("these <fail-pattern>s cannot be combined{what} into one regular expression: {cause}"),
                    Refusal::Pattern(e) => format!("these <fail-pattern>s combined{what} into one regular expression: it {e}"),
                    Refusal::Budget(None) => return None,
                    Refusal::Budget(Some(message)) => message,
                };
                self.error_at(first.offset, message);
                None
            }
        }
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
