//! `testarena bisect`: starts a bisect on the server and, with `--wait`, follows it: each step
//! as it starts and ends, then the first bad commit with its subject and author.
//!
//! Exit codes: 0 found (or started, without `--wait`), 2 it could not decide (undecided,
//! aborted, error), 3 bad input, an API refusal or connection trouble.

use super::{print_json, write_stdout, ConnArgs, Fail, EXIT_ERROR, EXIT_OK};
use clap::Args;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use testarena_client::{Bisect, BisectStatus, BisectStep, Client, NewBisect};
use testarena_core::bisect::short;

/// How often a followed bisect is read.
const POLL: Duration = Duration::from_millis(500);
/// How long a follower keeps trying while the server is away (a restart, say).
const RETRY_FOR: Duration = Duration::from_secs(120);

/// `testarena bisect`.
#[derive(Debug, Clone, Args)]
pub struct BisectArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Git URL of the firmware repository (or a local path the server allows)
    #[arg(long, value_name = "URL")]
    pub repo: String,
    /// A commit that passes: a SHA, a branch or a tag
    #[arg(long, value_name = "REV")]
    pub good: String,
    /// A later commit that fails (a descendant of --good): a SHA, a branch or a tag
    #[arg(long, value_name = "REV")]
    pub bad: String,
    /// Scenario file each step runs; repeatable [default: the repository's default set]
    #[arg(long = "scenario", value_name = "PATH.xml")]
    pub scenarios: Vec<String>,
    /// Only this test case decides good or bad (other failing cases do not count)
    #[arg(long, value_name = "ID")]
    pub case: Option<String>,
    /// Priority of the step queues, 0..9 [default: 2, below a queue's 5]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub priority: Option<i64>,
    /// Label a worker must have to run the steps; repeatable, or comma-separated
    #[arg(long = "label", value_name = "LABEL", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Follow the bisect: print the steps as they happen, then the first bad commit; exit 0
    /// found, 2 could not decide
    #[arg(long)]
    pub wait: bool,
    /// Print the API's JSON instead of text (with --wait: the finished bisect only)
    #[arg(long)]
    pub json: bool,
}

/// Runs `testarena bisect`.
pub(crate) async fn bisect(api: &Client, a: BisectArgs) -> Result<i32, Fail> {
    let new = NewBisect {
        repo: a.repo,
        good: a.good,
        bad: a.bad,
        scenarios: (!a.scenarios.is_empty()).then_some(a.scenarios),
        case: a.case,
        priority: a.priority,
        labels: (!a.labels.is_empty()).then_some(a.labels),
    };
    let created = api.create_bisect_answer(&new).await?;
    let id = created.value.id;
    if a.json && !a.wait {
        print_json(&created.text)?;
        return Ok(EXIT_OK);
    }
    let url = api.bisect_dashboard_url(id);
    if !a.json {
        println!("bisect {id} started: {url}");
    } else {
        eprintln!("bisect {id} started: {url}");
    }
    if !a.wait {
        return Ok(EXIT_OK);
    }
    let done = follow(api, id, !a.json).await?;
    if a.json {
        print_json(&api.bisect_answer(id).await?.text)?;
        return Ok(exit_code(done.status));
    }
    write_stdout(conclusion(&done).as_bytes())?;
    println!("{url}");
    Ok(exit_code(done.status))
}

/// The exit code of a finished bisect: 0 found, 2 anything else.
fn exit_code(status: BisectStatus) -> i32 {
    match status {
        BisectStatus::Found => EXIT_OK,
        _ => EXIT_ERROR,
    }
}

