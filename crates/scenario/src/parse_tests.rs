use std::time::Duration;

use super::parse_seconds;
use crate::{format_seconds, parse, Action, BootMode, Diagnostic, ParseError, MAX_SOURCE_BYTES};

/// Wraps test cases and other children in a minimal valid `<scenario>` (the body starts on line 2).
fn doc(body: &str) -> String {
    format!("<scenario name=\"s\">\n{body}\n</scenario>\n")
}

/// 1-based line and column of the first occurrence of `needle` in `source`.
fn pos_of(source: &str, needle: &str) -> (u32, u32) {
    let offset = source
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in source"));
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line as u32, column as u32)
}

fn errors(source: &str) -> Vec<Diagnostic> {
    match parse(source) {
        Ok(s) => panic!("expected an error, parsed {:?}", s.summary()),
        Err(e) => e.diagnostics,
    }
}

/// Asserts exactly one diagnostic, at the first occurrence of `at`, whose message contains every `words`.
fn assert_one(source: &str, at: &str, words: &[&str]) {
    let diagnostics = errors(source);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    assert_diag(source, &diagnostics[0], at, words);
}

fn assert_diag(source: &str, d: &Diagnostic, at: &str, words: &[&str]) {
    assert_eq!((d.line, d.column), pos_of(source, at), "position of {d}");
    for w in words {
        assert!(d.message.contains(w), "{w:?} not in {:?}", d.message);
    }
}

const GOOD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment before the root is fine -->
<scenario name="smoke" version="1" timeout="300" idle-timeout="30" boot="per-case">
  <description>
    Boots &amp; checks the shell.
  </description>
  <fail-pattern>Guru Meditation</fail-pattern>
  <fail-pattern>abort\(\)</fail-pattern>
  <setup>
    <expect timeout="20">esp32&gt; $</expect>
  </setup>
  <testcase id="help" name="Help command" timeout="30.5" idle-timeout="5">
    <fail-pattern>Unknown command</fail-pattern>
    <send>help</send>
    <expect>^Commands:</expect>
    <expect-not timeout="0.25">error</expect-not>
    <send newline="false"><![CDATA[ <raw> & ]]></send>
    <run timeout="5" exit-code="3">test -f "$TESTARENA_FIRMWARE" &amp;&amp; exit 3</run>
    <sleep ms="100"/>
    <reboot/>
    <send/>
  </testcase>
  <testcase id="second.case-2"><send>x</send></testcase>
  <teardown><run>true</run></teardown>
</scenario>
"#;

