//! The statements that build the API's answers in SQL ([`select`]) and read the `rev`s a
//! request needs ([`stamps`]), in either dialect, and the reading of their rows.

use crate::backend::{Body, Stamp, Version};
use crate::dialect::Dialect;
use crate::rows::Columns;
use crate::{Result, StoreError};
use testarena_core::{CaseStatus, QueueStatus};

impl Dialect {
    /// A JSON object of `pairs` (key, SQL expression).
    fn obj(self, pairs: &[(&str, String)]) -> String {
        let f = match self {
            Dialect::Sqlite => "json_object",
            Dialect::Postgres => "json_build_object",
        };
        let args: Vec<String> = pairs.iter().map(|(k, v)| format!("'{k}', {v}")).collect();
        format!("{f}({})", args.join(", "))
    }

    /// The JSON array of `value` over the rows in `order`; `[]` for no row.
    fn agg(self, value: &str, order: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_group_array({value} ORDER BY {order})"),
            Dialect::Postgres => {
                format!("COALESCE(json_agg({value} ORDER BY {order}), '[]'::json)")
            }
        }
    }

    /// A scalar subquery that yields JSON, as JSON (SQLite forgets across a subquery that a
    /// text is JSON, and would quote it).
    fn sub_json(self, subquery: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json(({subquery}))"),
            Dialect::Postgres => format!("({subquery})"),
        }
    }

    /// A TEXT column holding JSON, as JSON.
    fn json_text(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json({column})"),
            Dialect::Postgres => format!("({column})::json"),
        }
    }

    /// A time in ms since the epoch as `crate::rfc3339` writes it (NULL stays NULL).
    fn time(self, ms: &str) -> String {
        match self {
            // Whole seconds and the milliseconds apart: exact, no floating point.
            Dialect::Sqlite => format!(
                "strftime('%Y-%m-%dT%H:%M:%S', {ms} / 1000, 'unixepoch') || printf('.%03dZ', {ms} % 1000)"
            ),
            Dialect::Postgres => format!(
                "to_char(timestamp 'epoch' + {ms} * interval '1 millisecond', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
            ),
        }
    }

    /// A condition as a JSON boolean.
    fn boolean(self, cond: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json(CASE WHEN {cond} THEN 'true' ELSE 'false' END)"),
            Dialect::Postgres => format!("({cond})"),
        }
    }

    fn least(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Sqlite => format!("MIN({a}, {b})"),
            Dialect::Postgres => format!("LEAST({a}, {b})"),
        }
    }

    fn greatest(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Sqlite => format!("MAX({a}, {b})"),
            Dialect::Postgres => format!("GREATEST({a}, {b})"),
        }
    }

    /// Whether the text `s` holds the character `ch`.
    fn has(self, s: &str, ch: char) -> String {
        match self {
            Dialect::Sqlite => format!("instr({s}, '{ch}') > 0"),
            Dialect::Postgres => format!("strpos({s}, '{ch}') > 0"),
        }
    }

    /// Whether a case id holds a character its links would percent-encode.
    fn needs_encoding(self, key: &str) -> String {
        match self {
            Dialect::Sqlite => format!("{key} GLOB '*[^A-Za-z0-9_.-]*'"),
            Dialect::Postgres => format!("{key} ~ '[^A-Za-z0-9_.-]'"),
        }
    }

    /// Whether every label of the JSON array `wanted` (NULL: none) is in the array `has`.
    fn labels_within(self, wanted: &str, has: &str) -> String {
        match self {
            Dialect::Sqlite => format!(
                "NOT EXISTS (SELECT 1 FROM json_each(COALESCE({wanted}, '[]')) l \
                 WHERE l.value NOT IN (SELECT value FROM json_each({has})))"
            ),
            Dialect::Postgres => format!("COALESCE({wanted}, '[]')::jsonb <@ ({has})::jsonb"),
        }
    }

    /// The labels of the JSON array `labels` (NULL: none), joined by ", " (NULL for none).
    fn labels_joined(self, labels: &str) -> String {
        match self {
            Dialect::Sqlite => {
                format!("(SELECT group_concat(value, ', ' ORDER BY key) FROM json_each({labels}))")
            }
            Dialect::Postgres => format!(
                "(SELECT string_agg(l.value, ', ' ORDER BY l.n) \
                 FROM json_array_elements_text(({labels})::json) WITH ORDINALITY AS l(value, n))"
            ),
        }
    }

    /// A JSON value as text, to be read as a string.
    fn text(self, json: &str) -> String {
        match self {
            Dialect::Sqlite => json.to_string(),
            Dialect::Postgres => format!("({json})::text"),
        }
    }
}

