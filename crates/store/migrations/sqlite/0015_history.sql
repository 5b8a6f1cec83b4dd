-- Case history (issue 16). When a worker finishes a queue as passed, failed or error with a
-- resolved commit, it is a *run*: its case verdicts go into `case_results` with the
-- repository (as the API shows it, credentials hidden: `repo_key`), branch, commit and
-- scenario, in the same transaction as the verdict (crates/store/src/history.rs). The queue
-- then names the previous run of its repository and branch (`previous_id`) and counts the
-- cases that got worse since (`regressions`: passed or flaky there, failed or error now).
ALTER TABLE queues ADD COLUMN repo_key TEXT;          -- set on runs only
ALTER TABLE queues ADD COLUMN previous_id INTEGER;    -- may name a queue deleted since
ALTER TABLE queues ADD COLUMN regressions INTEGER;    -- NULL: not compared

-- The previous run of a repository and branch.
CREATE INDEX queues_runs ON queues (repo_key, branch, finished_at, id) WHERE repo_key IS NOT NULL;
-- The board's "got worse" filter, newest first (`WHERE regressions > 0 ORDER BY id DESC`).
CREATE INDEX queues_worse ON queues (id) WHERE regressions > 0;

CREATE TABLE case_results (
    case_id     INTEGER PRIMARY KEY,               -- the row of `cases` it was copied from
    queue_id    INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    repo_key    TEXT    NOT NULL,
    branch      TEXT    NOT NULL,
    commit_sha  TEXT    NOT NULL,
    scenario    TEXT    NOT NULL,
    case_key    TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    duration_ms INTEGER,
    finished_at INTEGER NOT NULL                   -- when its queue finished
);
-- A case's last results (newest first), on every branch or on one.
CREATE INDEX case_results_case ON case_results (repo_key, scenario, case_key, finished_at, queue_id);
CREATE INDEX case_results_branch ON case_results (repo_key, branch, scenario, case_key, finished_at, queue_id);
-- A run's results, matched by case against another run's (regressions, deletes).
CREATE INDEX case_results_queue ON case_results (queue_id, scenario, case_key);

-- The runs finished before this version, where SQL can tell their key: a URL without '@' or
-- '?' (or a local path, or git's user@host:path form) shows as it is stored. Queues given up
-- after their worker was lost are no runs.
UPDATE queues SET repo_key = repo
WHERE status IN ('passed', 'failed', 'error') AND commit_sha IS NOT NULL AND finished_at IS NOT NULL
  AND (instr(repo, '://') = 0 OR (instr(repo, '@') = 0 AND instr(repo, '?') = 0))
  AND NOT (status = 'error' AND COALESCE(error, '') LIKE 'worker lost%');

INSERT INTO case_results (case_id, queue_id, repo_key, branch, commit_sha, scenario, case_key, status, duration_ms, finished_at)
SELECT c.id, c.queue_id, q.repo_key, q.branch, q.commit_sha, t.scenario, c.case_key, c.status, c.duration_ms, q.finished_at
FROM cases c JOIN tasks t ON t.id = c.task_id JOIN queues q ON q.id = c.queue_id
WHERE q.repo_key IS NOT NULL AND c.status NOT IN ('pending', 'running');

UPDATE queues SET previous_id = w.previous
FROM (SELECT id, LAG(id) OVER (PARTITION BY repo_key, branch ORDER BY finished_at, id) AS previous
      FROM queues WHERE repo_key IS NOT NULL) AS w
WHERE w.id = queues.id AND w.previous IS NOT NULL;

UPDATE queues SET regressions = (
    SELECT COUNT(*) FROM case_results n
    WHERE n.queue_id = queues.id AND n.status IN ('failed', 'error')
      AND EXISTS (SELECT 1 FROM case_results p WHERE p.queue_id = queues.previous_id
                  AND p.scenario = n.scenario AND p.case_key = n.case_key
                  AND p.status IN ('passed', 'flaky')))
WHERE previous_id IS NOT NULL;

-- Both show in the queue's answer, which the server keeps by the queue's `rev` (0011): a change
-- of either gives the queue a new one. (Made after the backfill, which changed no answer kept:
-- a server starts with none.)
CREATE TRIGGER queues_history_changed
AFTER UPDATE OF previous_id, regressions ON queues
BEGIN
    UPDATE change_seq SET value = value + 1;
    UPDATE queues SET rev = (SELECT value FROM change_seq) WHERE id = NEW.id;
END;
