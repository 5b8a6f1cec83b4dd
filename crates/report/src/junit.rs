//! `junit.xml`: one testsuite per scenario, one testcase per case, written with `quick-junit`.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestRerun, TestSuite};
use testarena_core::CaseStatus;

/// One test case as it goes into the JUnit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JunitCase {
    /// The case id from the scenario.
    pub id: String,
    /// The human-readable case name (may be empty).
    pub name: String,
    /// The verdict.
    pub status: CaseStatus,
    /// How long the case ran.
    pub duration_ms: u64,
    /// Why the case failed, errored or was skipped.
    pub message: Option<String>,
    /// The case's log, whose tail goes into `<system-out>`.
    pub log: Option<CaseLog>,
    /// Its failed tries, in order, when it was tried more than once (retries): a flaky case's
    /// become `<flakyFailure>`s; a failed case's first is its `<failure>` and the others
    /// `<rerunFailure>`s (as Maven Surefire writes them). Empty for a case tried once.
    pub tries: Vec<JunitTry>,
}

/// One failed try of a case that was tried more than once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JunitTry {
    /// Which try (1-based).
    pub number: u32,
    /// What kind of failure, in a word (`expect-timeout`, `fail-pattern`, …): the `type`.
    pub kind: String,
    /// Why it failed (its first line is the `message`, all of it the `<stackTrace>`).
    pub message: String,
    /// How long it ran.
    pub duration_ms: u64,
    /// Its part of the case's log, whose tail goes into its `<system-out>`.
    pub log: Option<CaseLog>,
}

/// Where a case's log is: the byte range of the queue log it spans (a case's log is never a
/// file of its own while the queue runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseLog {
    /// The queue log.
    pub file: PathBuf,
    /// Its first byte.
    pub from: u64,
    /// The byte after its last.
    pub to: u64,
    /// What the reader knows it as (`TC_PING.log`).
    pub name: String,
}

impl CaseLog {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.to.saturating_sub(self.from)
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One scenario as it goes into the JUnit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JunitSuite {
    /// The scenario name (or its file when it has none).
    pub name: String,
    /// The scenario file, relative to the repository.
    pub file: String,
    /// A task-level error (e.g. the scenario is invalid): reported as an extra testcase named after the file, with `<error>`.
    pub error: Option<String>,
    /// The cases of the scenario.
    pub cases: Vec<JunitCase>,
}

/// Most of one case log copied into `<system-out>` (its last bytes; the whole log is a link
/// away). Kept small because `quick-junit` passes every byte through an ANSI-escape parser at
/// ~240 instructions per byte (callgrind): a 1 MiB tail cost ~80 ms of CPU per case.
const LOG_TAIL_MAX: u64 = 128 * 1024;

/// Most case log copied into the whole file; later cases only point at their log.
const LOG_TOTAL_MAX: u64 = 16 * 1024 * 1024;

/// Longest `message=` attribute; the full message goes into the element's text.
const MESSAGE_ATTR_MAX: usize = 1000;

/// Writes `junit.xml` for a queue: one `<testsuite>` per scenario, one `<testcase>` per case.
///
/// Counts (`tests`, `failures`, `errors`, `skipped`) are set on `<testsuites>` and each
/// `<testsuite>`; times are in seconds. Each testcase is named `<id>: <name>` (just `<id>`
/// when the name is empty or the same) with the scenario name as `classname`. Case status:
/// failed → `<failure>`, error → `<error>`, skipped → `<skipped>`; a case still pending is
/// reported skipped and one still running as an error. A case tried more than once (retries)
/// is written as Maven Surefire writes re-runs: flaky → no `<failure>`, one `<flakyFailure>`
/// per failed try; failed every time → the first try's `<failure>` and a `<rerunFailure>` per
/// later try (each with `type`, `time`, `<stackTrace>` and its part of the log).
/// `<system-out>` holds the last 128 KiB of the case log (with a note when cut; at most 16 MiB
/// of logs per file). Text is made XML-safe: ANSI escapes and XML-invalid characters are
/// removed. Written atomically.
pub fn write_junit(path: &Path, queue_name: &str, suites: &[JunitSuite]) -> io::Result<()> {
    let mut report = Report::new(xml_safe(queue_name));
    let mut budget = LOG_TOTAL_MAX;
    let mut total = Duration::ZERO;
    for suite in suites {
        let mut ts = TestSuite::new(xml_safe(&suite.name));
        ts.extra.insert("file".into(), xml_safe(&suite.file).into());
        let mut suite_time = Duration::ZERO;
        if let Some(error) = &suite.error {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            set_message(&mut status, error);
            let mut tc = TestCase::new(xml_safe(&suite.file), status);
            tc.set_classname(xml_safe(&suite.name));
            ts.add_test_case(tc);
        }
        for case in &suite.cases {
            let time = Duration::from_millis(case.duration_ms);
            suite_time += time;
            let mut tc = TestCase::new(xml_safe(&case_title(case)), case_status(case, &mut budget));
            tc.set_classname(xml_safe(&suite.name));
            tc.set_time(time);
            if let Some(log) = &case.log {
                if let Some(out) = log_tail(log, &mut budget) {
                    tc.set_system_out(xml_safe(&out));
                }
            }
            ts.add_test_case(tc);
        }
        ts.set_time(suite_time);
        total += suite_time;
        report.add_test_suite(ts);
    }
    report.set_time(total);
    super::write_atomically(path, |out| report.serialize(out).map_err(io::Error::other))
}

/// The testcase name: `<id>: <name>`, or `<id>` alone.
fn case_title(case: &JunitCase) -> Cow<'_, str> {
    if case.name.is_empty() || case.name == case.id {
        Cow::Borrowed(&case.id)
    } else {
        Cow::Owned(format!("{}: {}", case.id, case.name))
    }
}

