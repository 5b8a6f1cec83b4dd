//! Checking test cases and their steps: `<testcase>`, `<send>`, `<expect>`, `<expect-not>`, `<run>`, `<sleep>`, `<reboot>`.

use super::*;

impl Parser<'_> {
    pub(super) fn step_block(&mut self, node: Node<'_, '_>, element: &str) -> Vec<Step> {
        self.check_attributes(node, element, &[]);
        self.no_text(node, element);
        let mut steps = Vec::new();
        for child in node.children().filter(|c| c.is_element()) {
            match Self::plain_name(child) {
                Some(name) if STEP_ELEMENTS.contains(&name) => steps.extend(self.step(child, name)),
                _ => self.unknown_element(child, element, STEP_ELEMENTS),
            }
        }
        steps
    }

    pub(super) fn testcase(
        &mut self,
        node: Node<'_, '_>,
        scenario_timeout: Duration,
        seen_ids: &mut HashMap<String, u32>,
    ) -> Option<(TestCase, Vec<FailPattern>)> {
        self.check_attributes(node, "testcase", CASE_ATTRIBUTES);
        let line = self.line_of(node);
        let mut id = None;
        if let Some((value, at)) = self.required(node, "testcase", "id") {
            match check_id(value) {
                Err(why) => self.error_at(at, format!("attribute `id` of <testcase> {why}")),
                Ok(()) => {
                    if let Some(first) = seen_ids.get(value) {
                        self.error_at(
                            at,
                            format!(
                                "duplicate test case id {}; first used on line {first}",
                                quote(value)
                            ),
                        );
                    } else {
                        seen_ids.insert(value.to_string(), line);
                        id = Some(value.to_string());
                    }
                }
            }
        }
        let mut name = None;
        if let Some((value, at)) = Self::attribute(node, "name") {
            match check_name(value) {
                Ok(()) => name = Some(trim_xml(value).to_string()),
                Err(why) => self.error_at(at, format!("attribute `name` of <testcase> {why}")),
            }
        }
        let timeout = match self.seconds(node, "testcase", "timeout") {
            Some(t) if t > scenario_timeout => {
                let at = Self::attribute(node, "timeout").map_or(node.range().start, |(_, at)| at);
                self.error_at(
                    at,
                    format!(
                        "test case timeout {} exceeds the scenario timeout {}",
                        format_seconds(t),
                        format_seconds(scenario_timeout)
                    ),
                );
                t
            }
            Some(t) => t,
            None => DEFAULT_CASE_TIMEOUT.min(scenario_timeout),
        };
        let idle_timeout = self.seconds(node, "testcase", "idle-timeout");
        let retries = self.retries(node, "testcase");
        self.no_text(node, "testcase");

        let mut patterns = Vec::new();
        let mut steps = Vec::new();
        for child in node.children().filter(|c| c.is_element()) {
            match Self::plain_name(child) {
                Some("fail-pattern") => patterns.extend(self.fail_pattern(child)),
                Some(name) if STEP_ELEMENTS.contains(&name) => steps.extend(self.step(child, name)),
                _ => self.unknown_element(child, "testcase", CASE_CHILDREN),
            }
        }
        let id = id?;
        let case = TestCase {
            name: name.unwrap_or_else(|| id.clone()),
            id,
            timeout,
            idle_timeout,
            retries,
            fail_pattern: None,
            steps,
        };
        Some((case, patterns))
    }

    pub(super) fn step(&mut self, node: Node<'_, '_>, element: &str) -> Option<Step> {
        let line = self.line_of(node);
        let action = match element {
            "send" => self.send(node)?,
            "expect" | "expect-not" => {
                self.check_attributes(node, element, &["timeout"]);
                let default = if element == "expect" {
                    DEFAULT_EXPECT_TIMEOUT
                } else {
                    DEFAULT_EXPECT_NOT_TIMEOUT
                };
                let timeout = self.seconds(node, element, "timeout").unwrap_or(default);
                let pattern = self.pattern(node, element)?;
                if element == "expect" {
                    Action::Expect { pattern, timeout }
                } else {
                    Action::ExpectNot { pattern, timeout }
                }
            }
            "run" => self.run(node)?,
            "sleep" => self.sleep(node)?,
            "reboot" => {
                self.check_attributes(node, element, &[]);
                self.must_be_empty(node, element);
                Action::Reboot
            }
            _ => return None,
        };
        Some(Step { line, action })
    }

    pub(super) fn send(&mut self, node: Node<'_, '_>) -> Option<Action> {
        self.check_attributes(node, "send", &["newline"]);
        let newline = match Self::attribute(node, "newline") {
            None => true,
            Some((value, at)) => match trim_xml(value) {
                "true" => true,
                "false" => false,
                other => {
                    self.error_at(
                        at,
                        format!(
                            "attribute `newline` of <send> must be `true` or `false`, not {}",
                            quote(other)
                        ),
                    );
                    true
                }
            },
        };
        let text = self.text(node, "send");
        if text.is_empty() && !newline {
            self.error(
                node,
                "<send newline=\"false\"> with no text sends nothing".into(),
            );
            return None;
        }
        Some(Action::Send { text, newline })
    }

    pub(super) fn run(&mut self, node: Node<'_, '_>) -> Option<Action> {
        self.check_attributes(node, "run", &["timeout", "exit-code"]);
        let timeout = self
            .seconds(node, "run", "timeout")
            .unwrap_or(DEFAULT_RUN_TIMEOUT);
        let exit_code = match Self::attribute(node, "exit-code") {
            None => 0,
            Some((value, at)) => match trim_xml(value).parse::<u8>() {
                Ok(code) if trim_xml(value).bytes().all(|b| b.is_ascii_digit()) => i32::from(code),
                _ => {
                    self.error_at(
                        at,
                        format!("attribute `exit-code` of <run> must be a whole number from 0 to 255, not {}", quote(value)),
                    );
                    0
                }
            },
        };
        let command = self.text(node, "run");
        if command.is_empty() {
            self.error(node, "<run> needs a command; it is empty".into());
            return None;
        }
        Some(Action::Run {
            command,
            timeout,
            exit_code,
        })
    }

    pub(super) fn sleep(&mut self, node: Node<'_, '_>) -> Option<Action> {
        self.check_attributes(node, "sleep", &["ms"]);
        self.must_be_empty(node, "sleep");
        let (value, at) = self.required(node, "sleep", "ms")?;
        let v = trim_xml(value);
        match v.parse::<u64>() {
            Ok(ms) if ms <= MAX_SLEEP_MS && v.bytes().all(|b| b.is_ascii_digit()) => {
                Some(Action::Sleep {
                    duration: Duration::from_millis(ms),
                })
            }
            _ => {
                self.error_at(
                    at,
                    format!("attribute `ms` of <sleep> must be a whole number of milliseconds from 0 to {MAX_SLEEP_MS}, not {}", quote(v)),
                );
                None
            }
        }
    }
}
