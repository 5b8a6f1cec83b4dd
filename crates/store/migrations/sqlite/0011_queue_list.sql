-- The API's list of queues of one status, newest first (`WHERE status = ? ORDER BY id DESC
-- LIMIT ?`): without it the planner sorts every queue of that status to find a page.
CREATE INDEX queues_status_id ON queues (status, id);

-- The server keeps each queue's answer with the `rev` it was built at (crates/store/src/page.rs),
-- so every change of what the answer shows must give the queue a new `rev`: also a change of
-- the columns a queue is created with (no code changes them today), and deleted tasks and
-- cases (a queue that starts over deletes them).
CREATE TRIGGER queues_changed_fields
AFTER UPDATE OF name, repo, branch, priority, created_at, scenarios, labels, submitted_by ON queues
BEGIN
    UPDATE change_seq SET value = value + 1;
    UPDATE queues SET rev = (SELECT value FROM change_seq) WHERE id = NEW.id;
END;

CREATE TRIGGER tasks_changed_del AFTER DELETE ON tasks BEGIN
    UPDATE change_seq SET value = value + 1;
    UPDATE queues SET rev = (SELECT value FROM change_seq) WHERE id = OLD.queue_id;
END;

CREATE TRIGGER cases_changed_del AFTER DELETE ON cases BEGIN
    UPDATE change_seq SET value = value + 1;
    UPDATE queues SET rev = (SELECT value FROM change_seq) WHERE id = OLD.queue_id;
END;
