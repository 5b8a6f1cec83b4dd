//! Human output: the queue table, one queue in detail, ages and durations.

use std::fmt::Write as _;
use testarena_client::{Queue, Summary};
use testarena_core::{CaseStatus, QueueStatus};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Widest a BRANCH cell gets before it is cut.
const BRANCH_WIDTH: usize = 32;

/// Parses an RFC 3339 time from the API.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// A short human span: `42s`, `5m`, `3h`, `2d`.
pub fn short_span(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m", secs / 60)
    } else if secs < 48 * 3600 {
        format!("{}h", secs / 3600)
    } else {
        format!("{}d", secs / 86400)
    }
}

/// A duration with two units at most: `45s`, `3m 20s`, `1h 5m`.
pub fn long_span(secs: u64) -> String {
    if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m {}s", secs / 60, secs % 60)
    } else {
        format!("{}h {}m", secs / 3600, (secs % 3600) / 60)
    }
}

/// How long ago `at` (RFC 3339) was, seen from `now`; `-` if it does not parse.
pub fn age(at: &str, now: OffsetDateTime) -> String {
    match parse_time(at) {
        Some(t) => short_span((now - t).whole_seconds()),
        None => "-".into(),
    }
}

/// The first 7 characters of a commit SHA, or `-`.
pub fn short_sha(commit: Option<&str>) -> String {
    match commit {
        Some(c) if !c.is_empty() => c.chars().take(7).collect(),
        _ => "-".into(),
    }
}

/// Cuts `s` to `max` characters, marking the cut with `…`.
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Replaces control characters, so a name cannot move the cursor or break the table.
pub(crate) fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A multi-line message with its later lines indented under the first, each line cleaned.
pub(crate) fn indented(s: &str) -> String {
    s.trim_end()
        .lines()
        .map(clean)
        .collect::<Vec<_>>()
        .join("\n      ")
}

/// How many cases have a verdict.
pub fn done_cases(s: &Summary) -> u64 {
    s.done()
}

/// `passed/total` (flaky cases passed too, and are named), or `-` when the queue has no cases
/// yet.
fn cases_cell(s: &Summary) -> String {
    if s.total == 0 {
        "-".into()
    } else if s.flaky > 0 {
        format!("{}/{} ({} flaky)", s.passed + s.flaky, s.total, s.flaky)
    } else {
        format!("{}/{}", s.passed, s.total)
    }
}

/// A finished queue's status with its flaky cases: `passed, 2 flaky`.
pub fn verdict_text(q: &Queue) -> String {
    if q.summary.flaky > 0 && q.status.is_finished() {
        format!("{}, {} flaky", q.status, q.summary.flaky)
    } else {
        q.status.to_string()
    }
}

/// Lays out rows under a header with columns aligned; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0);
                let _ = write!(line, "{cell:<pad$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The `queues` table.
pub fn queue_table(queues: &[Queue], now: OffsetDateTime) -> String {
    let header = [
        "ID", "STATUS", "PHASE", "PRI", "BRANCH", "SHA", "CASES", "BY", "AGE", "NAME",
    ];
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            let status = if q.abort_requested {
                format!("{}*", q.status)
            } else {
                q.status.to_string()
            };
            vec![
                q.id.to_string(),
                status,
                q.phase.map_or_else(|| "-".into(), |p| p.to_string()),
                q.priority.to_string(),
                cut(&clean(&q.branch), BRANCH_WIDTH),
                short_sha(q.commit.as_deref()),
                cases_cell(&q.summary),
                q.submitted_by.as_deref().map_or_else(|| "-".into(), clean),
                age(&q.created_at, now),
                clean(&q.name),
            ]
        })
        .collect();
    table(&header, &rows)
}

