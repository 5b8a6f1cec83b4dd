//! Deterministic fuzzing: thousands of random and mutated inputs must never make `parse` panic,
//! and whatever it returns must hold the documented invariants.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::{parse, Action, MAX_SLEEP_MS, MAX_TIMEOUT};

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const SEEDS: &[&str] = &[
    r#"<?xml version="1.0"?>
<scenario name="smoke" version="1" timeout="300" idle-timeout="30" boot="per-case">
  <description>Boots &amp; checks</description>
  <fail-pattern>Guru Meditation</fail-pattern>
  <setup><expect timeout="20">esp32&gt; $</expect></setup>
  <testcase id="help" name="Help" timeout="30.5" idle-timeout="5">
    <fail-pattern>(?i)unknown</fail-pattern>
    <send>help</send>
    <expect>^Commands:</expect>
    <expect-not timeout="0.25">error</expect-not>
    <send newline="false"><![CDATA[<raw>]]></send>
    <run timeout="5" exit-code="3">exit 3</run>
    <sleep ms="100"/>
    <reboot/>
  </testcase>
  <testcase id="b"><send/></testcase>
  <teardown><run>true</run></teardown>
</scenario>"#,
    "<scenario name='m'><testcase id='a'/></scenario>",
    "<scenario name='x' timeout='1'>\r\n<testcase id='a' timeout='2'><expect>(</expect></testcase>\r\n</scenario>",
];

const TOKENS: &[&str] = &[
    "<",
    ">",
    "/>",
    "</",
    "<scenario ",
    "</scenario>",
    "<testcase id='",
    "</testcase>",
    "<expect>",
    "</expect>",
    "<expect-not timeout='",
    "<send newline='false'>",
    "</send>",
    "<run exit-code='",
    "<sleep ms='",
    "<reboot/>",
    "<setup>",
    "</setup>",
    "<teardown>",
    "<fail-pattern>",
    "</fail-pattern>",
    "<description>",
    "timeout='",
    "'",
    "\"",
    "=",
    "&amp;",
    "&lt;",
    "&#x0;",
    "&#65;",
    "&#xD800;",
    "&bogus;",
    "<![CDATA[",
    "]]>",
    "<!--",
    "-->",
    "<?pi ?>",
    "<!DOCTYPE x>",
    "xmlns='urn:x'",
    "xmlns:p='urn:p' p:a='1'",
    "(",
    ")",
    "[",
    "]",
    "{99999}",
    "(?x)a #c",
    "\\",
    "*",
    "+?",
    "\\p{Greek}",
    "0.5",
    "86400",
    "86401",
    "-1",
    "3600001",
    "1e9",
    "0.0000000001",
    "é",
    "\u{FEFF}",
    "\u{0}",
    "\r",
    "\n",
    "\t",
    " ",
    "version='2'",
    "boot='per-case'",
];

const WORDS: &[&str] = &[
    "",
    "0",
    "1",
    "2",
    "0.5",
    "abc",
    "86401",
    "3600001",
    "-1",
    "256",
    "false",
    "per-case",
    "twice",
    "(",
    "a{2,1}",
    "x y",
    "..",
    "send",
    "expect",
    "run",
    "sleep",
    "reboot",
    "testcase",
    "setup",
    "teardown",
    "id",
    "name",
    "ms",
    "timeout",
    "newline",
    "exit-code",
    "boot",
    "version",
    "bogus",
];

const ELEMENTS: &[&str] = &[
    "send",
    "expect",
    "expect-not",
    "run",
    "sleep",
    "reboot",
    "fail-pattern",
    "testcase",
    "setup",
    "teardown",
    "description",
    "scenario",
    "bogus",
];
const ATTRIBUTES: &[&str] = &[
    "id",
    "name",
    "timeout",
    "idle-timeout",
    "boot",
    "version",
    "description",
    "newline",
    "exit-code",
    "ms",
    "retries",
    "x",
];
const TEXTS: &[&str] = &[
    "",
    "help",
    "^ok$",
    "(",
    "a{2,1}",
    "[z-a]",
    "(?i)Fatal",
    "(?x)a #c",
    "echo hi && exit 3",
    "  spaced  ",
    "é ü",
    "<&>",
    "\\d+",
    "x{10}{10}",
];

/// Escapes text for an attribute or element, so that the XML stays well-formed.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
}

/// A plausible value for an attribute, or (sometimes) any word.
fn value_for(rng: &mut Rng, attribute: &str) -> String {
    if rng.below(4) == 0 {
        return (*rng.pick(WORDS)).to_string();
    }
    match attribute {
        "id" => format!("c{}", rng.below(6)),
        "timeout" | "idle-timeout" => (*rng.pick(&["5", "0.5", "30", "600"])).to_string(),
        "ms" => "10".into(),
        "boot" => (*rng.pick(&["once", "per-case"])).to_string(),
        "newline" => (*rng.pick(&["true", "false"])).to_string(),
        "exit-code" => "0".into(),
        "retries" => (*rng.pick(&["0", "2", "5", "6"])).to_string(),
        "version" => "1".into(),
        _ => "n".into(),
    }
}