/// The JUnit status (with its message) of a case, with its earlier tries (see
/// [`JunitCase::tries`]), whose logs are charged against `budget`.
fn case_status(case: &JunitCase, budget: &mut u64) -> TestCaseStatus {
    let (mut status, fallback) = match case.status {
        CaseStatus::Passed => return TestCaseStatus::success(),
        CaseStatus::Flaky => {
            let mut status = TestCaseStatus::success();
            status.add_reruns(case.tries.iter().map(|t| rerun(t, budget)));
            return status;
        }
        CaseStatus::Failed => (
            TestCaseStatus::non_success(NonSuccessKind::Failure),
            "case failed",
        ),
        CaseStatus::Error => (
            TestCaseStatus::non_success(NonSuccessKind::Error),
            "case error",
        ),
        CaseStatus::Skipped => (TestCaseStatus::skipped(), ""),
        CaseStatus::Pending => (TestCaseStatus::skipped(), "not run"),
        CaseStatus::Running => (
            TestCaseStatus::non_success(NonSuccessKind::Error),
            "case did not finish",
        ),
    };
    // Tried more than once and failed every time: the first try is the `<failure>`, the
    // others re-runs. An error (a stop) after failed tries has them all as re-runs.
    let (first, reruns) = match (case.status, case.tries.split_first()) {
        (CaseStatus::Failed, Some((first, rest))) => (Some(first), rest),
        _ => (None, &case.tries[..]),
    };
    let message = first
        .map(|t| t.message.as_str())
        .or(case.message.as_deref());
    match message.filter(|m| !m.trim().is_empty()) {
        Some(message) => set_message(&mut status, message),
        None if !fallback.is_empty() => {
            status.set_message(fallback);
        }
        None => {}
    }
    if let Some(t) = first {
        status.set_type(xml_safe(&t.kind));
    }
    status.add_reruns(reruns.iter().map(|t| rerun(t, budget)));
    status
}

