//! Retries and flaky verdicts (issue 16) through the whole pipeline: a case that fails, then
//! passes, is `flaky` and its queue passes; one that fails every try stays `failed`; a retry
//! runs on the same boot unless the scenario boots per case or the emulator broke. The
//! "emulator" counts its boots in a file outside the checkout.

use super::*;

/// A `testarena.toml` whose emulator appends a line to `boots` each time it starts.
fn counting_toml(boots: &Path) -> String {
    format!(
        "[emulator]\ncommand = \"echo boot >> {}; sh fw.sh\"\nready = \"^ready$\"\nboot_timeout = \"5s\"\n",
        boots.display()
    )
}

/// A `<run>` step that fails the first time it runs in a checkout and passes after (it leaves
/// `flag` behind), saying which it did.
const FLIP: &str = r#"<run>test -f flag &amp;&amp; echo second-try-passes &amp;&amp; exit 0; touch flag; echo first-try-fails; exit 1</run>"#;

impl Fixture {
    /// Runs a queue of `scenario` that asks for `retries` by default; what the store then holds.
    async fn run_with_retries(&self, toml: &str, scenario: &str, retries: u8) -> QueueDetail {
        let repo = self.repo("r", toml, scenario);
        let q = ValidQueue {
            retries,
            ..queue_of(&repo)
        };
        self.run_claimed(self.claim_queue(&q).await).await
    }