#[test]
fn good_file_parses_with_all_values() {
    let s = parse(GOOD).unwrap();
    assert_eq!(s.name, "smoke");
    assert_eq!(s.description.as_deref(), Some("Boots & checks the shell."));
    assert_eq!(s.timeout, Duration::from_secs(300));
    assert_eq!(s.idle_timeout, Some(Duration::from_secs(30)));
    assert_eq!(s.boot, BootMode::PerCase);
    let fp = s.fail_pattern.as_ref().unwrap();
    assert_eq!(fp.as_str(), r"(?:Guru Meditation)|(?:abort\(\))");
    assert!(
        fp.is_match("x abort() y") && fp.is_match("Guru Meditation Error") && !fp.is_match("abort")
    );

    assert_eq!(s.setup.len(), 1);
    assert_eq!(s.setup[0].line, 10);
    match &s.setup[0].action {
        Action::Expect { pattern, timeout } => {
            assert_eq!(pattern.as_str(), "esp32> $");
            assert_eq!(*timeout, Duration::from_secs(20));
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(s.cases.len(), 2);
    let c = &s.cases[0];
    assert_eq!((c.id.as_str(), c.name.as_str()), ("help", "Help command"));
    assert_eq!(c.timeout, Duration::from_millis(30_500));
    assert_eq!(c.idle_timeout, Some(Duration::from_secs(5)));
    assert_eq!(c.fail_pattern.as_ref().unwrap().as_str(), "Unknown command");
    let lines: Vec<u32> = c.steps.iter().map(|s| s.line).collect();
    assert_eq!(lines, [14, 15, 16, 17, 18, 19, 20, 21]);
    let kinds: Vec<&str> = c.steps.iter().map(|s| s.action.element_name()).collect();
    assert_eq!(
        kinds,
        [
            "send",
            "expect",
            "expect-not",
            "send",
            "run",
            "sleep",
            "reboot",
            "send"
        ]
    );
    assert!(matches!(&c.steps[0].action, Action::Send { text, newline: true } if text == "help"));
    assert!(
        matches!(&c.steps[1].action, Action::Expect { pattern, timeout }
        if pattern.as_str() == "^Commands:" && *timeout == Duration::from_secs(10))
    );
    assert!(
        matches!(&c.steps[2].action, Action::ExpectNot { pattern, timeout }
        if pattern.as_str() == "error" && *timeout == Duration::from_millis(250))
    );
    assert!(
        matches!(&c.steps[3].action, Action::Send { text, newline: false } if text == " <raw> & ")
    );
    assert!(
        matches!(&c.steps[4].action, Action::Run { command, timeout, exit_code: 3 }
        if command == "test -f \"$TESTARENA_FIRMWARE\" && exit 3" && *timeout == Duration::from_secs(5))
    );
    assert!(
        matches!(&c.steps[5].action, Action::Sleep { duration } if *duration == Duration::from_millis(100))
    );
    assert!(matches!(&c.steps[6].action, Action::Reboot));
    assert!(matches!(&c.steps[7].action, Action::Send { text, newline: true } if text.is_empty()));

    let c2 = &s.cases[1];
    assert_eq!(
        (c2.id.as_str(), c2.name.as_str()),
        ("second.case-2", "second.case-2")
    );
    assert_eq!(c2.timeout, Duration::from_secs(60));
    assert_eq!(c2.idle_timeout, None);
    assert!(c2.fail_pattern.is_none());
    assert_eq!(s.idle_timeout_for(c), Some(Duration::from_secs(5)));
    assert_eq!(s.idle_timeout_for(c2), Some(Duration::from_secs(30)));

    assert!(
        matches!(&s.teardown[..], [step] if matches!(&step.action, Action::Run { command, timeout, exit_code: 0 }
        if command == "true" && *timeout == Duration::from_secs(60)))
    );
    assert_eq!(
        s.summary(),
        "smoke: 2 test cases, boot per-case, timeout 300s"
    );
}

#[test]
fn minimal_file_gets_defaults() {
    let s = parse("<scenario name='m'><testcase id='a'/></scenario>").unwrap();
    assert_eq!(s.timeout, Duration::from_secs(600));
    assert_eq!(s.boot, BootMode::Once);
    assert!(s.idle_timeout.is_none() && s.fail_pattern.is_none() && s.description.is_none());
    assert!(s.setup.is_empty() && s.teardown.is_empty() && s.cases[0].steps.is_empty());
    assert_eq!(s.cases[0].timeout, Duration::from_secs(60));
    assert_eq!(s.summary(), "m: 1 test case, boot once, timeout 600s");
}

#[test]
fn description_attribute_and_default_case_timeout_capped() {
    let s = parse(
        "<scenario name='m' description=' short ' timeout='20'><testcase id='a'/></scenario>",
    )
    .unwrap();
    assert_eq!(s.description.as_deref(), Some("short"));
    assert_eq!(s.cases[0].timeout, Duration::from_secs(20));
}

#[test]
fn step_timeout_defaults() {
    let s = parse(&doc(
        "<testcase id='a'><expect-not>x</expect-not><run>ls</run></testcase>",
    ))
    .unwrap();
    assert!(
        matches!(s.cases[0].steps[0].action, Action::ExpectNot { timeout, .. } if timeout == Duration::from_secs(1))
    );
    assert!(
        matches!(s.cases[0].steps[1].action, Action::Run { timeout, .. } if timeout == Duration::from_secs(60))
    );
}

#[test]
fn fail_pattern_for_combines_scenario_and_case() {
    let s = parse(&doc(
        "<fail-pattern>panic</fail-pattern>\n<testcase id='a'><fail-pattern>oops</fail-pattern></testcase>\n<testcase id='b'/>",
    ))
    .unwrap();
    let both = s.fail_pattern_for(&s.cases[0]).unwrap();
    assert!(both.is_match("kernel panic") && both.is_match("oops!") && !both.is_match("fine"));
    let only = s.fail_pattern_for(&s.cases[1]).unwrap();
    assert!(only.is_match("panic") && !only.is_match("oops"));
}

#[test]
fn inline_flags_stay_inside_their_pattern() {
    let s = parse(&doc(
        "<fail-pattern>(?i)fatal</fail-pattern><fail-pattern>Err</fail-pattern><testcase id='a'/>",
    ))
    .unwrap();
    let re = s.fail_pattern.unwrap();
    assert!(re.is_match("FATAL") && re.is_match("Err") && !re.is_match("ERR"));
}

#[test]
fn extended_mode_comments_do_not_swallow_the_other_patterns() {
    let src = doc("<fail-pattern>(?x) fatal \\s+ error  # a comment</fail-pattern>\n<fail-pattern>oops</fail-pattern>\n<testcase id='a'><fail-pattern>(?x)bad # c</fail-pattern></testcase>");
    let s = parse(&src).unwrap();
    let re = s.fail_pattern.as_ref().unwrap();
    assert!(re.is_match("fatal   error") && re.is_match("oops") && !re.is_match("fatal"));
    let both = s.fail_pattern_for(&s.cases[0]).unwrap();
    assert!(
        both.is_match("fatal error")
            && both.is_match("oops")
            && both.is_match("bad")
            && !both.is_match("fine")
    );
}

#[test]
fn crlf_line_endings_and_entities() {
    let src = "<scenario name='c'>\r\n<testcase id='a'>\r\n  <send>a&#9;b &lt;&#x41;&gt;</send>\r\n</testcase>\r\n</scenario>";
    let s = parse(src).unwrap();
    assert_eq!(s.cases[0].steps[0].line, 3);
    assert!(matches!(&s.cases[0].steps[0].action, Action::Send { text, .. } if text == "a\tb <A>"));
    let bad =
        "<scenario name='c'>\r\n<testcase id='a'>\r\n  <bogus/>\r\n</testcase>\r\n</scenario>";
    assert_one(bad, "<bogus", &["<bogus>"]);
}

#[test]
fn multiline_text_keeps_inner_lines() {
    let s = parse(&doc(
        "<testcase id='a'><run>\n  echo one\n  echo two\n</run></testcase>",
    ))
    .unwrap();
    assert!(
        matches!(&s.cases[0].steps[0].action, Action::Run { command, .. } if command == "echo one\n  echo two")
    );
}

#[test]
fn comments_and_processing_instructions_are_ignored() {
    let s = parse(&doc(
        "<testcase id='a'><!-- c --><?pi x?><send>a<!-- mid -->b</send></testcase>",
    ))
    .unwrap();
    assert!(matches!(&s.cases[0].steps[0].action, Action::Send { text, .. } if text == "ab"));
}

// ---- rejections ----

#[test]
fn root_must_be_scenario() {
    let src = "<?xml version='1.0'?>\n  <scenarios name='x'/>";
    assert_one(src, "<scenarios", &["<scenario>", "<scenarios>"]);
    let ns = "<scenario xmlns='urn:x' name='x'><testcase id='a'/></scenario>";
    assert_one(ns, "<scenario", &["namespace"]);
}

#[test]
fn xml_errors_become_diagnostics_with_position() {
    let src = "<scenario name='x'>\n  <testcase id='a'>\n  </testcse>\n</scenario>";
    let d = errors(src);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].line, 3, "{}", d[0]);
    assert!(d[0].message.starts_with("not well-formed XML"), "{}", d[0]);
    assert!(d[0].message.contains("testcse"), "{}", d[0]);
    assert!(!d[0].message.contains(" at 3:"), "{}", d[0]);

    let unclosed = "<scenario name='x'>\n<testcase id='a'/>\n";
    let d = errors(unclosed);
    assert_eq!((d.len(), d[0].line), (1, 3), "{d:?}");

    for src in [
        "",
        "   ",
        "not xml",
        "<a",
        "<scenario name='x' name='y'/>",
        "<scenario name='&bogus;'/>",
    ] {
        let d = errors(src);
        assert_eq!(d.len(), 1, "{src:?}: {d:?}");
        assert!(d[0].line >= 1 && d[0].column >= 1);
    }
}