/// A status as an SQL string literal.
fn lit(s: &str) -> String {
    format!("'{s}'")
}

/// As `api::waiting_reason`: why a waiting queue `q` waits, when no worker with a heartbeat at
/// or after `since` (a parameter) can take it; NULL otherwise.
fn reason(d: Dialect, since: &str) -> String {
    let waiting = lit(QueueStatus::Waiting.as_str());
    format!(
        "CASE WHEN q.status = {waiting} AND NOT EXISTS (SELECT 1 FROM workers w \
           WHERE w.heartbeat_at >= {since} AND {within}) \
         THEN CASE WHEN q.labels IS NULL OR q.labels = '[]' THEN 'waiting for a worker (none is alive)' \
              ELSE 'waiting for a worker with labels ' || {joined} END END",
        within = d.labels_within("q.labels", "w.labels"),
        joined = d.labels_joined("q.labels"),
    )
}

/// The statement that builds the JSON of the queues `filter` picks (`WHERE …` on `queues q`),
/// one row each: `id`, `rev`, then the queue's JSON in three parts (`head`: its fields up to
/// `submitted_by`; `reason`: its `waiting_reason` or NULL; `tail`: `summary` and `tasks`), and
/// `raw` (1: see [`QueueJson::raw`]). Parameters: `$1` cases per task, `$2` cases per queue,
/// `$3` workers alive since (ms), then the filter's.
pub(crate) fn select(d: Dialect, filter: &str) -> String {
    let (waiting, running) = (
        lit(QueueStatus::Waiting.as_str()),
        lit(QueueStatus::Running.as_str()),
    );
    let head = d.obj(&[
        ("id", "q.id".into()),
        ("name", "q.name".into()),
        ("repo", "q.repo".into()),
        ("branch", "q.branch".into()),
        ("commit", "q.commit_sha".into()),
        ("status", "q.status".into()),
        ("phase", "q.phase".into()),
        ("priority", "q.priority".into()),
        ("created_at", d.time("q.created_at")),
        ("started_at", d.time("q.started_at")),
        ("finished_at", d.time("q.finished_at")),
        ("error", "q.error".into()),
        ("scenarios", d.json_text("q.scenarios")),
        // Only an unfinished queue shows an abort still asked for.
        (
            "abort_requested",
            d.boolean(&format!(
                "q.abort_requested <> 0 AND q.status IN ({waiting}, {running})"
            )),
        ),
        ("worker", "q.worker_id".into()),
        ("attempts", "q.attempts".into()),
        ("labels", d.json_text("COALESCE(q.labels, '[]')")),
        ("submitted_by", "q.submitted_by".into()),
        ("no_cache", d.boolean("q.no_cache <> 0")),
        (
            "build",
            d.obj(&[("cached_from", "q.build_cached_from".into())]),
        ),
        ("retries", "q.retries".into()),
        ("previous_id", "q.previous_id".into()),
        ("regressions", "q.regressions".into()),
    ]);
    let reason = reason(d, "$3");
    let case_link = |suffix: &str| {
        format!("'/api/v1/queues/' || c.queue_id || '/cases/' || c.case_key || '/log{suffix}?task=' || c.task_id")
    };
    let case = d.obj(&[
        ("id", "c.case_key".into()),
        ("name", "c.name".into()),
        ("status", "c.status".into()),
        (
            "duration_ms",
            "CASE WHEN c.duration_ms < 0 THEN 0 ELSE c.duration_ms END".into(),
        ),
        ("message", "c.message".into()),
        ("log_url", case_link("")),
        ("html_url", case_link(".html")),
    ]);
    // The first `k.lim` cases of task k, numbered in order (LIMIT cannot name k in SQLite).
    let first = "SELECT c.*, ROW_NUMBER() OVER (ORDER BY c.position) AS rn FROM cases c \
                 WHERE c.queue_id = k.queue_id AND c.task_id = k.id";
    // A task that lists no case (most: waiting queues have none) skips the subquery.
    let cases = d.sub_json(&format!(
        "CASE WHEN k.lim = 0 THEN '[]' ELSE (SELECT {} FROM ({first}) c WHERE c.rn <= k.lim) END",
        d.agg(&case, "c.position")
    ));
    let last = format!("(SELECT MAX(c.position) FROM ({first}) c WHERE c.rn <= k.lim)");
    let next = format!(
        "CASE WHEN k.total > k.lim THEN '/api/v1/queues/' || k.queue_id || '/tasks/' || k.id || '/cases' \
         || CASE WHEN k.lim > 0 THEN '?after=' || {last} ELSE '' END END"
    );
    let task = d.obj(&[
        ("id", "k.id".into()),
        ("scenario", "k.scenario".into()),
        ("status", "k.status".into()),
        ("started_at", d.time("k.started_at")),
        ("finished_at", d.time("k.finished_at")),
        ("error", "k.error".into()),
        ("cases", cases),
        ("cases_total", "k.total".into()),
        ("cases_next", next),
    ]);
    let count = |s: CaseStatus| {
        format!(
            "SUM(CASE WHEN status = {} THEN 1 ELSE 0 END)",
            lit(s.as_str())
        )
    };
    // Each task with its counts and how many of its cases are listed (`lim`): its first
    // `$1`, while the queue's first `$2` last (earlier tasks first).
    let tasks = format!(
        "SELECT t.*, {lim} AS lim FROM ( \
           SELECT t.id, t.queue_id, t.position, t.scenario, t.status, t.started_at, t.finished_at, t.error, \
                  COALESCE(n.total, 0) AS total, COALESCE(n.passed, 0) AS passed, COALESCE(n.failed, 0) AS failed, \
                  COALESCE(n.errors, 0) AS errors, COALESCE(n.skipped, 0) AS skipped, \
                  COALESCE(n.flaky, 0) AS flaky, {cap} AS cap \
           FROM tasks t LEFT JOIN ( \
             SELECT task_id, COUNT(*) AS total, {passed} AS passed, {failed} AS failed, {errors} AS errors, {skipped} AS skipped, \
                    {flaky} AS flaky \
             FROM cases WHERE queue_id = q.id GROUP BY task_id) n ON n.task_id = t.id \
           WHERE t.queue_id = q.id) t",
        lim = d.greatest(
            "0",
            &d.least(
                "t.cap",
                "$2 - COALESCE(CAST(SUM(t.cap) OVER (ORDER BY t.position ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS BIGINT), 0)"
            )
        ),
        cap = d.least("COALESCE(n.total, 0)", "$1"),
        passed = count(CaseStatus::Passed),
        failed = count(CaseStatus::Failed),
        errors = count(CaseStatus::Error),
        skipped = count(CaseStatus::Skipped),
        flaky = count(CaseStatus::Flaky),
    );
    let sum = |c: &str| format!("CAST(COALESCE(SUM(k.{c}), 0) AS BIGINT)");
    let tail = d.obj(&[
        (
            "summary",
            d.obj(&[
                ("total", sum("total")),
                ("passed", sum("passed")),
                ("failed", sum("failed")),
                ("error", sum("errors")),
                ("skipped", sum("skipped")),
                ("flaky", sum("flaky")),
            ]),
        ),
        ("tasks", d.agg(&task, "k.position")),
    ]);
    let raw = format!(
        "CASE WHEN {} OR {} OR EXISTS (SELECT 1 FROM cases c WHERE c.queue_id = q.id AND {}) \
         THEN 1 ELSE 0 END",
        d.has("q.repo", '@'),
        d.has("q.repo", '?'),
        d.needs_encoding("c.case_key"),
    );
    let raw = match d {
        Dialect::Sqlite => raw,
        Dialect::Postgres => format!("CAST({raw} AS BIGINT)"),
    };
    format!(
        "SELECT q.id AS id, q.rev AS rev, {head} AS head, {reason} AS reason, \
         (SELECT {tail} FROM ({tasks}) k) AS tail, {raw} AS raw \
         FROM queues q {filter}",
        head = d.text(&head),
        tail = d.text(&tail),
    )
}