/// A failed try as a `<flakyFailure>` / `<rerunFailure>`: `message` (first line), `type`,
/// `time`, the whole message as `<stackTrace>` and the tail of its log as `<system-out>`.
fn rerun(t: &JunitTry, budget: &mut u64) -> TestRerun {
    let mut r = TestRerun::new(NonSuccessKind::Failure);
    let message = t.message.trim_end();
    let first = message.lines().next().unwrap_or_default();
    let short = match first.char_indices().nth(MESSAGE_ATTR_MAX) {
        Some((cut, _)) => &first[..cut],
        None => first,
    };
    r.set_message(xml_safe(&format!("try {}: {short}", t.number)));
    r.set_type(xml_safe(&t.kind));
    r.set_time(Duration::from_millis(t.duration_ms));
    if !message.is_empty() {
        r.set_stack_trace(xml_safe(message));
    }
    if let Some(out) = t.log.as_ref().and_then(|log| log_tail(log, budget)) {
        r.set_system_out(xml_safe(&out));
    }
    r
}

/// Sets the `message=` attribute (first line, capped) and, when that is not all of it, the full message as text.
fn set_message(status: &mut TestCaseStatus, message: &str) {
    let message = message.trim_end();
    let first = message.lines().next().unwrap_or_default();
    let short = match first.char_indices().nth(MESSAGE_ATTR_MAX) {
        Some((cut, _)) => &first[..cut],
        None => first,
    };
    status.set_message(xml_safe(short));
    if short.len() != message.len() {
        status.set_description(xml_safe(message));
    }
}

