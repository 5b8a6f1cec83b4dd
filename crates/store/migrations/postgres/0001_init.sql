-- The PostgreSQL schema, the same tables and behaviour as migrations/sqlite (0001 to 0005 in one):
-- queues, their tasks (one per scenario file) and test cases, the workers and the process groups
-- they started, change tracking for live views, and commit statuses to report. Times are
-- milliseconds since the Unix epoch, UTC; every integer is BIGINT (the store reads them as i64).
CREATE TABLE queues (
    id               BIGSERIAL PRIMARY KEY,
    name             TEXT    NOT NULL,
    repo             TEXT    NOT NULL,
    branch           TEXT    NOT NULL,
    requested_commit TEXT,
    commit_sha       TEXT,
    scenarios        TEXT,              -- JSON array, NULL = the repository's default set
    status           TEXT    NOT NULL,
    phase            TEXT,
    priority         BIGINT  NOT NULL,
    created_at       BIGINT  NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    error            TEXT,
    abort_requested  BIGINT  NOT NULL DEFAULT 0,
    worker_id        TEXT,
    lease_expires_at BIGINT,
    attempts         BIGINT  NOT NULL DEFAULT 0,
    rev              BIGINT  NOT NULL DEFAULT 0,
    -- Re-run of failed cases only: {"scenario.xml": ["CASE_ID", ...]}; NULL runs every case.
    case_filter      TEXT,
    -- Where a queue came from (a Gitea push), as JSON; its verdict is reported back there.
    origin           TEXT,
    -- The webhook delivery a queue was made for: a replayed delivery finds its queue.
    delivery         TEXT
);
CREATE INDEX queues_waiting ON queues (status, priority DESC, id);
CREATE INDEX queues_rev ON queues (rev);
CREATE UNIQUE INDEX queues_delivery ON queues (delivery) WHERE delivery IS NOT NULL;

CREATE TABLE tasks (
    id          BIGSERIAL PRIMARY KEY,
    queue_id    BIGINT NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    position    BIGINT NOT NULL,
    scenario    TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    started_at  BIGINT,
    finished_at BIGINT,
    error       TEXT
);
CREATE INDEX tasks_queue ON tasks (queue_id, position);

CREATE TABLE cases (
    id          BIGSERIAL PRIMARY KEY,
    task_id     BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    queue_id    BIGINT NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    position    BIGINT NOT NULL,
    case_key    TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    duration_ms BIGINT,
    message     TEXT,
    started_at  BIGINT,
    finished_at BIGINT
);
CREATE INDEX cases_queue ON cases (queue_id, task_id, position);
CREATE INDEX cases_task ON cases (task_id, position);

CREATE TABLE workers (
    id           TEXT   PRIMARY KEY,
    hostname     TEXT   NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    concurrency  BIGINT NOT NULL,
    boot_id      TEXT   NOT NULL
);

CREATE TABLE process_groups (
    pgid      BIGINT NOT NULL,
    worker_id TEXT   NOT NULL,
    hostname  TEXT   NOT NULL,
    boot_id   TEXT   NOT NULL,
    queue_id  BIGINT,
    command   TEXT   NOT NULL,
    PRIMARY KEY (hostname, pgid)
);

-- Change tracking: every visible change to a queue, its tasks or cases gives the queue a new
-- `rev` from one global counter (one row: writers take their numbers in commit order, so a
-- reader that saw counter N has seen every change up to N); deleted queues keep theirs.
-- Every change also sends NOTIFY testarena_changes (payload: the queue id), and a new waiting
-- queue NOTIFY testarena_work, so live views and idle workers in other processes wake at once.
CREATE TABLE change_seq (id BIGINT PRIMARY KEY CHECK (id = 1), value BIGINT NOT NULL);
INSERT INTO change_seq (id, value) VALUES (1, 0);

CREATE TABLE deleted_queues (id BIGINT PRIMARY KEY, rev BIGINT NOT NULL);

CREATE FUNCTION testarena_next_rev(queue BIGINT) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
BEGIN
    UPDATE change_seq SET value = value + 1 WHERE id = 1 RETURNING value INTO n;
    PERFORM pg_notify('testarena_changes', queue::text);
    RETURN n;
END $$;

-- The queue's own visible columns (as SQLite's `AFTER UPDATE OF …`): a new rev on the row.
CREATE FUNCTION testarena_queue_rev() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.rev := testarena_next_rev(NEW.id);
    IF NEW.status = 'waiting' AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'waiting') THEN
        PERFORM pg_notify('testarena_work', NEW.id::text);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER queues_changed_ins BEFORE INSERT ON queues
    FOR EACH ROW EXECUTE FUNCTION testarena_queue_rev();
CREATE TRIGGER queues_changed_upd
    BEFORE UPDATE OF status, phase, commit_sha, error, abort_requested, started_at, finished_at, worker_id, attempts
    ON queues FOR EACH ROW EXECUTE FUNCTION testarena_queue_rev();

CREATE FUNCTION testarena_queue_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO deleted_queues (id, rev) VALUES (OLD.id, testarena_next_rev(OLD.id))
        ON CONFLICT (id) DO UPDATE SET rev = excluded.rev;
    RETURN OLD;
END $$;
CREATE TRIGGER queues_changed_del AFTER DELETE ON queues
    FOR EACH ROW EXECUTE FUNCTION testarena_queue_deleted();

-- A task or case changed: its queue gets a new rev.
CREATE FUNCTION testarena_child_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE queues SET rev = testarena_next_rev(NEW.queue_id) WHERE id = NEW.queue_id;
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_changed AFTER INSERT OR UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION testarena_child_changed();
CREATE TRIGGER cases_changed AFTER INSERT OR UPDATE ON cases
    FOR EACH ROW EXECUTE FUNCTION testarena_child_changed();

-- Commit statuses to send for queues with an origin (see migrations/sqlite/0005): what each
-- should show (`wanted`), what the sender posted, and who holds it until when.
CREATE TABLE status_reports (
    queue_id      BIGINT PRIMARY KEY REFERENCES queues (id) ON DELETE CASCADE,
    wanted        TEXT   NOT NULL,
    posted        TEXT,
    claimed_by    TEXT,
    claimed_until BIGINT,
    rounds        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX status_reports_due ON status_reports (queue_id) WHERE posted IS DISTINCT FROM wanted;

-- A started queue wants its new status reported; one taken back to wait keeps what it wanted.
CREATE FUNCTION testarena_report_follows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO status_reports (queue_id, wanted) VALUES (NEW.id, NEW.status)
        ON CONFLICT (queue_id) DO UPDATE SET wanted = excluded.wanted;
    RETURN NULL;
END $$;
CREATE TRIGGER status_reports_follow AFTER UPDATE OF status ON queues FOR EACH ROW
    WHEN (NEW.origin IS NOT NULL AND NEW.started_at IS NOT NULL
          AND NEW.status IS DISTINCT FROM OLD.status AND NEW.status <> 'waiting')
    EXECUTE FUNCTION testarena_report_follows();