/// What a queue is doing, in a few words: `testing 3/5 cases, 1 failed`.
pub fn describe(q: &Queue) -> String {
    let s = &q.summary;
    let mut out = match q.status {
        QueueStatus::Waiting => "waiting for a worker".to_string(),
        QueueStatus::Running => match q.phase {
            Some(p) if p == testarena_core::Phase::Testing && s.total > 0 => {
                format!("testing {}/{} cases", done_cases(s), s.total)
            }
            Some(p) => p.to_string(),
            None => "starting".to_string(),
        },
        _ => {
            let finished = verdict_text(q);
            if s.total > 0 {
                let passed = s.passed + s.flaky;
                format!("{finished}: {passed}/{} cases passed", s.total)
            } else {
                finished
            }
        }
    };
    if s.failed > 0 {
        let _ = write!(out, ", {} failed", s.failed);
    }
    if s.error > 0 {
        let _ = write!(out, ", {} error", s.error);
    }
    if s.skipped > 0 && q.status.is_finished() {
        let _ = write!(out, ", {} skipped", s.skipped);
    }
    if q.abort_requested && !q.status.is_finished() {
        out.push_str(" (abort requested)");
    }
    out
}

/// The cases (and tasks) that did not pass, one line each, for the end of `submit --wait`.
pub fn problems(q: &Queue) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = &q.error {
        out.push(format!("error: {}", indented(e)));
    }
    let mut listed = 0;
    for t in &q.tasks {
        if let Some(e) = &t.error {
            out.push(format!("{} {}: {}", t.status, t.scenario, indented(e)));
        }
        for c in &t.cases {
            let bad = matches!(c.status, CaseStatus::Failed | CaseStatus::Error);
            // A flaky case passed, but its failed tries are worth a line.
            if bad || c.status == CaseStatus::Flaky {
                listed += u64::from(bad);
                let mut line = format!("{} {} {}", c.status, t.scenario, c.id);
                if let Some(m) = &c.message {
                    let _ = write!(line, ": {}", indented(m));
                }
                out.push(line);
            }
        }
    }
    // A big queue's answer lists only the first cases of each task.
    let bad = q.summary.failed + q.summary.error;
    if bad > listed {
        out.push(format!(
            "... and {} more failed or errored cases (see the dashboard)",
            bad - listed
        ));
    }
    out
}

/// `show`: one queue with its tasks and cases.
pub fn queue_detail(q: &Queue, dashboard: &str, now: OffsetDateTime) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Queue {}  {}", q.id, clean(&q.name));
    let mut field = |k: &str, v: String| {
        let _ = writeln!(out, "  {k:<10}{v}");
    };
    let mut status = verdict_text(q);
    if let Some(p) = q.phase {
        let _ = write!(status, " ({p})");
    }
    if q.abort_requested {
        status.push_str(", abort requested");
    }
    field("status", status);
    field("repo", clean(&q.repo));
    field("branch", clean(&q.branch));
    field(
        "commit",
        q.commit
            .clone()
            .unwrap_or_else(|| "(not fetched yet)".into()),
    );
    field("priority", q.priority.to_string());
    if let Some(by) = &q.submitted_by {
        field("by", clean(by));
    }
    if let Some(list) = &q.scenarios {
        field("scenarios", clean(&list.join(" ")));
    }
    field(
        "created",
        format!("{} ({} ago)", q.created_at, age(&q.created_at, now)),
    );
    if let Some(t) = &q.started_at {
        field("started", t.clone());
    }
    if let Some(t) = &q.finished_at {
        let took = match (q.started_at.as_deref().and_then(parse_time), parse_time(t)) {
            (Some(a), Some(b)) => format!(
                " (took {})",
                long_span((b - a).whole_seconds().max(0) as u64)
            ),
            _ => String::new(),
        };
        field("finished", format!("{t}{took}"));
    }
    if let Some(w) = &q.worker {
        field("worker", clean(w));
    }
    if q.attempts > 1 {
        field("attempts", q.attempts.to_string());
    }
    if !q.labels.is_empty() {
        field("labels", clean(&q.labels.join(", ")));
    }
    if q.retries > 0 {
        field("retries", q.retries.to_string());
    }
    if let Some(from) = q.build.cached_from {
        field("build", format!("cached from queue #{from}"));
    } else if q.no_cache {
        field("build", "no cache asked for".to_string());
    }
    if let Some(why) = &q.waiting_reason {
        field("waiting", clean(why));
    }
    let s = &q.summary;
    if s.total > 0 {
        field(
            "cases",
            format!(
                "{} total: {} passed, {} failed, {} error, {} skipped{}",
                s.total,
                s.passed,
                s.failed,
                s.error,
                s.skipped,
                match s.flaky {
                    0 => String::new(),
                    n => format!(", {n} flaky"),
                }
            ),
        );
    }
    if let Some(e) = &q.error {
        field("error", clean(e));
    }
    field("dashboard", dashboard.to_string());
    if !q.tasks.is_empty() {
        out.push('\n');
        out.push_str(&tasks_table(q));
    }
    out
}

