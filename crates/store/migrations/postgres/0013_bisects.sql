-- Bisects (issue 16, as migrations/sqlite/0016): the search of a commit range for the first
-- commit that breaks the scenarios, one step queue at a time. A driver in a worker process
-- claims a bisect that needs a decision (new, or its step queue ended) for a while (`driver`,
-- `claimed_until`; `claims` counts claims and fences the driver's writes, as a queue's
-- `attempts` does), reads the repository, and records the step's verdict with the next step
-- queue in one transaction.
CREATE TABLE bisects (
    id            BIGSERIAL PRIMARY KEY,
    repo          TEXT   NOT NULL,
    good          TEXT   NOT NULL,   -- as given: a SHA or a branch or tag name
    bad           TEXT   NOT NULL,
    scenarios     TEXT,              -- JSON array, NULL = the repository's default set
    case_key      TEXT,              -- the one case that decides; NULL: the queue's verdict
    priority      BIGINT NOT NULL,   -- of the step queues
    labels        TEXT,              -- JSON array, NULL = any worker
    submitted_by  TEXT,
    status        TEXT   NOT NULL,   -- running | found | undecided | aborted | error
    message       TEXT,
    created_at    BIGINT NOT NULL,
    finished_at   BIGINT,
    good_sha      TEXT,              -- resolved by the driver
    bad_sha       TEXT,
    range_size    BIGINT,            -- commits in good..bad
    commits       TEXT,              -- JSON [{commit, subject, author}], good first, bad last
    result_index  BIGINT,            -- the first bad commit's index in `commits`
    current_queue BIGINT,            -- the step queue waited for
    driver        TEXT,
    claimed_until BIGINT,            -- also: not to be claimed before (after a failure)
    claims        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX bisects_status ON bisects (status, id);
CREATE INDEX bisects_current_queue ON bisects (current_queue);

-- The steps: one commit each, tested by a queue (and by a second one when the first failed).
-- Queue ids are not foreign keys: a deleted queue leaves its step (and ends the bisect if it
-- was waited for).
CREATE TABLE bisect_steps (
    bisect_id      BIGINT NOT NULL REFERENCES bisects (id) ON DELETE CASCADE,
    position       BIGINT NOT NULL,
    commit_index   BIGINT NOT NULL,
    commit_sha     TEXT   NOT NULL,
    subject        TEXT   NOT NULL,
    author         TEXT   NOT NULL,
    queue_id       BIGINT NOT NULL,
    rerun_queue_id BIGINT,
    verdict        TEXT,              -- good | bad | skip; NULL while it runs
    note           TEXT,
    PRIMARY KEY (bisect_id, position)
);

-- Drivers in other processes wake at once (NOTIFY testarena_bisects, payload: the bisect id)
-- when a bisect is created and when the step queue a running bisect waits for ends or is
-- deleted; a driver whose claim ran out is found by the drivers' slow poll.
CREATE FUNCTION testarena_bisect_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('testarena_bisects', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER bisects_created AFTER INSERT ON bisects
    FOR EACH ROW EXECUTE FUNCTION testarena_bisect_created();

CREATE FUNCTION testarena_bisect_step_ended() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    queue BIGINT;
    waiting BIGINT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        queue := OLD.id;
    ELSE
        queue := NEW.id;
    END IF;
    FOR waiting IN SELECT id FROM bisects WHERE current_queue = queue AND status = 'running' LOOP
        PERFORM pg_notify('testarena_bisects', waiting::text);
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER queues_bisect_step_ended AFTER UPDATE OF status ON queues FOR EACH ROW
    WHEN (NEW.status IN ('passed', 'failed', 'error', 'aborted')
          AND NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION testarena_bisect_step_ended();
CREATE TRIGGER queues_bisect_step_deleted AFTER DELETE ON queues FOR EACH ROW
    EXECUTE FUNCTION testarena_bisect_step_ended();