/// Reads the bisect until it ends; with `print`, tells of each step as it starts and ends.
async fn follow(api: &Client, id: i64, print: bool) -> Result<Bisect, Fail> {
    let mut shown = Shown::default();
    let mut trouble: Option<Instant> = None;
    loop {
        match api.bisect(id).await {
            Ok(b) => {
                trouble = None;
                if print {
                    let news = shown.news(&b);
                    write_stdout(news.as_bytes())?;
                }
                if b.status.is_finished() {
                    return Ok(b);
                }
            }
            Err(e)
                if e.is_transient()
                    && trouble.get_or_insert_with(Instant::now).elapsed() < RETRY_FOR =>
            {
                eprintln!("testarena: {e}; retrying");
            }
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What was printed of a bisect so far, so each news is printed once.
#[derive(Debug, Default)]
struct Shown {
    range: bool,
    /// By step number: the queues announced, and whether its verdict was printed.
    steps: HashMap<usize, (bool, bool)>,
}

impl Shown {
    /// The lines for what changed since the last call.
    fn news(&mut self, b: &Bisect) -> String {
        let mut out = String::new();
        if let (false, Some(n), Some(good), Some(bad)) =
            (self.range, b.range_size, &b.good_commit, &b.bad_commit)
        {
            self.range = true;
            out.push_str(&format!(
                "range: {n} commits after good {} up to bad {}\n",
                short(good),
                short(bad)
            ));
        }
        for (i, s) in b.steps.iter().enumerate() {
            let n = i + 1;
            let (rerun_told, verdict_told) = self.steps.entry(n).or_insert_with(|| {
                out.push_str(&started(n, s, b.range_size));
                (false, false)
            });
            if let (false, Some(q)) = (*rerun_told, s.rerun_queue_id) {
                *rerun_told = true;
                out.push_str(&format!(
                    "step {n}: it failed; running it again to rule out a flaky case (queue #{q})\n"
                ));
            }
            if let (false, Some(v)) = (*verdict_told, s.verdict) {
                *verdict_told = true;
                let note = s
                    .note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                out.push_str(&format!("step {n}: {} is {v}{note}\n", short(&s.commit)));
            }
        }
        out
    }
}

/// The line of a step that started.
fn started(n: usize, s: &BisectStep, range: Option<u64>) -> String {
    let of = range.map(|r| format!(" of {r}")).unwrap_or_default();
    format!(
        "step {n}: testing {} {:?} ({}{of} after good; queue #{})\n",
        short(&s.commit),
        s.subject,
        s.index,
        s.queue_id
    )
}

/// What a finished bisect found, or why it found nothing.
fn conclusion(b: &Bisect) -> String {
    match (&b.status, &b.result) {
        (BisectStatus::Found, Some(r)) => format!(
            "first bad commit: {}\n  subject: {}\n  author:  {}\nfound in {} steps\n",
            r.commit,
            r.subject,
            r.author,
            b.steps.len()
        ),
        (status, _) => format!(
            "bisect {} {status}: {}\n",
            b.id,
            b.message.as_deref().unwrap_or("no reason given")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testarena_client::{BisectCommit, StepVerdict};

    fn bisect(steps: Vec<BisectStep>, status: BisectStatus) -> Bisect {
        Bisect {
            id: 3,
            repo: "r".into(),
            good: "v1".into(),
            bad: "main".into(),
            good_commit: Some("a".repeat(40)),
            bad_commit: Some("b".repeat(40)),
            scenarios: None,
            case: None,
            priority: 2,
            labels: Vec::new(),
            submitted_by: None,
            status,
            message: None,
            range_size: Some(15),
            current_queue: None,
            result: None,
            steps,
            created_at: String::new(),
            finished_at: None,
        }
    }

    fn step(verdict: Option<StepVerdict>, rerun: Option<i64>) -> BisectStep {
        BisectStep {
            index: 8,
            commit: "c".repeat(40),
            subject: "uart: faster".into(),
            author: "A <a@x>".into(),
            queue_id: 7,
            rerun_queue_id: rerun,
            verdict,
            note: None,
        }
    }

    #[test]
    fn each_news_is_told_once() {
        let mut shown = Shown::default();
        let first = shown.news(&bisect(vec![step(None, None)], BisectStatus::Running));
        assert_eq!(
            first,
            "range: 15 commits after good aaaaaaa up to bad bbbbbbb\n\
             step 1: testing ccccccc \"uart: faster\" (8 of 15 after good; queue #7)\n"
        );
        assert_eq!(
            shown.news(&bisect(vec![step(None, None)], BisectStatus::Running)),
            ""
        );
        let later = shown.news(&bisect(
            vec![step(Some(StepVerdict::Bad), Some(9))],
            BisectStatus::Running,
        ));
        assert_eq!(
            later,
            "step 1: it failed; running it again to rule out a flaky case (queue #9)\n\
             step 1: ccccccc is bad\n"
        );
    }

    #[test]
    fn the_answer_names_the_commit_or_the_reason() {
        let mut found = bisect(Vec::new(), BisectStatus::Found);
        found.result = Some(BisectCommit {
            commit: "d".repeat(40),
            subject: "break it".into(),
            author: "B <b@x>".into(),
        });
        let text = conclusion(&found);
        assert!(text.starts_with(&format!("first bad commit: {}\n", "d".repeat(40))));
        assert!(text.contains("subject: break it") && text.contains("author:  B <b@x>"));
        assert_eq!(exit_code(BisectStatus::Found), 0);
        let mut undecided = bisect(Vec::new(), BisectStatus::Undecided);
        undecided.message = Some("the bad commit bbbbbbb passes".into());
        assert_eq!(
            conclusion(&undecided),
            "bisect 3 undecided: the bad commit bbbbbbb passes\n"
        );
        for s in [
            BisectStatus::Undecided,
            BisectStatus::Aborted,
            BisectStatus::Error,
        ] {
            assert_eq!(exit_code(s), 2);
        }
    }
}
