//! `testarena history` (a case's last results across queues) and `testarena compare` (two
//! queues' cases side by side): readable tables of `GET /api/v1/history` and `GET
//! /api/v1/queues/{a}/compare/{b}`.

use super::render::{age, clean, cut, indented, short_sha, table};
use super::{connect, now, parse_id, print_json, write_stdout, ConnArgs, Fail, IdArg, EXIT_OK};
use crate::config::CommonArgs;
use clap::Args;
use std::fmt::Write as _;
use testarena_client::{CaseHistory, ComparedCase, Comparison, HistoryQuery};
use time::OffsetDateTime;

/// Widest a message gets in the compare table before it is cut.
const MESSAGE_WIDTH: usize = 72;

/// `testarena history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The repository, as submitted or as the API shows it
    #[arg(long, value_name = "URL")]
    pub repo: String,
    /// The scenario file (e.g. scenarios/smoke.xml)
    #[arg(long, value_name = "PATH.xml")]
    pub scenario: String,
    /// The test case id in that file
    #[arg(long = "case", value_name = "ID")]
    pub case: String,
    /// Only results of this branch [default: every branch]
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
    /// How many results, newest first (1..500) [default: 50]
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Print the API's JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// `testarena compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The queue to compare with (the older one, usually)
    #[arg(value_name = "BASE")]
    pub base: String,
    /// The queue whose cases are compared (the newer one)
    #[arg(value_name = "HEAD")]
    pub head: String,
    /// Print the API's JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// Runs `testarena history`.
pub(crate) async fn history(a: HistoryArgs, common: &CommonArgs) -> Result<i32, Fail> {
    let api = connect(&a.conn, common)?;
    let query = HistoryQuery {
        repo: a.repo,
        scenario: a.scenario,
        case: a.case,
        branch: a.branch,
        limit: a.limit,
    };
    let answer = api.case_history_answer(&query).await?;
    if a.json {
        print_json(&answer.text)?;
    } else {
        write_stdout(history_text(&answer.value, now()).as_bytes())?;
    }
    Ok(EXIT_OK)
}

/// Runs `testarena compare`.
pub(crate) async fn compare(a: CompareArgs, common: &CommonArgs) -> Result<i32, Fail> {
    let api = connect(&a.conn, common)?;
    let base = parse_id(&IdArg { id: a.base })?;
    let head = parse_id(&IdArg { id: a.head })?;
    let answer = api.compare_answer(base, head).await?;
    if a.json {
        print_json(&answer.text)?;
    } else {
        write_stdout(compare_text(&answer.value).as_bytes())?;
    }
    Ok(EXIT_OK)
}

/// A rate as a percentage, `-` when there is none.
fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".into(), |r| format!("{:.0}%", r * 100.0))
}