#[test]
fn doctype_is_rejected() {
    let src = "<?xml version='1.0'?>\n<!DOCTYPE scenario [<!ENTITY x 'y'>]>\n<scenario name='x'><testcase id='a'/></scenario>";
    assert_one(src, "<!DOCTYPE", &["DOCTYPE"]);
}

#[test]
fn unknown_elements_are_named() {
    let src = doc("<testcase id='a'>\n  <send>x</send>\n  <sned>y</sned>\n</testcase>");
    assert_one(
        &src,
        "<sned>",
        &["<sned>", "<testcase>", "expected one of", "expect-not"],
    );
    let src = doc("<testcase id='a'/>\n<cleanup/>");
    assert_one(&src, "<cleanup", &["<cleanup>", "<scenario>", "teardown"]);
    let src = doc("<setup><fail-pattern>x</fail-pattern></setup><testcase id='a'/>");
    assert_one(&src, "<fail-pattern", &["<fail-pattern>", "<setup>"]);
    let src = doc("<testcase id='a'><x:send xmlns:x='urn:x'>hi</x:send></testcase>");
    assert_one(&src, "<x:send", &["<x:send>", "namespace"]);
}

#[test]
fn unknown_attributes_are_named() {
    let src = doc("<testcase id='a'>\n  <expect timout='5'>x</expect>\n</testcase>");
    assert_one(
        &src,
        "timout",
        &["`timout`", "<expect>", "allowed: timeout"],
    );
    let src = "<scenario name='x' colour='red'><testcase id='a'/></scenario>";
    assert_one(src, "colour", &["`colour`", "<scenario>"]);
    let src = doc("<testcase id='a' xml:space='preserve'><reboot now='1'/></testcase>");
    let d = errors(&src);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_diag(&src, &d[0], "xml:space", &["`xml:space`", "<testcase>"]);
    assert_diag(
        &src,
        &d[1],
        "now=",
        &["`now`", "<reboot> takes no attributes"],
    );
}