/// The attributes an element takes (plus, sometimes, a wrong one).
fn attributes_of(element: &str) -> &'static [&'static str] {
    match element {
        "scenario" => &[
            "name",
            "timeout",
            "idle-timeout",
            "boot",
            "version",
            "description",
            "retries",
        ],
        "testcase" => &["id", "name", "timeout", "idle-timeout", "retries"],
        "send" => &["newline"],
        "expect" | "expect-not" => &["timeout"],
        "run" => &["timeout", "exit-code"],
        "sleep" => &["ms"],
        _ => &[],
    }
}

/// The children an element takes; an empty list means text.
fn children_of(element: &str) -> &'static [&'static str] {
    match element {
        "scenario" => &[
            "testcase",
            "testcase",
            "testcase",
            "setup",
            "teardown",
            "fail-pattern",
            "description",
        ],
        "testcase" | "setup" | "teardown" => &[
            "send",
            "expect",
            "expect-not",
            "run",
            "sleep",
            "reboot",
            "fail-pattern",
        ],
        _ => &[],
    }
}

/// Writes a random element tree: well-formed XML, mostly a plausible scenario, with some noise.
fn generate_element(rng: &mut Rng, out: &mut String, depth: usize, name: &str) {
    out.push('<');
    out.push_str(name);
    let mut used: Vec<&str> = Vec::new();
    for &attribute in attributes_of(name) {
        let required = matches!(attribute, "name" | "id" | "ms");
        if rng.below(if required { 10 } else { 3 }) != 0 && (required || rng.below(2) == 0) {
            used.push(attribute);
        }
    }
    if rng.below(8) == 0 {
        used.push(*rng.pick(ATTRIBUTES));
    }
    used.dedup();
    for attribute in used {
        if !out
            .rsplit('<')
            .next()
            .unwrap_or("")
            .contains(&format!(" {attribute}="))
        {
            let value = value_for(rng, attribute);
            out.push_str(&format!(" {attribute}='{}'", escape(&value)));
        }
    }
    let children = children_of(name);
    if children.is_empty() && matches!(name, "sleep" | "reboot") && rng.below(8) != 0 {
        out.push_str("/>");
        return;
    }
    out.push('>');
    if children.is_empty() || depth >= 3 {
        match rng.below(6) {
            0 => out.push_str(&format!("<![CDATA[{}]]>", rng.pick(TEXTS))),
            1 => {
                let name = *rng.pick(ELEMENTS);
                generate_element(rng, out, depth + 1, name);
            }
            2 => {
                // Whitespace in its different spellings around some text.
                for _ in 0..3 {
                    out.push_str(rng.pick::<&str>(&[
                        " \r\n ",
                        "&#32;",
                        "&#13;&#10;",
                        "\t",
                        "<![CDATA[ ]]>",
                        "x",
                        "<!--c-->",
                    ]));
                }
            }
            _ => out.push_str(&escape(rng.pick::<&str>(TEXTS))),
        }
    } else {
        for _ in 0..1 + rng.below(5) {
            let name = if rng.below(12) == 0 {
                *rng.pick(ELEMENTS)
            } else {
                *rng.pick(children)
            };
            out.push('\n');
            generate_element(rng, out, depth + 1, name);
        }
        if rng.below(12) == 0 {
            out.push_str(&escape(rng.pick::<&str>(TEXTS)));
        }
    }
    out.push_str(&format!("</{name}>"));
}

fn generate(rng: &mut Rng) -> String {
    let root = if rng.below(10) == 0 {
        "bogus"
    } else {
        "scenario"
    };
    let mut out = String::new();
    generate_element(rng, &mut out, 0, root);
    out
}

fn mutate(rng: &mut Rng, input: &str) -> String {
    let mut chars: Vec<char> = input.chars().collect();
    // Half the mutants get one small change, so that many still reach the checker.
    let rounds = if rng.below(2) == 0 {
        1
    } else {
        1 + rng.below(8)
    };
    for _ in 0..rounds {
        let at = rng.below(chars.len() + 1);
        match rng.below(6) {
            0 if at < chars.len() => {
                chars[at] = *rng.pick(&[
                    '<', '>', '/', '"', '\'', '=', '&', ';', 'a', '1', '.', ' ', '\n', '\u{7f}',
                    'ß',
                ]);
            }
            1 => {
                let token: Vec<char> = rng.pick(TOKENS).chars().collect();
                chars.splice(at..at, token);
            }
            2 => {
                let end = (at + rng.below(20)).min(chars.len());
                chars.drain(at..end);
            }
            3 => {
                let end = (at + rng.below(60)).min(chars.len());
                let copy: Vec<char> = chars[at..end].to_vec();
                let to = rng.below(chars.len() + 1);
                chars.splice(to..to, copy);
            }
            4 => {
                let end = (at + rng.below(10)).min(chars.len());
                chars[at..end].reverse();
            }
            _ => {
                // Replace a word (a tag or attribute name, a value, some text) with another word:
                // the XML mostly stays well-formed, so this exercises the checker.
                let start = (0..at)
                    .rev()
                    .take_while(|&i| chars[i].is_alphanumeric())
                    .last()
                    .unwrap_or(at);
                let end = (at..chars.len())
                    .take_while(|&i| chars[i].is_alphanumeric())
                    .last()
                    .map_or(at, |i| i + 1);
                let word: Vec<char> = rng.pick(WORDS).chars().collect();
                chars.splice(start..end, word);
            }
        }
    }
    chars.into_iter().collect()
}