/// `history`: the case, its rates, its results (newest first) and where its verdict changed.
pub fn history_text(h: &CaseHistory, now: OffsetDateTime) -> String {
    let mut out = String::new();
    let branch = h.branch.as_deref().map_or_else(
        || "every branch".to_string(),
        |b| format!("branch {}", clean(b)),
    );
    let _ = writeln!(
        out,
        "{} {} in {} ({branch})",
        clean(&h.scenario),
        clean(&h.case),
        clean(&h.repo)
    );
    if h.results.is_empty() {
        out.push_str("no results: no finished run of this repository has this case\n");
        return out;
    }
    let c = &h.stats.counts;
    let counted = c.passed + c.failed + c.error + c.flaky;
    let _ = writeln!(
        out,
        "pass rate {} ({} of {counted}), flaky rate {}, over the last {} results",
        percent(h.stats.pass_rate),
        c.passed,
        percent(h.stats.flaky_rate),
        h.results.len()
    );
    if !h.stats.flaky_commits.is_empty() {
        let commits: Vec<String> = h
            .stats
            .flaky_commits
            .iter()
            .map(|c| short_sha(Some(c)))
            .collect();
        let _ = writeln!(out, "flaky on {}", commits.join(", "));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = h
        .results
        .iter()
        .map(|r| {
            vec![
                r.queue.to_string(),
                r.status.to_string(),
                short_sha(Some(&r.commit)),
                cut(&clean(&r.branch), 32),
                age(&r.finished_at, now),
                r.duration_ms
                    .map_or_else(|| "-".into(), |d| format!("{d} ms")),
            ]
        })
        .collect();
    out.push_str(&table(
        &["QUEUE", "STATUS", "COMMIT", "BRANCH", "AGE", "DURATION"],
        &rows,
    ));
    if !h.stats.change_points.is_empty() {
        out.push_str("\nverdict changed (oldest first):\n");
        for p in &h.stats.change_points {
            let _ = writeln!(
                out,
                "  {}  {} -> {}  (queue {})",
                short_sha(Some(&p.commit)),
                p.from,
                p.to,
                p.queue
            );
        }
    }
    out
}

/// `compare`: the two queues, then each list of cases that changed.
pub fn compare_text(c: &Comparison) -> String {
    let mut out = String::new();
    let side = |q: &testarena_client::ComparedQueue| {
        format!(
            "queue {} ({} {}, {})",
            q.id,
            clean(&q.branch),
            short_sha(q.commit.as_deref()),
            q.status
        )
    };
    let _ = writeln!(out, "{} -> {}", side(&c.base), side(&c.head));
    let n = &c.counts;
    let lists: [(&str, &[ComparedCase], u64); 5] = [
        ("newly failing", &c.newly_failing, n.newly_failing),
        ("newly passing", &c.newly_passing, n.newly_passing),
        ("still failing", &c.still_failing, n.still_failing),
        ("new", &c.new, n.new),
        ("removed", &c.removed, n.removed),
    ];
    for (title, cases, total) in lists {
        let _ = writeln!(out, "\n{title} ({total}):");
        if cases.is_empty() {
            out.push_str("  none\n");
            continue;
        }
        let rows: Vec<Vec<String>> = cases.iter().map(compared_row).collect();
        let table = table(&["  SCENARIO", "CASE", "BEFORE", "NOW", "MESSAGE"], &rows);
        out.push_str(&table);
        if total > cases.len() as u64 {
            let _ = writeln!(out, "  ... and {} more", total - cases.len() as u64);
        }
    }
    let _ = writeln!(out, "\nunchanged: {}", n.unchanged);
    out
}

/// One row of a compare list: the message is the head's (or the base's for a removed case),
/// its first line cut short.
fn compared_row(c: &ComparedCase) -> Vec<String> {
    let status =
        |s: Option<testarena_client::ResultStatus>| s.map_or("-".into(), |s| s.to_string());
    let message = c.head_message.as_ref().or(c.base_message.as_ref());
    let first = message
        .map(|m| indented(m).lines().next().unwrap_or_default().to_string())
        .unwrap_or_default();
    vec![
        format!("  {}", clean(&c.scenario)),
        clean(&c.case),
        status(c.base_status),
        status(c.head_status),
        cut(&first, MESSAGE_WIDTH),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use testarena_client::{ComparedQueue, QueueStatus, ResultStatus};

    fn when(s: &str) -> OffsetDateTime {
        super::super::render::parse_time(s).unwrap()
    }

    #[test]
    fn a_history_reads_as_rates_a_table_and_changes() {
        let json = serde_json::json!({
            "repo": "https://***@h/fw.git", "scenario": "s.xml", "case": "TC_A", "branch": null,
            "results": [
                {"queue": 3, "branch": "main", "commit": "cccccccccc", "status": "failed", "finished_at": "2026-01-01T00:10:00.000Z", "duration_ms": 12},
                {"queue": 2, "branch": "main", "commit": "bbbbbbbbbb", "status": "passed", "finished_at": "2026-01-01T00:05:00.000Z", "duration_ms": null}
            ],
            "counts": {"passed": 1, "failed": 1, "error": 0, "skipped": 0, "flaky": 0},
            "pass_rate": 0.5, "flaky_rate": 0.0, "flaky_commits": [],
            "change_points": [{"commit": "cccccccccc", "from": "passed", "to": "failed", "queue": 3}]
        });
        let h: CaseHistory = serde_json::from_value(json).unwrap();
        let text = history_text(&h, when("2026-01-01T00:20:00Z"));
        assert!(
            text.starts_with("s.xml TC_A in https://***@h/fw.git (every branch)\n"),
            "{text}"
        );
        assert!(
            text.contains("pass rate 50% (1 of 2), flaky rate 0%"),
            "{text}"
        );
        assert!(text.contains("QUEUE  STATUS  COMMIT   BRANCH  AGE  DURATION\n3      failed  ccccccc  main    10m  12 ms\n2      passed  bbbbbbb  main    15m  -\n"), "{text}");
        assert!(
            text.contains("  ccccccc  passed -> failed  (queue 3)"),
            "{text}"
        );
    }

    #[test]
    fn a_comparison_lists_what_changed() {
        let q = |id| ComparedQueue {
            id,
            branch: "main".into(),
            commit: Some("abcdef123456".into()),
            status: QueueStatus::Failed,
        };
        let case = |id: &str, before, now, message: Option<&str>| ComparedCase {
            scenario: "s.xml".into(),
            case: id.into(),
            name: id.into(),
            base_status: before,
            head_status: now,
            base_message: None,
            head_message: message.map(str::to_string),
        };
        let c = Comparison {
            base: q(1),
            head: q(2),
            newly_failing: vec![case(
                "TC_A",
                Some(ResultStatus::Passed),
                Some(ResultStatus::Failed),
                Some("expect timed out\nlast lines"),
            )],
            newly_passing: vec![],
            still_failing: vec![],
            new: vec![case("TC_N", None, Some(ResultStatus::Passed), None)],
            removed: vec![],
            counts: testarena_client::CompareCounts {
                newly_failing: 1,
                new: 1,
                unchanged: 4,
                ..Default::default()
            },
        };
        let text = compare_text(&c);
        assert!(
            text.starts_with("queue 1 (main abcdef1, failed) -> queue 2 (main abcdef1, failed)\n"),
            "{text}"
        );
        assert!(text.contains("newly failing (1):\n  SCENARIO  CASE  BEFORE  NOW     MESSAGE\n  s.xml     TC_A  passed  failed  expect timed out\n"), "{text}");
        assert!(text.contains("newly passing (0):\n  none\n"), "{text}");
        assert!(text.contains("new (1):\n  SCENARIO  CASE  BEFORE  NOW     MESSAGE\n  s.xml     TC_N  -       passed\n"), "{text}");
        assert!(text.ends_with("\nunchanged: 4\n"), "{text}");
    }
}