    /// A whole file the queue left in the database, as text.
    async fn text(&self, id: i64, name: &str) -> String {
        let len = self.store.file_len(id, name).await.unwrap();
        let bytes = self.store.read_file(id, name, 0, len).await.unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The log of case `key`: its range of the queue's log.
    async fn case_log(&self, d: &QueueDetail, key: &str) -> String {
        let c = d
            .tasks
            .iter()
            .flat_map(|(_, cases)| cases)
            .find(|c| c.key == key)
            .unwrap();
        let (from, to) = (c.log_from.unwrap(), c.log_to.unwrap());
        let bytes = self
            .store
            .read_file(d.queue.id, "queue.log", from as u64, (to - from) as u64)
            .await
            .unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn case_row<'a>(d: &'a QueueDetail, key: &str) -> &'a testarena_store::CaseRow {
    d.tasks
        .iter()
        .flat_map(|(_, cases)| cases)
        .find(|c| c.key == key)
        .unwrap_or_else(|| panic!("no case {key}"))
}

/// The elements named `tag` under the testcase whose name starts with `id`.
fn junit_children(xml: &str, id: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(xml).unwrap();
    let tc = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name").unwrap_or("").starts_with(id))
        .unwrap_or_else(|| panic!("no testcase {id} in {xml}"));
    tc.children()
        .filter(|c| c.is_element())
        .map(|c| c.tag_name().name().to_string())
        .collect()
}

#[tokio::test]
async fn a_case_that_fails_then_passes_is_flaky_on_the_same_boot_and_its_queue_passes() {
    let f = fixture().await;
    let boots = f.repos.join("boots");
    let scenario = format!(
        r#"<scenario name="s">
  <testcase id="FLAKY" retries="2"><sleep ms="300"/>{FLIP}<send>ping</send><expect timeout="5">^pong$</expect></testcase>
  <testcase id="SOLID"><send>ping</send><expect timeout="5">^pong$</expect></testcase>
</scenario>"#
    );
    let d = f.run(&counting_toml(&boots), &scenario).await;
    assert_eq!(d.queue.status, QueueStatus::Passed, "{:?}", cases(&d));
    assert_case(
        &d,
        "FLAKY",
        CaseStatus::Flaky,
        "flaky: failed on try 1 (step <run>",
    );
    assert_case(
        &d,
        "FLAKY",
        CaseStatus::Flaky,
        "command exited with code 1, expected 0), passed on try 2",
    );
    assert_case(&d, "SOLID", CaseStatus::Passed, "");
    let s = d.summary();
    assert_eq!((s.total, s.passed, s.flaky, s.failed), (2, 1, 1, 0));
    assert_eq!(runs(&boots), 1, "one boot: the retry ran on the same one");
    // Its duration covers both tries (each sleeps 300 ms).
    assert!(case_row(&d, "FLAKY").duration_ms.unwrap() >= 600);

    let log = f.case_log(&d, "FLAKY").await;
    let order = [
        "# case FLAKY 'FLAKY' started (timeout 1m, up to 3 tries)",
        "# case FLAKY try 1 of 3\n",
        "| [run] first-try-fails",
        "# case FLAKY try 1 of 3 failed in ",
        "# case FLAKY try 2 of 3 (same boot)",
        "| [run] second-try-passes",
        "| pong",
        "# case FLAKY flaky in ",
    ];
    let mut at = 0;
    for want in order {
        let found = log[at..]
            .find(want)
            .unwrap_or_else(|| panic!("{want:?} after byte {at} of\n{log}"));
        at += found + want.len();
    }
    assert!(!log.contains("try 3 of 3"), "{log}");

    let junit = f.text(d.queue.id, "junit.xml").await;
    assert_eq!(
        junit_children(&junit, "FLAKY"),
        ["flakyFailure", "system-out"],
        "{junit}"
    );
    assert!(
        junit.contains("tests=\"2\" skipped=\"0\" failures=\"0\" errors=\"0\""),
        "{junit}"
    );
    assert!(
        junit.contains("first-try-fails"),
        "the failed try's output: {junit}"
    );
}

#[tokio::test]
async fn a_case_failing_every_try_stays_failed_with_its_reruns() {
    let f = fixture().await;
    let boots = f.repos.join("boots");
    // No retries in the file: the queue's default (2) applies; the second case says 0.
    let scenario = r#"<scenario name="s">
  <testcase id="BAD"><send>ping</send><expect timeout="0.3">^nope$</expect></testcase>
  <testcase id="ONCE" retries="0"><send>ping</send><expect timeout="0.3">^nope$</expect></testcase>
</scenario>"#;
    let d = f
        .run_with_retries(&counting_toml(&boots), scenario, 2)
        .await;
    assert_eq!(d.queue.status, QueueStatus::Failed);
    assert_eq!(d.queue.retries, 2);
    assert_case(
        &d,
        "BAD",
        CaseStatus::Failed,
        "failed on all 3 tries: try 1 (step <expect>",
    );
    assert_case(
        &d,
        "BAD",
        CaseStatus::Failed,
        "; try 3: step <expect> \"^nope$\"",
    );
    assert_case(&d, "ONCE", CaseStatus::Failed, "step <expect>");
    assert!(!case_row(&d, "ONCE")
        .message
        .as_deref()
        .unwrap()
        .contains("tries"));
    assert_eq!(
        runs(&boots),
        1,
        "a failed expect leaves the emulator as it was"
    );
    let log = f.case_log(&d, "BAD").await;
    for n in 1..=3 {
        assert!(log.contains(&format!("# case BAD try {n} of 3")), "{log}");
    }
    let junit = f.text(d.queue.id, "junit.xml").await;
    assert_eq!(
        junit_children(&junit, "BAD"),
        ["failure", "rerunFailure", "rerunFailure", "system-out"],
        "{junit}"
    );
    assert_eq!(
        junit_children(&junit, "ONCE"),
        ["failure", "system-out"],
        "{junit}"
    );
}

#[tokio::test]
async fn a_retry_boots_afresh_per_case_and_after_the_emulator_exited() {
    let f = fixture().await;
    let boots = f.repos.join("boots");
    let scenario = format!(
        r#"<scenario name="s" boot="per-case" retries="1">
  <setup><send>setup-ran</send><expect>^setup-ran$</expect></setup>
  <testcase id="A">{FLIP}</testcase>
  <testcase id="B"><send>ping</send><expect>^pong$</expect></testcase>
</scenario>"#
    );
    let d = f.run(&counting_toml(&boots), &scenario).await;
    assert_eq!(d.queue.status, QueueStatus::Passed, "{:?}", cases(&d));
    assert_case(&d, "A", CaseStatus::Flaky, "passed on try 2");
    assert_eq!(runs(&boots), 3, "A's two tries and B: a boot each");
    let log = f.case_log(&d, "A").await;
    assert!(
        log.contains("# case A try 2 of 2 (fresh boot: boot=\"per-case\")"),
        "{log}"
    );
    assert_eq!(
        log.matches("| setup-ran").count(),
        1,
        "setup after the fresh boot: {log}"
    );

    // boot="once", but the emulator exits during the first try: the retry boots again.
    let f = fixture().await;
    let boots = f.repos.join("boots");
    let gone = f.repos.join("exited-once");
    let toml = format!(
        "[emulator]\ncommand = \"echo boot >> {boots}; if [ -e {gone} ]; then sh fw.sh; else touch {gone}; echo ready; exit 3; fi\"\nready = \"^ready$\"\nboot_timeout = \"5s\"\n",
        boots = boots.display(),
        gone = gone.display()
    );
    let d = f
        .run(
            &toml,
            r#"<scenario name="s" retries="1"><testcase id="A"><sleep ms="200"/><send>ping</send><expect timeout="5">^pong$</expect></testcase></scenario>"#,
        )
        .await;
    assert_eq!(d.queue.status, QueueStatus::Passed, "{:?}", cases(&d));
    assert_case(&d, "A", CaseStatus::Flaky, "failed on try 1 (");
    assert_eq!(runs(&boots), 2);
    let log = f.case_log(&d, "A").await;
    assert!(
        log.contains("# case A try 2 of 2 (fresh boot: the emulator exited)"),
        "{log}"
    );
}