/// The statement that reads what a request must read every time of the queues `filter`
/// picks: `id`, `rev` and `reason` (as [`select`]) of each, newest first, as ONE JSON text
/// (`stamps`: `[[id, rev, reason], …]`): with sqlx-sqlite each row of a result is a hand-over
/// from the connection's thread (a futex wake-up), which cost more than the page itself.
/// Parameters: `$1` workers alive since (ms), then the filter's.
pub(crate) fn stamps(d: Dialect, filter: &str) -> String {
    let inner = format!(
        "SELECT q.id AS id, q.rev AS rev, {} AS reason FROM queues q {filter}",
        reason(d, "$1")
    );
    let all = match d {
        Dialect::Sqlite => "json_group_array(json_array(s.id, s.rev, s.reason) ORDER BY s.id DESC)",
        Dialect::Postgres => {
            "COALESCE(json_agg(json_build_array(s.id, s.rev, s.reason) ORDER BY s.id DESC), '[]')"
        }
    };
    format!(
        "SELECT {} AS stamps, {} FROM ({inner}) s",
        d.text(all),
        version_columns(d, "$1")
    )
}

/// The columns `seq` and `alive` of a [`Version`](crate::backend::Version): the change counter,
/// and the distinct label sets of the workers with a heartbeat at or after `since`, as JSON text.
fn version_columns(d: Dialect, since: &str) -> String {
    let alive = match d {
        Dialect::Sqlite => format!(
            "(SELECT json_group_array(l) FROM (SELECT DISTINCT COALESCE(w.labels, '[]') AS l \
             FROM workers w WHERE w.heartbeat_at >= {since} ORDER BY l))"
        ),
        Dialect::Postgres => format!(
            "(SELECT COALESCE(json_agg(DISTINCT l ORDER BY l), '[]')::text FROM \
             (SELECT COALESCE(w.labels, '[]') AS l FROM workers w WHERE w.heartbeat_at >= {since}) x)"
        ),
    };
    format!("(SELECT value FROM change_seq WHERE id = 1) AS seq, {alive} AS alive")
}

