-- Change tracking for live updates: every visible change to a queue, its tasks or cases gives
-- the queue a new `rev` from one global counter; deleted queues are remembered with theirs.
-- The server polls `change_seq` and sends what changed to dashboard clients.
ALTER TABLE queues ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
-- Re-run of failed cases only: {"scenario.xml": ["CASE_ID", ...]}; NULL runs every case.
ALTER TABLE queues ADD COLUMN case_filter TEXT;
CREATE INDEX queues_rev ON queues (rev);

CREATE TABLE change_seq (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
INSERT INTO change_seq (id, value) VALUES (1, 0);

CREATE TABLE deleted_queues (id INTEGER PRIMARY KEY, rev INTEGER NOT NULL);

CREATE TRIGGER queues_changed_ins AFTER INSERT ON queues BEGIN
    UPDATE change_seq SET value = value + 1;
    UPDATE queues SET rev = (SELECT value FROM change_seq) WHERE id = NEW.id;
END;

CREATE TRIGGER queues_changed_upd
AFTER UPDATE OF status, phase, commit_sha, error, abort_requested, started_at, finished_at, worker_id, attempts ON queues
BEGIN
    UPDATE change_seq SET value = value + 1;
    UPDATE queues SET rev = (SELECT value FROM change_seq) WHERE id = NEW.id;
END;

CREATE TRIGGER queues_changed_del AFTER DELETE ON queues BEGIN
    UPDATE change_seq SET value = value + 1;
    INSERT OR REPLACE INTO deleted_queues (id, rev) VALUES (OLD.id, (SELECT value FROM change_seq));
END;

CREATE TRIGGER tasks_changed_ins AFTER INSERT ON tasks BEGIN
    UPDATE change_seq SET value = value + 1;
    UPDATE queues SET rev = (SELECT value FROM change_seq) WHERE id = NEW.queue_id;
END;

CREATE TRIGGER tasks_changed_upd AFTER UPDATE ON tasks BEGIN
    UPDATE change_seq SET value = value + 1;
    UPDATE queues SET rev = (SELECT value FROM change_seq) WHERE id = NEW.queue_id;
END;

CREATE TRIGGER cases_changed_ins AFTER INSERT ON cases BEGIN
    UPDATE change_seq SET value = value + 1;
    UPDATE queues SET rev = (SELECT value FROM change_seq) WHERE id = NEW.queue_id;
END;

CREATE TRIGGER cases_changed_upd AFTER UPDATE ON cases BEGIN
    UPDATE change_seq SET value = value + 1;
    UPDATE queues SET rev = (SELECT value FROM change_seq) WHERE id = NEW.queue_id;
END;