#[test]
fn bad_regexes_carry_the_regex_error() {
    let src = doc("<testcase id='a'>\n  <expect>(unclosed</expect>\n</testcase>");
    assert_one(
        &src,
        "<expect>",
        &["bad regular expression", "`(unclosed`", "unclosed group"],
    );
    let src = doc("<fail-pattern>[z-a]</fail-pattern><testcase id='a'/>");
    assert_one(&src, "<fail-pattern>", &["<fail-pattern>", "[z-a]"]);
    let src = doc("<testcase id='a'><expect-not>a{2,1}</expect-not></testcase>");
    assert_one(&src, "<expect-not>", &["<expect-not>"]);
}

#[test]
fn empty_patterns_and_commands_are_rejected() {
    let src = doc("<testcase id='a'>\n  <expect>  </expect>\n</testcase>");
    assert_one(&src, "<expect>", &["<expect>", "empty"]);
    let src = doc("<testcase id='a'><expect-not/></testcase>");
    assert_one(&src, "<expect-not", &["<expect-not>", "empty"]);
    let src = doc("<fail-pattern/><testcase id='a'/>");
    assert_one(&src, "<fail-pattern", &["<fail-pattern>", "empty"]);
    let src = doc("<testcase id='a'><run> </run></testcase>");
    assert_one(&src, "<run>", &["<run>", "empty"]);
    let src = doc("<testcase id='a'><send newline='false'/></testcase>");
    assert_one(&src, "<send", &["sends nothing"]);
}

#[test]
fn duplicate_case_ids_point_at_the_second() {
    let src = doc("<testcase id='boot'/>\n<testcase id='other'/>\n<testcase id='boot'/>");
    let d = errors(&src);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].line, d[0].column), (4, 11));
    assert!(
        d[0].message.contains("`boot`") && d[0].message.contains("line 2"),
        "{}",
        d[0]
    );
}

#[test]
fn bad_case_ids() {
    for bad in ["a b", "x/y", "..", "ü", ""] {
        let src = doc(&format!("<testcase id='{bad}'/>"));
        assert_one(&src, "id=", &["`id`", "<testcase>"]);
    }
    let long = "a".repeat(101);
    assert_one(
        &doc(&format!("<testcase id='{long}'/>")),
        "id=",
        &["longer than 100"],
    );
    assert!(parse(&doc(&format!("<testcase id='{}'/>", "a".repeat(100)))).is_ok());
}

#[test]
fn missing_required_attributes() {
    assert_one(
        "<scenario>\n<testcase id='a'/></scenario>",
        "<scenario",
        &["`name`", "<scenario>"],
    );
    assert_one(
        &doc("<testcase>\n</testcase>"),
        "<testcase",
        &["`id`", "<testcase>"],
    );
    assert_one(
        &doc("<testcase id='a'><sleep/></testcase>"),
        "<sleep",
        &["`ms`", "<sleep>"],
    );
}

#[test]
fn bad_names() {
    assert_one(
        "<scenario name='  '><testcase id='a'/></scenario>",
        "name=",
        &["`name`", "empty"],
    );
    let long = "n".repeat(201);
    assert_one(
        &format!("<scenario name='{long}'><testcase id='a'/></scenario>"),
        "name=",
        &["longer than 200"],
    );
    assert!(parse(&format!(
        "<scenario name='{}'><testcase id='a'/></scenario>",
        "n".repeat(200)
    ))
    .is_ok());
    assert_one(
        &doc("<testcase id='a' name='x&#10;y'/>"),
        "name='x",
        &["control"],
    );
}

#[test]
fn bad_timeouts() {
    let cases = [
        (
            "<scenario name='x' timeout='abc'>",
            "timeout=",
            "not a number",
        ),
        (
            "<scenario name='x' timeout='0'>",
            "timeout=",
            "greater than 0",
        ),
        (
            "<scenario name='x' timeout='0.000'>",
            "timeout=",
            "greater than 0",
        ),
        (
            "<scenario name='x' timeout='86400.5'>",
            "timeout=",
            "maximum",
        ),
        (
            "<scenario name='x' timeout='-5'>",
            "timeout=",
            "not a number",
        ),
        (
            "<scenario name='x' timeout='1e3'>",
            "timeout=",
            "not a number",
        ),
        (
            "<scenario name='x' idle-timeout='5s'>",
            "idle-timeout=",
            "not a number",
        ),
    ];
    for (open, at, word) in cases {
        let src = format!("{open}\n<testcase id='a'/></scenario>");
        assert_one(&src, at, &[word]);
    }
    let src = doc("<testcase id='a' timeout='soon'><expect timeout='.5'>x</expect></testcase>");
    let d = errors(&src);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_diag(
        &src,
        &d[0],
        "timeout='soon'",
        &["`timeout` of <testcase>", "`soon`"],
    );
    assert_diag(&src, &d[1], "timeout='.5'", &["`timeout` of <expect>"]);
}