fn random_tokens(rng: &mut Rng) -> String {
    (0..rng.below(40)).map(|_| *rng.pick(TOKENS)).collect()
}

/// How far an input got.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Parsed,
    Rejected,
    NotXml,
}

/// The pre-scan must never count less nesting than the XML parser builds (it guards the
/// parser's recursion), nor refuse what is within the bounds.
fn check_prescan(input: &str) {
    let shape = crate::prescan::scan(input);
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: u32::MAX,
    };
    if shape.violation.is_some() {
        return;
    }
    if let Ok(doc) = roxmltree::Document::parse_with_options(input, options) {
        let depth = doc
            .descendants()
            .filter(|n| n.is_element())
            .map(|n| n.ancestors().filter(|a| a.is_element()).count())
            .max()
            .unwrap_or(0);
        let elements = doc.descendants().filter(|n| n.is_element()).count();
        assert_eq!(
            (shape.depth, shape.elements),
            (depth, elements),
            "{input:?}"
        );
    }
}

/// Parses one input, failing the test (with the input) on a panic or a broken invariant.
fn check(input: &str) -> Outcome {
    check_prescan(input);
    let result = catch_unwind(AssertUnwindSafe(|| parse(input)));
    let Ok(result) = result else {
        panic!("parse panicked on {input:?}")
    };
    match result {
        Ok(s) => {
            assert!(!s.cases.is_empty(), "{input:?}");
            assert!(!s.name.is_empty() && s.timeout <= MAX_TIMEOUT, "{input:?}");
            for case in &s.cases {
                assert!(case.timeout <= s.timeout, "{input:?}");
                for step in case.steps.iter().chain(&s.setup).chain(&s.teardown) {
                    assert!(step.line >= 1);
                    match &step.action {
                        Action::Expect { pattern, timeout }
                        | Action::ExpectNot { pattern, timeout } => {
                            assert!(
                                !pattern.as_str().is_empty()
                                    && *timeout <= MAX_TIMEOUT
                                    && !timeout.is_zero()
                            );
                        }
                        Action::Sleep { duration } => {
                            assert!(duration.as_millis() <= u128::from(MAX_SLEEP_MS))
                        }
                        Action::Run { exit_code, .. } => assert!((0..=255).contains(exit_code)),
                        Action::Send { .. } | Action::Reboot => {}
                    }
                }
            }
            let _ = s.summary();
            Outcome::Parsed
        }
        Err(e) => {
            assert!(!e.diagnostics.is_empty(), "{input:?}");
            assert!(
                e.diagnostics.iter().all(|d| d.line >= 1 && d.column >= 1),
                "{input:?}: {e}"
            );
            let _ = e.to_string();
            if e.diagnostics[0].message.starts_with("not well-formed") {
                Outcome::NotXml
            } else {
                Outcome::Rejected
            }
        }
    }
}

#[test]
fn parse_never_panics_on_mutated_or_random_input() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for seed in SEEDS {
        check(seed);
    }
    let mut outcomes = [0usize; 3];
    for round in 0..4000 {
        let base = match round % 4 {
            0 => random_tokens(&mut rng),
            1 => (*rng.pick(SEEDS)).to_string(),
            _ => generate(&mut rng),
        };
        if round % 4 >= 2 {
            // Generated input is well-formed XML: check it as is, too.
            outcomes[check(&base) as usize] += 1;
        }
        let input = mutate(&mut rng, &base);
        outcomes[check(&input) as usize] += 1;
        // Mutate the mutant too, to get further from the seeds.
        outcomes[check(&mutate(&mut rng, &input)) as usize] += 1;
    }
    // The mutants must reach the checker, not only the XML parser: some parse, many are rejected.
    let [parsed, rejected, not_xml] = outcomes;
    assert_eq!(
        crate::text::MISMATCHES.with(|m| m.get()),
        0,
        "text decoding disagreed with roxmltree"
    );
    eprintln!("parsed {parsed}, rejected {rejected}, not XML {not_xml}");
    assert!(
        parsed > 20 && rejected > 1000,
        "parsed {parsed}, rejected {rejected}, not XML {not_xml}"
    );
}

#[test]
fn parse_never_panics_on_random_bytes() {
    let mut rng = Rng(42);
    for _ in 0..1000 {
        let bytes: Vec<u8> = (0..rng.below(200))
            .map(|_| (rng.next() & 0xff) as u8)
            .collect();
        assert_ne!(check(&String::from_utf8_lossy(&bytes)), Outcome::Parsed);
    }
}
