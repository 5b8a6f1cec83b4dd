//! Checking the `<scenario>` element: its attributes, the order and number of its children, the case count bound.

use super::*;

impl Parser<'_> {
    pub(super) fn scenario(&mut self, root: Node<'_, '_>) -> Option<Scenario> {
        if !self.root_is_scenario(root) || !self.case_count_fits(root) {
            return None;
        }
        let head = self.scenario_attributes(root);
        let body = self.scenario_children(root, &head);
        let fail_pattern = self.combine(&body.fail_patterns, None);
        let mut cases = Vec::with_capacity(body.cases.len());
        for (mut case, patterns) in body.cases {
            case.fail_pattern = self.combine(&patterns, None);
            if case.fail_pattern.is_some() {
                if let Some(scenario_pattern) = &fail_pattern {
                    // Make sure the runner's combination of both compiles as well.
                    self.combine(&patterns, Some(scenario_pattern));
                }
            }
            cases.push(case);
        }
        Some(Scenario {
            name: head.name,
            description: body.description.or(head.description),
            timeout: head.timeout,
            idle_timeout: head.idle_timeout,
            boot: head.boot,
            retries: head.retries,
            fail_pattern,
            setup: body.setup.unwrap_or_default(),
            cases,
            teardown: body.teardown.unwrap_or_default(),
        })
    }

    /// True if the root element is `<scenario>`; else an error says what it is.
    pub(super) fn root_is_scenario(&mut self, root: Node<'_, '_>) -> bool {
        if Self::plain_name(root) == Some("scenario") {
            return true;
        }
        let name = self.written_name(root);
        let hint = if root.tag_name().namespace().is_some() {
            " without an XML namespace"
        } else {
            ""
        };
        self.error(
            root,
            format!("the root element must be <scenario>{hint}, not <{name}>"),
        );
        false
    }

    /// True if the scenario has at most [`MAX_TEST_CASES`] cases; counted before any case is
    /// checked, so that a huge file costs no regex work.
    pub(super) fn case_count_fits(&mut self, root: Node<'_, '_>) -> bool {
        let mut case_elements = root
            .children()
            .filter(|c| c.is_element() && Self::plain_name(*c) == Some("testcase"));
        let Some(over) = case_elements.nth(MAX_TEST_CASES) else {
            return true;
        };
        let total = MAX_TEST_CASES + 1 + case_elements.count();
        self.error(
            over,
            format!("more than {MAX_TEST_CASES} test cases ({total}); split the scenario into several files"),
        );
        false
    }

    /// The attributes of `<scenario>`.
    pub(super) fn scenario_attributes(&mut self, root: Node<'_, '_>) -> ScenarioHead {
        self.check_attributes(root, "scenario", SCENARIO_ATTRIBUTES);
        if let Some((version, at)) = Self::attribute(root, "version") {
            if trim_xml(version) != FORMAT_VERSION {
                self.error_at(
                    at,
                    format!("unsupported scenario format version {}; this TestArena reads version {FORMAT_VERSION}", quote(version)),
                );
            }
        }
        let mut name = String::new();
        if let Some((value, at)) = self.required(root, "scenario", "name") {
            match check_name(value) {
                Ok(()) => name = trim_xml(value).to_string(),
                Err(why) => self.error_at(at, format!("attribute `name` of <scenario> {why}")),
            }
        }
        let description =
            Self::attribute(root, "description").map(|(v, _)| trim_xml(v).to_string());
        let timeout = self
            .seconds(root, "scenario", "timeout")
            .unwrap_or(DEFAULT_SCENARIO_TIMEOUT);
        let idle_timeout = self.seconds(root, "scenario", "idle-timeout");
        let boot = match Self::attribute(root, "boot") {
            None => BootMode::Once,
            Some((value, at)) => {
                match trim_xml(value) {
                    "once" => BootMode::Once,
                    "per-case" => BootMode::PerCase,
                    other => {
                        self.error_at(at, format!("attribute `boot` of <scenario> must be `once` or `per-case`, not {}", quote(other)));
                        BootMode::Once
                    }
                }
            }
        };
        let retries = self.retries(root, "scenario");
        self.no_text(root, "scenario");
        ScenarioHead {
            name,
            description,
            timeout,
            idle_timeout,
            boot,
            retries,
        }
    }

    /// The children of `<scenario>`, in their order rules.
    pub(super) fn scenario_children(
        &mut self,
        root: Node<'_, '_>,
        head: &ScenarioHead,
    ) -> ScenarioBody {
        let mut body = ScenarioBody::default();
        let mut case_elements = 0usize;
        let mut seen_ids: HashMap<String, u32> = HashMap::new();
        for child in root.children().filter(|c| c.is_element()) {
            match Self::plain_name(child) {
                Some("description") => self.description(child, head, &mut body),
                Some("fail-pattern") => body.fail_patterns.extend(self.fail_pattern(child)),
                Some("setup") => {
                    if body.setup.is_some() {
                        self.error(child, "<scenario> may have only one <setup>".into());
                    } else if case_elements > 0 {
                        self.error(
                            child,
                            "<setup> must come before the first <testcase>".into(),
                        );
                    }
                    body.setup = Some(self.step_block(child, "setup"));
                }
                Some("teardown") => {
                    if body.teardown.is_some() {
                        self.error(child, "<scenario> may have only one <teardown>".into());
                    }
                    body.teardown = Some(self.step_block(child, "teardown"));
                }
                Some("testcase") => {
                    case_elements += 1;
                    if body.teardown.is_some() {
                        self.error(child, "<testcase> after <teardown>; <teardown> must come after the last <testcase>".into());
                    }
                    if let Some(case) = self.testcase(child, head.timeout, &mut seen_ids) {
                        body.cases.push(case);
                    }
                }
                _ => self.unknown_element(child, "scenario", SCENARIO_CHILDREN),
            }
        }
        if case_elements == 0 {
            self.error(root, "a scenario needs at least one <testcase>".into());
        }
        body
    }

    /// A `<description>` element: at most one, and not besides the attribute.
    pub(super) fn description(
        &mut self,
        child: Node<'_, '_>,
        head: &ScenarioHead,
        body: &mut ScenarioBody,
    ) {
        self.check_attributes(child, "description", &[]);
        let text = self.text(child, "description");
        if body.description.is_some() {
            self.error(child, "<scenario> may have only one <description>".into());
        } else if head.description.is_some() {
            self.error(
                child,
                "the description is given twice: as attribute and as <description>".into(),
            );
        }
        body.description = Some(text);
    }
}