#[test]
fn case_timeout_may_not_exceed_scenario_timeout() {
    let src = "<scenario name='x' timeout='30'>\n<testcase id='a' timeout='30'/>\n<testcase id='b' timeout='31'/>\n</scenario>";
    assert_one(src, "timeout='31'", &["31s", "30s"]);
}

#[test]
fn seconds_parsing() {
    assert_eq!(parse_seconds("5"), Ok(Duration::from_secs(5)));
    assert_eq!(parse_seconds(" 0.5 "), Ok(Duration::from_millis(500)));
    assert_eq!(parse_seconds("007.250"), Ok(Duration::from_millis(7250)));
    assert_eq!(parse_seconds("0.000000001"), Ok(Duration::from_nanos(1)));
    assert_eq!(parse_seconds("86400"), Ok(Duration::from_secs(86400)));
    for bad in [
        "",
        ".",
        "1.",
        ".5",
        "1.2.3",
        "+1",
        "1_000",
        "inf",
        "NaN",
        "0.0000000001",
        "99999999999999999999",
        "86400.000000001",
    ] {
        assert!(parse_seconds(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn text_is_rejected_where_none_belongs() {
    assert_one(
        &doc("<testcase id='a'>\n  hello <send>x</send></testcase>"),
        "hello",
        &["`hello`", "<testcase>"],
    );
    assert_one(
        &doc("stray\n<testcase id='a'/>"),
        "stray",
        &["`stray`", "<scenario>"],
    );
    assert_one(
        &doc("<setup>  junk</setup><testcase id='a'/>"),
        "junk",
        &["<setup>"],
    );
    assert_one(
        &doc("<testcase id='a'><reboot>now</reboot></testcase>"),
        "now",
        &["<reboot>"],
    );
    assert_one(
        &doc("<testcase id='a'><sleep ms='1'><send/></sleep></testcase>"),
        "<send",
        &["<sleep>", "empty"],
    );
    assert_one(
        &doc("<testcase id='a'><send>a<b/>c</send></testcase>"),
        "<b/>",
        &["<b>", "<send>", "only text"],
    );
}

#[test]
fn zero_testcases_is_rejected() {
    assert_one(
        "<scenario name='x'>\n  <setup/>\n</scenario>",
        "<scenario",
        &["at least one <testcase>"],
    );
}

#[test]
fn version_must_be_1() {
    assert!(parse("<scenario name='x' version='1'><testcase id='a'/></scenario>").is_ok());
    assert_one(
        "<scenario name='x' version='2'><testcase id='a'/></scenario>",
        "version",
        &["`2`", "version 1"],
    );
}

#[test]
fn bad_enumerations_and_numbers() {
    assert_one(
        "<scenario name='x' boot='twice'><testcase id='a'/></scenario>",
        "boot=",
        &["`twice`", "per-case"],
    );
    assert_one(
        &doc("<testcase id='a'><send newline='no'>x</send></testcase>"),
        "newline",
        &["`no`"],
    );
    for bad in ["256", "-1", "x", "+1", ""] {
        assert_one(
            &doc(&format!(
                "<testcase id='a'><run exit-code='{bad}'>ls</run></testcase>"
            )),
            "exit-code",
            &["0 to 255"],
        );
    }
    assert!(parse(&doc(
        "<testcase id='a'><run exit-code='255'>ls</run></testcase>"
    ))
    .is_ok());
    for bad in ["3600001", "1.5", "-1", "soon"] {
        assert_one(
            &doc(&format!("<testcase id='a'><sleep ms='{bad}'/></testcase>")),
            "ms=",
            &["`ms`", "3600000"],
        );
    }
    assert!(parse(&doc("<testcase id='a'><sleep ms='3600000'/></testcase>")).is_ok());
}

#[test]
fn structure_rules() {
    let src = doc("<testcase id='a'/>\n<setup/>");
    assert_one(&src, "<setup", &["before the first <testcase>"]);
    let src = doc("<setup/>\n<setup/>\n<testcase id='a'/>");
    let d = errors(&src);
    assert_eq!((d.len(), d[0].line), (1, 3), "{d:?}");
    let src = doc("<testcase id='a'/>\n<teardown/>\n<testcase id='b'/>");
    assert_one(&src, "<testcase id='b'", &["after <teardown>"]);
    let src = doc("<testcase id='a'/>\n<teardown/>\n<teardown/>");
    let d = errors(&src);
    assert_eq!((d.len(), d[0].line), (1, 4), "{d:?}");
    let src = "<scenario name='x' description='a'>\n<description>b</description><testcase id='a'/></scenario>";
    assert_one(src, "<description>", &["twice"]);
    let src = doc("<description>a</description><description>b</description><testcase id='a'/>");
    assert_one(&src, "<description>b", &["only one"]);
}

#[test]
fn many_problems_are_reported_in_order() {
    let src = "<scenario name='x' timeout='zero' bogus='1'>\n\
               <testcase id='a'><sned/><expect>(</expect></testcase>\n\
               <testcase id='a' timeout='-1'><sleep ms='x'/></testcase>\n\
               </scenario>";
    let d = errors(src);
    assert_eq!(d.len(), 7, "{d:#?}");
    let mut sorted = d.clone();
    sorted.sort_by_key(|d| (d.line, d.column));
    assert_eq!(d, sorted);
    let text = ParseError {
        diagnostics: d.clone(),
    }
    .to_string();
    assert_eq!(text.lines().count(), 7);
    assert!(
        text.starts_with("line 1, column 20: attribute `timeout` of <scenario>"),
        "{text}"
    );
}

#[test]
fn diagnostics_are_capped() {
    let body: String = (0..300)
        .map(|i| format!("<testcase id='c{i}'><bad/></testcase>\n"))
        .collect();
    let d = errors(&doc(&body));
    assert_eq!(d.len(), crate::MAX_DIAGNOSTICS + 1);
    assert!(d.last().unwrap().message.contains("too many"));
}

#[test]
fn oversized_files_are_rejected() {
    let big = doc(&format!(
        "<!-- {} --><testcase id='a'/>",
        "x".repeat(MAX_SOURCE_BYTES)
    ));
    assert_one(&big, "<scenario", &["at most"]);
}

#[test]
fn display_formats() {
    let d = Diagnostic {
        line: 3,
        column: 7,
        message: "boom".into(),
    };
    assert_eq!(d.to_string(), "line 3, column 7: boom");
    let e = ParseError {
        diagnostics: vec![
            d.clone(),
            Diagnostic {
                line: 4,
                column: 1,
                message: "bang".into(),
            },
        ],
    };
    assert_eq!(
        e.to_string(),
        "line 3, column 7: boom\nline 4, column 1: bang"
    );
    assert_eq!(format_seconds(Duration::from_millis(500)), "0.5s");
    assert_eq!(format_seconds(Duration::from_secs(300)), "300s");
    assert_eq!(BootMode::PerCase.to_string(), "per-case");
    let s = parse(&doc(
        "<testcase id='a'><send newline='false'>y</send><expect>ok</expect></testcase>",
    ))
    .unwrap();
    assert_eq!(
        s.cases[0].steps[0].to_string(),
        "<send> \"y\" (no newline) (line 2)"
    );
    assert_eq!(s.cases[0].steps[1].action.to_string(), "<expect> \"ok\"");
}

/// Runs `f` in a thread with a 256 KiB stack (a tenth of a tokio worker's), so that any
/// recursion over the nesting depth overflows it and aborts the test binary.
fn in_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// A scenario whose only content is `levels` nested `<x>` elements, one start tag per line.
fn nested(levels: usize) -> String {
    format!(
        "<scenario name='s'>\n{}{}</scenario>\n",
        "<x>\n".repeat(levels),
        "</x>".repeat(levels)
    )
}

#[test]
fn deep_nesting_is_a_diagnostic_not_a_crash() {
    for levels in [5_000, 100_000] {
        let diagnostics = in_small_stack(move || errors(&nested(levels)));
        assert_eq!(diagnostics.len(), 1, "{levels}: {diagnostics:?}");
        // The root is level 1, so the 32nd <x> (on line 33) is the 33rd level.
        let d = &diagnostics[0];
        assert_eq!((d.line, d.column), (33, 1), "{levels}: {d}");
        assert_eq!(
            d.message,
            "elements nested deeper than 32 levels (a scenario needs 3)"
        );
    }
}

#[test]
fn nesting_up_to_the_limit_parses_in_a_small_stack() {
    // 32 levels reach roxmltree, which recurses on them: that must fit a small stack.
    let diagnostics = in_small_stack(|| errors(&nested(crate::MAX_DEPTH - 1)));
    let messages: Vec<&str> = diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[1].starts_with("unknown element <x>"),
        "{messages:?}"
    );
}

/// `n` test cases, each sending one line.
fn cases(n: usize) -> String {
    (1..=n)
        .map(|i| format!("<testcase id='t{i}'><send>x</send></testcase>\n"))
        .collect()
}

#[test]
fn more_than_10000_test_cases_are_refused() {
    assert_eq!(parse(&doc(&cases(10_000))).unwrap().cases.len(), 10_000);
    let src = doc(&cases(10_001));
    assert_one(
        &src,
        "<testcase id='t10001'>",
        &["more than 10000 test cases (10001); split the scenario"],
    );
}

#[test]
fn more_than_200000_elements_are_refused_before_parsing() {
    let steps = |n: usize| format!("<testcase id='a'>{}</testcase>", "<reboot/>".repeat(n));
    // The scenario and the test case are two elements.
    assert!(parse(&doc(&steps(200_000 - 2))).is_ok());
    let src = doc(&steps(200_000 - 1));
    let d = errors(&src);
    assert_eq!(d.len(), 1, "{d:?}");
    let last = src.rfind("<reboot/>").unwrap();
    assert_eq!(
        (d[0].line, d[0].column),
        (2, (last - src.find('\n').unwrap()) as u32)
    );
    assert!(
        d[0].message.contains("more than 200000 elements"),
        "{}",
        d[0].message
    );
}

#[test]
fn more_than_500000_xml_nodes_are_refused() {
    // Processing instructions are nodes but not elements: only the node limit stops them.
    let src = doc(&format!(
        "<testcase id='a'>{}</testcase>",
        "<?p?>".repeat(500_000)
    ));
    let d = errors(&src);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].message.contains("more than 500000 XML nodes"),
        "{}",
        d[0].message
    );
}

/// The pattern `p` in each element that takes a regex, with the text marking where.
fn in_each_pattern_element(p: &str) -> Vec<(String, &'static str)> {
    vec![
        (
            doc(&format!("<testcase id='a'><expect>{p}</expect></testcase>")),
            "<expect>",
        ),
        (
            doc(&format!(
                "<testcase id='a'><expect-not>{p}</expect-not></testcase>"
            )),
            "<expect-not>",
        ),
        (
            doc(&format!(
                "<fail-pattern>{p}</fail-pattern><testcase id='a'/>"
            )),
            "<fail-pattern>",
        ),
        (
            doc(&format!(
                "<testcase id='a'><fail-pattern>{p}</fail-pattern></testcase>"
            )),
            "<fail-pattern>",
        ),
    ]
}

#[test]
fn huge_regexes_are_refused_as_too_large() {
    // Both take 14-18 s on a 60 KB line; compiled, each needs about 10 MiB.
    for p in [r".{0,10000}Z", r"(?:.{0,100}){100}Q", r"x{1000}{1000}"] {
        for (src, at) in in_each_pattern_element(p) {
            assert_one(
                &src,
                at,
                &[
                    &format!("regular expression `{p}` in {at} is too large"),
                    "size limit of 1 MiB",
                ],
            );
        }
    }
}

#[test]
fn slow_regexes_are_refused_with_their_time() {
    // Both fit in 1 MiB; in a release build they take about 200 and 900 ms on a 64 KiB line.
    for p in [r"a.{600}Z", r"(?:.{0,30}){30}Q"] {
        for (src, at) in in_each_pattern_element(p) {
            assert_one(
                &src,
                at,
                &[
                    &format!("regular expression `{p}` in {at} takes "),
                    " ms on a 64 KiB line; the limit is 50 ms",
                ],
            );
        }
    }
}

#[test]
fn ordinary_regexes_pass_quickly() {
    let ordinary = [
        r"^ready>",
        r"Guru Meditation|abort\(\)",
        r"value=\d+",
        r"(?i)error",
        r"^\w+@\w+$",
        r"(?-u:\w){1,32}@(?-u:\w){1,32}",
        r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}",
        r"(?i)(error|fail(ed|ure)?|panic|abort|assert(ion)?)\b.{0,200}",
    ];
    for p in ordinary {
        for (src, _) in in_each_pattern_element(p) {
            let start = std::time::Instant::now();
            parse(&src).unwrap_or_else(|e| panic!("{p}: {e}"));
            // Well under a millisecond in a release build; generous for debug and a busy machine.
            assert!(start.elapsed() < Duration::from_secs(1), "{p}");
        }
    }
}

