-- Commit statuses to send for queues with an origin (a Gitea push): the database records what
-- each one should show (`wanted`: `running` once it started, then its verdict) as the queue
-- changes, whoever changed it, and the sender records what it posted. A sender claims a report
-- until `claimed_until`, so two servers never post the same one; a restart misses nothing.
CREATE TABLE status_reports (
    queue_id      INTEGER PRIMARY KEY REFERENCES queues (id) ON DELETE CASCADE,
    wanted        TEXT    NOT NULL,
    posted        TEXT,
    claimed_by    TEXT,
    claimed_until INTEGER,
    rounds        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX status_reports_due ON status_reports (queue_id) WHERE posted IS NOT wanted;

-- A started queue (it has a `started_at`) wants its new status reported; a queue taken back
-- to wait again keeps what it wanted (it is still being tested).
CREATE TRIGGER status_reports_follow AFTER UPDATE OF status ON queues
WHEN NEW.origin IS NOT NULL AND NEW.started_at IS NOT NULL AND NEW.status IS NOT OLD.status
     AND NEW.status <> 'waiting'
BEGIN
    INSERT OR IGNORE INTO status_reports (queue_id, wanted) VALUES (NEW.id, NEW.status);
    UPDATE status_reports SET wanted = NEW.status WHERE queue_id = NEW.id;
END;
