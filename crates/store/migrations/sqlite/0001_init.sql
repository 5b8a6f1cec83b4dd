-- Queues, their tasks (one per scenario file) and test cases, the workers and the process
-- groups they started. Times are milliseconds since the Unix epoch, UTC.
CREATE TABLE queues (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT    NOT NULL,
    repo             TEXT    NOT NULL,
    branch           TEXT    NOT NULL,
    requested_commit TEXT,
    commit_sha       TEXT,
    scenarios        TEXT,              -- JSON array, NULL = the repository's default set
    status           TEXT    NOT NULL,
    phase            TEXT,
    priority         INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    error            TEXT,
    abort_requested  INTEGER NOT NULL DEFAULT 0,
    worker_id        TEXT,
    lease_expires_at INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX queues_waiting ON queues (status, priority DESC, id);

CREATE TABLE tasks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id    INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    scenario    TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    started_at  INTEGER,
    finished_at INTEGER,
    error       TEXT
);
CREATE INDEX tasks_queue ON tasks (queue_id, position);

CREATE TABLE cases (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    queue_id    INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    case_key    TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    duration_ms INTEGER,
    message     TEXT,
    started_at  INTEGER,
    finished_at INTEGER
);
CREATE INDEX cases_queue ON cases (queue_id, task_id, position);

CREATE TABLE workers (
    id           TEXT    PRIMARY KEY,
    hostname     TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    concurrency  INTEGER NOT NULL,
    boot_id      TEXT    NOT NULL
);

CREATE TABLE process_groups (
    pgid      INTEGER NOT NULL,
    worker_id TEXT    NOT NULL,
    hostname  TEXT    NOT NULL,
    boot_id   TEXT    NOT NULL,
    queue_id  INTEGER,
    command   TEXT    NOT NULL,
    PRIMARY KEY (hostname, pgid)
);
