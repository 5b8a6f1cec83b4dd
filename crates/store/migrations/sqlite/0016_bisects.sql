-- Bisects (issue 16): the search of a commit range for the first commit that breaks the
-- scenarios, one step queue at a time. A driver in a worker process claims a bisect that needs
-- a decision (new, or its step queue ended) for a while (`driver`, `claimed_until`; `claims`
-- counts claims and fences the driver's writes, as a queue's `attempts` does), reads the
-- repository, and records the step's verdict with the next step queue in one transaction.
CREATE TABLE bisects (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    repo          TEXT    NOT NULL,
    good          TEXT    NOT NULL,   -- as given: a SHA or a branch or tag name
    bad           TEXT    NOT NULL,
    scenarios     TEXT,               -- JSON array, NULL = the repository's default set
    case_key      TEXT,               -- the one case that decides; NULL: the queue's verdict
    priority      INTEGER NOT NULL,   -- of the step queues
    labels        TEXT,               -- JSON array, NULL = any worker
    submitted_by  TEXT,
    status        TEXT    NOT NULL,   -- running | found | undecided | aborted | error
    message       TEXT,
    created_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    good_sha      TEXT,               -- resolved by the driver
    bad_sha       TEXT,
    range_size    INTEGER,            -- commits in good..bad
    commits       TEXT,               -- JSON [{commit, subject, author}], good first, bad last
    result_index  INTEGER,            -- the first bad commit's index in `commits`
    current_queue INTEGER,            -- the step queue waited for
    driver        TEXT,
    claimed_until INTEGER,            -- also: not to be claimed before (after a failure)
    claims        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX bisects_status ON bisects (status, id);
CREATE INDEX bisects_current_queue ON bisects (current_queue);

-- The steps: one commit each, tested by a queue (and by a second one when the first failed).
-- Queue ids are not foreign keys: a deleted queue leaves its step (and ends the bisect if it
-- was waited for).
CREATE TABLE bisect_steps (
    bisect_id      INTEGER NOT NULL REFERENCES bisects (id) ON DELETE CASCADE,
    position       INTEGER NOT NULL,
    commit_index   INTEGER NOT NULL,
    commit_sha     TEXT    NOT NULL,
    subject        TEXT    NOT NULL,
    author         TEXT    NOT NULL,
    queue_id       INTEGER NOT NULL,
    rerun_queue_id INTEGER,
    verdict        TEXT,               -- good | bad | skip; NULL while it runs
    note           TEXT,
    PRIMARY KEY (bisect_id, position)
);