#[test]
fn combined_fail_patterns_are_checked_too() {
    // Each fits in 1 MiB and is fast; their alternation is over 1 MiB.
    let src = doc(r"<fail-pattern>ERROR \w{1,16}</fail-pattern>
<fail-pattern>PANIC \w{1,16}</fail-pattern><testcase id='a'/>");
    assert_one(
        &src,
        "<fail-pattern>",
        &[
            "<fail-pattern>s combined into one regular expression",
            "too large",
        ],
    );
    // The scenario's and the case's are combined by the runner: checked at parse time.
    let src = doc(r"<fail-pattern>ERROR \w{1,16}</fail-pattern>
<testcase id='a'><fail-pattern>PANIC \w{1,16}</fail-pattern></testcase>");
    assert_one(
        &src,
        "<fail-pattern>PANIC",
        &["combined with the scenario's", "too large"],
    );
}

#[test]
fn regex_totals_of_a_file_are_bounded() {
    use super::{parse_within, PatternBudget};
    let expects = |n: usize, distinct: bool| {
        let body: String = (0..n)
            .map(|i| format!("<expect>^ok {}$</expect>", if distinct { i } else { 0 }))
            .collect();
        doc(&format!("<testcase id='a'>{body}</testcase>"))
    };
    let budget = || PatternBudget::new(1 << 20, Duration::from_secs(60));
    // A literal pattern counts as 16 KiB: the 65th distinct one is over 1 MiB.
    let src = expects(70, true);
    let d = parse_within(&src, budget()).unwrap_err().diagnostics;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_diag(
        &src,
        &d[0],
        "<expect>^ok 64$",
        &["together compile to over 1 MiB"],
    );
    // A pattern used again is compiled and counted once.
    assert!(parse_within(&expects(500, false), budget()).is_ok());
    // The checking time is bounded too.
    let src = expects(3, true);
    let d = parse_within(&src, PatternBudget::new(1 << 20, Duration::ZERO))
        .unwrap_err()
        .diagnostics;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_diag(&src, &d[0], "<expect>", &["took over 0s"]);
    // The real budget holds a large but honest file.
    assert!(parse(&expects(2_000, true)).is_ok());
}

#[test]
fn documentation_examples_are_valid() {
    let reference = include_str!("../../../docs/scenarios.md");
    let blocks: Vec<&str> = reference
        .split("```xml")
        .skip(1)
        .filter_map(|b| b.split("```").next().map(str::trim_start))
        .collect();
    let complete: Vec<&str> = blocks
        .into_iter()
        .filter(|b| b.contains("</scenario>"))
        .collect();
    assert!(complete.len() >= 2, "{}", complete.len());
    for block in &complete {
        let s = parse(block)
            .unwrap_or_else(|e| panic!("documented example does not parse:\n{e}\n{block}"));
        assert!(
            reference.contains(&s.summary()) || s.name == "smoke",
            "{}",
            s.summary()
        );
    }
    let full = parse(complete.last().unwrap()).unwrap();
    assert!(
        reference.contains(&format!("ok: {}", full.summary())),
        "{}",
        full.summary()
    );
    let host = full.cases.iter().find(|c| c.id == "TC_HOST").unwrap();
    assert!(host
        .steps
        .iter()
        .any(|s| matches!(&s.action, Action::Send { text, newline: false } if text == "stats\r")));
    assert!(
        matches!(&host.steps[1].action, Action::Run { command, .. } if command.starts_with("python3 ") && !command.ends_with('\n'))
    );
}

#[test]
fn retries_of_the_case_override_the_scenarios_which_override_the_queues() {
    let s = parse(
        "<scenario name='r' retries='2'>\n\
         <testcase id='a'/>\n\
         <testcase id='b' retries='0'/>\n\
         <testcase id='c' retries=' 5 '/>\n\
         </scenario>",
    )
    .unwrap();
    assert_eq!(s.retries, Some(2));
    let r: Vec<Option<u8>> = s.cases.iter().map(|c| c.retries).collect();
    assert_eq!(r, [None, Some(0), Some(5)]);
    // The case's, else the scenario's; the queue's default only when neither says.
    let for_queue =
        |default| -> Vec<u8> { s.cases.iter().map(|c| s.retries_for(c, default)).collect() };
    assert_eq!(for_queue(4), [2, 0, 5]);
    assert_eq!(
        s.summary(),
        "r: 3 test cases, boot once, timeout 600s, retries 2"
    );

    let plain =
        parse("<scenario name='p'><testcase id='a'/><testcase id='b' retries='1'/></scenario>")
            .unwrap();
    assert_eq!(plain.retries, None);
    assert_eq!(plain.retries_for(&plain.cases[0], 3), 3);
    assert_eq!(plain.retries_for(&plain.cases[0], 0), 0);
    assert_eq!(plain.retries_for(&plain.cases[1], 3), 1);
}

#[test]
fn bad_retries_are_reported_where_they_are_written() {
    let cases = [
        (
            "<scenario name='x' retries='6'>",
            "retries='6'",
            "`6` is more than the maximum of 5",
        ),
        (
            "<scenario name='x' retries='two'>",
            "retries='two'",
            "`two` is not a whole number",
        ),
        (
            "<scenario name='x' retries='-1'>",
            "retries='-1'",
            "`-1` is not a whole number",
        ),
        (
            "<scenario name='x' retries=''>",
            "retries=''",
            "`` is not a whole number",
        ),
        (
            "<scenario name='x' retries='1.0'>",
            "retries='1.0'",
            "not a whole number",
        ),
        (
            "<scenario name='x' retries='300'>",
            "retries='300'",
            "more than the maximum of 5",
        ),
    ];
    for (open, at, word) in cases {
        let src = format!("{open}\n<testcase id='a'/></scenario>");
        assert_one(
            &src,
            at,
            &["attribute `retries` of <scenario>", word, "from 0 to 5"],
        );
    }
    let src = doc("<testcase id='a' retries='9'/>\n<testcase id='b' retries='x'/>");
    let d = errors(&src);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_diag(
        &src,
        &d[0],
        "retries='9'",
        &[
            "`retries` of <testcase>",
            "`9` is more than the maximum of 5",
        ],
    );
    assert_diag(
        &src,
        &d[1],
        "retries='x'",
        &["`retries` of <testcase>", "`x` is not a whole number"],
    );
    // Only where it belongs.
    assert_one(
        &doc("<testcase id='a'><send retries='1'>x</send></testcase>"),
        "retries='1'",
        &["unknown attribute `retries` on <send>"],
    );
}