/// The table of a queue's tasks and their cases (and how many more a long task has).
pub fn tasks_table(q: &Queue) -> String {
    let mut rows = Vec::new();
    for t in &q.tasks {
        rows.push(vec![
            clean(&t.scenario),
            t.status.to_string(),
            String::new(),
            t.error.as_deref().map(clean).unwrap_or_default(),
        ]);
        for c in &t.cases {
            let mut label = format!("  {}", clean(&c.id));
            if !c.name.is_empty() && c.name != c.id {
                let _ = write!(label, " ({})", clean(&c.name));
            }
            rows.push(vec![
                label,
                c.status.to_string(),
                c.duration_ms.map(ms).unwrap_or_default(),
                c.message.as_deref().map(clean).unwrap_or_default(),
            ]);
        }
        if let Some(next) = &t.cases_next {
            let more = t.cases_total.saturating_sub(t.cases.len() as u64);
            rows.push(vec![
                format!("  ... {more} more cases"),
                String::new(),
                String::new(),
                format!("GET {}", clean(next)),
            ]);
        }
    }
    table(&["SCENARIO / CASE", "STATUS", "TIME", "MESSAGE"], &rows)
}

/// A case duration: `850ms`, `3.2s`, `2m 5s`.
fn ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        long_span(ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testarena_client::{Case, Task};
    use testarena_core::Phase;

    fn queue() -> Queue {
        Queue {
            id: 7,
            name: "nightly\x1b[2J".into(),
            repo: "https://example.com/fw.git".into(),
            branch: "feature/very-long-branch-name-that-goes-on-and-on".into(),
            commit: Some("0123456789abcdef".into()),
            status: QueueStatus::Running,
            phase: Some(Phase::Testing),
            priority: 5,
            created_at: "2026-01-01T10:00:00.000Z".into(),
            started_at: Some("2026-01-01T10:00:05.000Z".into()),
            finished_at: None,
            error: None,
            scenarios: None,
            abort_requested: false,
            worker: Some("host-1".into()),
            attempts: 1,
            labels: Vec::new(),
            submitted_by: Some("ci".into()),
            waiting_reason: None,
            no_cache: false,
            retries: 0,
            build: Default::default(),
            previous_id: None,
            regressions: None,
            summary: Summary {
                total: 5,
                passed: 2,
                failed: 1,
                error: 0,
                skipped: 0,
                flaky: 0,
            },
            tasks: vec![Task {
                id: 1,
                scenario: "scenarios/boot.xml".into(),
                status: CaseStatus::Running,
                started_at: None,
                finished_at: None,
                error: None,
                cases: vec![Case {
                    id: "TC_1".into(),
                    name: "boot".into(),
                    status: CaseStatus::Failed,
                    duration_ms: Some(3200),
                    message: Some("expect '^ok$' missed".into()),
                    log_url: String::new(),
                    html_url: String::new(),
                }],
                cases_total: 1,
                cases_next: None,
            }],
        }
    }

    fn now() -> OffsetDateTime {
        parse_time("2026-01-01T10:03:00Z").unwrap()
    }

    #[test]
    fn spans_are_short() {
        assert_eq!(short_span(-3), "0s");
        assert_eq!(short_span(59), "59s");
        assert_eq!(short_span(180), "3m");
        assert_eq!(short_span(7200), "2h");
        assert_eq!(short_span(3 * 86400), "3d");
        assert_eq!(long_span(200), "3m 20s");
        assert_eq!(long_span(3700), "1h 1m");
        assert_eq!(ms(850), "850ms");
        assert_eq!(ms(3200), "3.2s");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["ID", "NAME"],
            &[
                vec!["1".into(), "a".into()],
                vec!["100".into(), "b c".into()],
            ],
        );
        assert_eq!(t, "ID   NAME\n1    a\n100  b c\n");
    }

    #[test]
    fn queue_row_has_every_column() {
        let t = queue_table(&[queue()], now());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID  STATUS"), "{t}");
        assert!(lines[0].ends_with("AGE  NAME"), "{t}");
        let row = lines[1];
        for want in [
            "7", "running", "testing", "0123456", "2/5", " ci ", "3m", "nightly",
        ] {
            assert!(row.contains(want), "{want} missing in {row}");
        }
        assert!(row.contains('…'), "long branch is cut: {row}");
        assert!(!row.contains('\x1b'), "control characters are removed");
    }

    #[test]
    fn describe_counts_cases() {
        let mut q = queue();
        assert_eq!(describe(&q), "testing 3/5 cases, 1 failed");
        q.status = QueueStatus::Failed;
        q.phase = None;
        assert_eq!(describe(&q), "failed: 2/5 cases passed, 1 failed");
        q.status = QueueStatus::Waiting;
        q.summary = Summary::default();
        assert_eq!(describe(&q), "waiting for a worker");
        assert_eq!(problems(&queue()).len(), 1);
    }

    #[test]
    fn detail_lists_cases() {
        let d = queue_detail(&queue(), "http://h/#/queues/7", now());
        for want in [
            "Queue 7",
            "running (testing)",
            "by        ci",
            "scenarios/boot.xml",
            "TC_1 (boot)",
            "3.2s",
            "missed",
            "http://h/#/queues/7",
        ] {
            assert!(d.contains(want), "{want} missing in\n{d}");
        }
    }

    #[test]
    fn detail_says_where_the_build_came_from() {
        let mut q = queue();
        let d = queue_detail(&q, "http://h/#/queues/7", now());
        assert!(
            !d.contains("build "),
            "nothing to say of a plain build:\n{d}"
        );
        q.build.cached_from = Some(3);
        let d = queue_detail(&q, "http://h/#/queues/7", now());
        assert!(d.contains("build     cached from queue #3"), "{d}");
        q.build.cached_from = None;
        q.no_cache = true;
        let d = queue_detail(&q, "http://h/#/queues/7", now());
        assert!(d.contains("build     no cache asked for"), "{d}");
    }

    #[test]
    fn flaky_cases_pass_and_are_named() {
        let mut q = queue();
        q.status = QueueStatus::Passed;
        q.phase = None;
        q.retries = 2;
        q.summary = Summary {
            total: 5,
            passed: 3,
            flaky: 2,
            ..Summary::default()
        };
        q.tasks[0].cases[0].status = CaseStatus::Flaky;
        q.tasks[0].cases[0].message = Some("flaky: failed on try 1 (x), passed on try 2".into());
        assert_eq!(describe(&q), "passed, 2 flaky: 5/5 cases passed");
        let t = queue_table(std::slice::from_ref(&q), now());
        assert!(t.contains("5/5 (2 flaky)"), "{t}");
        let d = queue_detail(&q, "http://h/#/queues/7", now());
        for want in [
            "status    passed, 2 flaky",
            "retries   2",
            "5 total: 3 passed, 0 failed, 0 error, 0 skipped, 2 flaky",
            "flaky  ",
            "flaky: failed on try 1 (x), passed on try 2",
        ] {
            assert!(d.contains(want), "{want} missing in\n{d}");
        }
        assert_eq!(
            problems(&q),
            ["flaky scenarios/boot.xml TC_1: flaky: failed on try 1 (x), passed on try 2"]
        );
    }

    #[test]
    fn a_big_task_says_what_is_not_listed() {
        let mut q = queue();
        q.summary.failed = 40;
        q.tasks[0].cases_total = 900;
        q.tasks[0].cases_next = Some("/api/v1/queues/7/tasks/1/cases?after=0".into());
        let d = queue_detail(&q, "http://h/#/queues/7", now());
        assert!(d.contains("... 899 more cases"), "{d}");
        assert!(
            d.contains("GET /api/v1/queues/7/tasks/1/cases?after=0"),
            "{d}"
        );
        let p = problems(&q);
        assert_eq!(
            p.last().unwrap(),
            "... and 39 more failed or errored cases (see the dashboard)"
        );
    }
}