/// The tail of a case log for `<system-out>`, charged against `budget`; `None` if there is no such file.
fn log_tail(log: &CaseLog, budget: &mut u64) -> Option<String> {
    let name = &log.name;
    if *budget < 4096 {
        return Some(format!(
            "[TestArena: log not included (report size limit); see {name}]\n"
        ));
    }
    let cap = LOG_TAIL_MAX.min(*budget);
    match read_tail(log, cap) {
        Ok((text, 0)) => {
            *budget -= text.len() as u64;
            Some(text)
        }
        Ok((text, cut)) => {
            *budget -= text.len() as u64;
            Some(format!(
                "[TestArena: the first {cut} bytes of this log were cut; the full log is {name}]\n{text}"
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("[TestArena: could not read {name}: {e}]\n")),
    }
}

/// The last `cap` bytes of a case log, starting at a line boundary, and how many bytes before
/// them were left out.
fn read_tail(log: &CaseLog, cap: u64) -> io::Result<(String, u64)> {
    let mut file = File::open(&log.file)?;
    let len = log.len();
    let cut = len.saturating_sub(cap);
    file.seek(SeekFrom::Start(log.from + cut))?;
    let mut buf = Vec::with_capacity(usize::try_from(len.min(cap)).unwrap_or(0));
    file.take(len - cut).read_to_end(&mut buf)?;
    let mut start = 0;
    if cut > 0 {
        if let Some(p) = buf.iter().position(|&b| b == b'\n') {
            start = p + 1;
        }
    }
    let text = String::from_utf8_lossy(&buf[start..]).into_owned();
    Ok((text, cut + start as u64))
}

/// `text` without the characters XML 1.0 forbids that `quick-junit` leaves in (U+FFFE, U+FFFF);
/// it removes control characters and ANSI escapes itself.
fn xml_safe(text: &str) -> Cow<'_, str> {
    if text.contains(['\u{fffe}', '\u{ffff}']) {
        Cow::Owned(text.replace(['\u{fffe}', '\u{ffff}'], "\u{fffd}"))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::TempDir;
    use super::*;

    fn whole(path: &Path, len: u64) -> CaseLog {
        CaseLog {
            file: path.to_path_buf(),
            from: 0,
            to: len,
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
        }
    }

    fn case(id: &str, status: CaseStatus, message: Option<&str>) -> JunitCase {
        JunitCase {
            id: id.into(),
            name: format!("{id} name"),
            status,
            duration_ms: 1500,
            message: message.map(Into::into),
            log: None,
            tries: Vec::new(),
        }
    }

    fn attr<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> &'a str {
        node.attribute(name)
            .unwrap_or_else(|| panic!("no {name} on {node:?}"))
    }

    fn counts<'a>(node: roxmltree::Node<'a, '_>) -> [&'a str; 4] {
        [
            attr(node, "tests"),
            attr(node, "failures"),
            attr(node, "errors"),
            attr(node, "skipped"),
        ]
    }

    #[test]
    fn counts_names_and_messages() {
        let dir = TempDir::new("junit");
        let path = dir.path().join("junit.xml");
        let suites = vec![
            JunitSuite {
                name: "smoke".into(),
                file: "scenarios/smoke.xml".into(),
                error: None,
                cases: vec![
                    case("TC_PING", CaseStatus::Passed, None),
                    case(
                        "TC_ECHO",
                        CaseStatus::Failed,
                        Some("expect /^echo$/ timed out after 5 s"),
                    ),
                    case(
                        "TC_BOOM",
                        CaseStatus::Error,
                        Some("emulator exited\nwith code 1"),
                    ),
                    case(
                        "TC_LATER",
                        CaseStatus::Skipped,
                        Some("previous case failed"),
                    ),
                ],
            },
            JunitSuite {
                name: "broken".into(),
                file: "scenarios/broken.xml".into(),
                error: Some("scenario invalid: line 3: unknown element <sned>".into()),
                cases: vec![],
            },
        ];
        write_junit(&path, "queue 7", &suites).unwrap();
        let xml = std::fs::read_to_string(&path).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();

        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "testsuites");
        assert_eq!(attr(root, "name"), "queue 7");
        assert_eq!(counts(root), ["5", "1", "2", "1"]);
        assert_eq!(attr(root, "time"), "6.000");

        let suites: Vec<_> = root
            .children()
            .filter(|n| n.has_tag_name("testsuite"))
            .collect();
        assert_eq!(suites.len(), 2);
        assert_eq!(attr(suites[0], "name"), "smoke");
        assert_eq!(attr(suites[0], "file"), "scenarios/smoke.xml");
        assert_eq!(counts(suites[0]), ["4", "1", "1", "1"]);
        assert_eq!(attr(suites[1], "name"), "broken");
        assert_eq!(counts(suites[1]), ["1", "0", "1", "0"]);

        let cases: Vec<_> = suites[0]
            .children()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        let names: Vec<_> = cases.iter().map(|c| attr(*c, "name")).collect();
        assert_eq!(
            names,
            [
                "TC_PING: TC_PING name",
                "TC_ECHO: TC_ECHO name",
                "TC_BOOM: TC_BOOM name",
                "TC_LATER: TC_LATER name"
            ]
        );
        assert!(cases
            .iter()
            .all(|c| attr(*c, "classname") == "smoke" && attr(*c, "time") == "1.500"));
        assert_eq!(cases[0].children().filter(|n| n.is_element()).count(), 0);

        let failure = cases[1]
            .children()
            .find(|n| n.has_tag_name("failure"))
            .unwrap();
        assert_eq!(
            attr(failure, "message"),
            "expect /^echo$/ timed out after 5 s"
        );
        let error = cases[2]
            .children()
            .find(|n| n.has_tag_name("error"))
            .unwrap();
        assert_eq!(attr(error, "message"), "emulator exited");
        assert_eq!(error.text(), Some("emulator exited\nwith code 1"));
        let skipped = cases[3]
            .children()
            .find(|n| n.has_tag_name("skipped"))
            .unwrap();
        assert_eq!(attr(skipped, "message"), "previous case failed");

        let broken: Vec<_> = suites[1]
            .children()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        assert_eq!(broken.len(), 1);
        assert_eq!(attr(broken[0], "name"), "scenarios/broken.xml");
        let error = broken[0]
            .children()
            .find(|n| n.has_tag_name("error"))
            .unwrap();
        assert_eq!(
            attr(error, "message"),
            "scenario invalid: line 3: unknown element <sned>"
        );
        assert!(!super::super::temp_sibling(&path).exists());
    }

    #[test]
    fn hostile_logs_stay_well_formed() {
        let dir = TempDir::new("junit-hostile");
        let log = dir.path().join("TC_X.log");
        let mut content = Vec::new();
        content.extend_from_slice(b"2026-11-25T15:08:56.123Z | \x1b[0;31mE (1) red\x1b[0m ]]> <![CDATA[ & </system-out>\n");
        content.extend_from_slice(
            b"raw \x00\x01\x08\x0b\x0c\x1f bytes \xff\xfe and \xef\xbf\xbf and \xef\xbf\xbe\n",
        );
        std::fs::write(&log, &content).unwrap();
        let mut c = case(
            "TC_X",
            CaseStatus::Failed,
            Some("bad \u{1}\u{ffff} <tag> ]]> \x1b[31mred"),
        );
        c.name = String::new();
        c.log = Some(whole(&log, content.len() as u64));
        let mut missing = case("TC_Y", CaseStatus::Pending, None);
        missing.log = Some(whole(&dir.path().join("none.log"), 10));
        let suites = [JunitSuite {
            name: "s\u{0}\u{fffe}".into(),
            file: "f.xml".into(),
            error: None,
            cases: vec![c, missing],
        }];
        let path = dir.path().join("junit.xml");
        write_junit(&path, "q", &suites).unwrap();
        let xml = std::fs::read_to_string(&path).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let cases: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        assert_eq!(attr(cases[0], "name"), "TC_X");
        let out = cases[0]
            .children()
            .find(|n| n.has_tag_name("system-out"))
            .unwrap()
            .text()
            .unwrap();
        assert!(
            out.contains("E (1) red ]]> <![CDATA[ & </system-out>"),
            "{out}"
        );
        assert!(
            out.contains("raw  bytes \u{fffd}\u{fffd} and \u{fffd} and \u{fffd}"),
            "{out:?}"
        );
        let failure = cases[0]
            .children()
            .find(|n| n.has_tag_name("failure"))
            .unwrap();
        assert_eq!(attr(failure, "message"), "bad \u{fffd} <tag> ]]> red");
        // Pending: skipped with a reason, no system-out for a missing log.
        let skipped = cases[1]
            .children()
            .find(|n| n.has_tag_name("skipped"))
            .unwrap();
        assert_eq!(attr(skipped, "message"), "not run");
        assert!(cases[1].children().all(|n| !n.has_tag_name("system-out")));
        let root = doc.root_element();
        assert_eq!(counts(root), ["2", "1", "0", "1"]);
    }

    #[test]
    fn long_logs_keep_their_tail() {
        let dir = TempDir::new("junit-tail");
        let log = dir.path().join("TC_BIG.log");
        let mut content = String::new();
        let mut n = 0;
        while content.len() as u64 <= LOG_TAIL_MAX + 10_000 {
            content.push_str(&format!("2026-11-25T15:08:56.123Z | line {n}\n"));
            n += 1;
        }
        // The case's lines sit in the middle of the queue log.
        let queue = format!("before\n{content}after\n");
        std::fs::write(&log, &queue).unwrap();
        let mut c = case("TC_BIG", CaseStatus::Passed, None);
        c.log = Some(CaseLog {
            file: log,
            from: 7,
            to: 7 + content.len() as u64,
            name: "TC_BIG.log".into(),
        });
        let path = dir.path().join("junit.xml");
        write_junit(
            &path,
            "q",
            &[JunitSuite {
                name: "s".into(),
                file: "s.xml".into(),
                error: None,
                cases: vec![c],
            }],
        )
        .unwrap();
        let xml = std::fs::read_to_string(&path).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let out = doc
            .descendants()
            .find(|n| n.has_tag_name("system-out"))
            .unwrap()
            .text()
            .unwrap();
        assert!(out.starts_with("[TestArena: the first "), "{}", &out[..200]);
        assert!(out.contains("bytes of this log were cut; the full log is TC_BIG.log]\n2026-11-25T15:08:56.123Z | line "));
        assert!(out.ends_with(&format!("| line {}\n", n - 1)));
        assert!(out.len() as u64 <= LOG_TAIL_MAX + 200);
        assert!(!out.contains("| line 0\n"));
        assert!(
            !out.contains("after") && !out.contains("before"),
            "only the case's range"
        );
    }

    #[test]
    fn tail_starts_at_a_line_and_counts_what_was_cut() {
        let dir = TempDir::new("junit-readtail");
        let log = dir.path().join("a.log");
        std::fs::write(&log, "aaaa\nbbbb\ncccc\n").unwrap();
        let log = whole(&log, 15);
        assert_eq!(
            read_tail(&log, 100).unwrap(),
            ("aaaa\nbbbb\ncccc\n".into(), 0)
        );
        assert_eq!(read_tail(&log, 7).unwrap(), ("cccc\n".into(), 10));
        let mut budget = 3000;
        assert!(log_tail(&log, &mut budget)
            .unwrap()
            .contains("report size limit"));
        let mut budget = 10_000;
        assert_eq!(log_tail(&log, &mut budget).unwrap(), "aaaa\nbbbb\ncccc\n");
        assert_eq!(budget, 10_000 - 15);
    }

    fn failed_try(dir: &Path, number: u32, message: &str) -> JunitTry {
        let log = dir.join("queue.log");
        let line = format!("2026-11-25T15:08:56.123Z | output of try {number}\n");
        let mut all = std::fs::read(&log).unwrap_or_default();
        let from = all.len() as u64;
        all.extend_from_slice(line.as_bytes());
        std::fs::write(&log, &all).unwrap();
        JunitTry {
            number,
            kind: "exit-code".into(),
            message: message.into(),
            duration_ms: 250,
            log: Some(CaseLog {
                file: log,
                from,
                to: all.len() as u64,
                name: "TC.log".into(),
            }),
        }
    }

    #[test]
    fn retried_cases_are_written_as_surefire_writes_reruns() {
        let dir = TempDir::new("junit-retries");
        let mut flaky = case(
            "TC_FLAKY",
            CaseStatus::Flaky,
            Some("flaky: failed on try 1 (x), passed on try 2"),
        );
        flaky.tries = vec![failed_try(
            dir.path(),
            1,
            "command exited with code 1, expected 0\nlast lines",
        )];
        let mut failed = case(
            "TC_BAD",
            CaseStatus::Failed,
            Some("failed on all 3 tries: ..."),
        );
        failed.tries = vec![
            failed_try(dir.path(), 1, "first failure"),
            failed_try(dir.path(), 2, "second failure"),
            failed_try(dir.path(), 3, "third failure"),
        ];
        let suites = [JunitSuite {
            name: "s".into(),
            file: "s.xml".into(),
            error: None,
            cases: vec![flaky, failed, case("TC_OK", CaseStatus::Passed, None)],
        }];
        let path = dir.path().join("junit.xml");
        write_junit(&path, "q", &suites).unwrap();
        let xml = std::fs::read_to_string(&path).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        // A flaky case passed: it counts as no failure.
        assert_eq!(counts(doc.root_element()), ["3", "1", "0", "0"], "{xml}");
        let cases: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        let children = |n: roxmltree::Node| -> Vec<String> {
            n.children()
                .filter(|c| c.is_element())
                .map(|c| c.tag_name().name().to_string())
                .collect()
        };
        assert_eq!(children(cases[0]), ["flakyFailure"], "{xml}");
        let ff = cases[0].first_element_child().unwrap();
        assert_eq!(
            attr(ff, "message"),
            "try 1: command exited with code 1, expected 0"
        );
        assert_eq!(attr(ff, "type"), "exit-code");
        assert_eq!(attr(ff, "time"), "0.250");
        let child_text = |n: roxmltree::Node, tag: &str| -> String {
            n.children()
                .find(|c| c.has_tag_name(tag))
                .and_then(|c| c.text())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(
            child_text(ff, "stackTrace"),
            "command exited with code 1, expected 0\nlast lines"
        );
        assert!(child_text(ff, "system-out").contains("output of try 1"));
        assert_eq!(
            children(cases[1]),
            ["failure", "rerunFailure", "rerunFailure"],
            "{xml}"
        );
        let failure = cases[1].first_element_child().unwrap();
        assert_eq!(attr(failure, "message"), "first failure");
        assert_eq!(attr(failure, "type"), "exit-code");
        let reruns: Vec<_> = cases[1]
            .children()
            .filter(|c| c.has_tag_name("rerunFailure"))
            .collect();
        assert_eq!(attr(reruns[0], "message"), "try 2: second failure");
        assert!(child_text(reruns[1], "system-out").contains("output of try 3"));
        assert!(children(cases[2]).is_empty());
    }
}