/// The statement that reads the [`Version`](crate::backend::Version) now; `$1`: workers alive
/// since (ms).
pub(crate) fn version(d: Dialect) -> String {
    format!("SELECT {}", version_columns(d, "$1"))
}

/// The filter of the queues whose ids the parameter `$4` holds (a JSON array for SQLite, an
/// array for PostgreSQL).
pub(crate) fn ids_filter(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "WHERE q.id IN (SELECT value FROM json_each($4))",
        Dialect::Postgres => "WHERE q.id = ANY($4)",
    }
}

/// The stamp of one queue as a plain row (`id`, `rev`, `reason`): `$1` workers alive since
/// (ms), `$2` its id. No version and no JSON: a request for one queue needs neither, and on
/// PostgreSQL they were most of the statement's cost (bench/NOTES.md, issue 14 goal 4).
pub(crate) fn stamp(d: Dialect) -> String {
    format!(
        "SELECT q.id AS id, q.rev AS rev, {} AS reason FROM queues q WHERE q.id = $2",
        reason(d, "$1")
    )
}

/// The row of [`stamp`].
pub(crate) fn stamp_of(r: &impl Columns) -> Result<Stamp> {
    Ok(Stamp {
        id: r.int("id")?,
        rev: r.int("rev")?,
        reason: r.opt_text("reason")?,
    })
}

/// The filter of a page of the list (for [`stamps`]), newest first, and whether it binds a
/// status and a cursor (then `$2`, `$3`, … in that order, the limit last); `worse`: only
/// queues with a case that got worse (`regressions > 0`, as the partial index `queues_worse`
/// says it). One text per combination, so the planner sees plain conditions (and uses
/// `queues (status, id)` for a status).
pub(crate) fn list_filter(status: bool, before: bool, worse: bool) -> String {
    let mut n = 1;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let mut conds = Vec::new();
    if status {
        conds.push(format!("q.status = {}", next()));
    }
    if before {
        conds.push(format!("q.id < {}", next()));
    }
    if worse {
        conds.push("q.regressions > 0".to_string());
    }
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    format!("{filter} ORDER BY q.id DESC LIMIT {}", next())
}

/// The row of [`stamps`], with its version.
pub(crate) fn stamps_of(r: &impl Columns) -> Result<(Vec<Stamp>, Version)> {
    let all: Vec<(i64, i64, Option<String>)> = serde_json::from_str(&r.text("stamps")?)
        .map_err(|e| StoreError::Corrupt(format!("stamps: {e}")))?;
    let stamps = all
        .into_iter()
        .map(|(id, rev, reason)| Stamp { id, rev, reason })
        .collect();
    Ok((stamps, version_of(r)?))
}

/// The columns of [`version`] (or of [`stamps`]).
pub(crate) fn version_of(r: &impl Columns) -> Result<Version> {
    Ok(Version {
        seq: r.int("seq")?,
        alive: r.text("alive")?,
    })
}

/// A row of [`select`]: the queue's JSON (with the reason of the same snapshot).
pub(crate) fn body(r: &impl Columns) -> Result<(Body, Option<String>)> {
    let id = r.int("id")?;
    let head = r.text("head")?;
    let tail = r.text("tail")?;
    let (Some(head), Some(tail)) = (head.strip_suffix('}'), tail.strip_prefix('{')) else {
        return Err(StoreError::Corrupt(format!(
            "queue {id}: its JSON is not two objects"
        )));
    };
    let body = Body {
        id,
        rev: r.int("rev")?,
        head: head.into(),
        tail: tail.into(),
        raw: r.int("raw")? != 0,
    };
    Ok((body, r.opt_text("reason")?))
}
