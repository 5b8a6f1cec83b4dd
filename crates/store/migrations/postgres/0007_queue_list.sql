-- The API's list of queues of one status, newest first (`WHERE status = $1 ORDER BY id DESC
-- LIMIT $2`), as migrations/sqlite/0011: without it a page walks the queues by id.
CREATE INDEX queues_status_id ON queues (status, id);

-- The server keeps each queue's answer with the `rev` it was built at (crates/store/src/page.rs),
-- so every change of what the answer shows must give the queue a new `rev` (as
-- migrations/sqlite/0011): also a change of the columns a queue is created with, and deleted
-- tasks and cases. Deletes are counted once per statement (a queue that starts over deletes
-- all its cases at once; one update of the queue per case would be slow in one transaction).
CREATE TRIGGER queues_changed_fields
    BEFORE UPDATE OF name, repo, branch, priority, created_at, scenarios, labels, submitted_by
    ON queues FOR EACH ROW EXECUTE FUNCTION testarena_queue_rev();

CREATE FUNCTION testarena_children_gone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE queues SET rev = testarena_next_rev(id)
        WHERE id IN (SELECT DISTINCT queue_id FROM gone);
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_changed_del AFTER DELETE ON tasks REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION testarena_children_gone();
CREATE TRIGGER cases_changed_del AFTER DELETE ON cases REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION testarena_children_gone();
