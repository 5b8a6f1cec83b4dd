-- Retries and flaky verdicts (issue 16, as migrations/sqlite/0014): how many times a failed
-- test case is tried again when its scenario does not say (`<testcase retries>` and
-- `<scenario retries>` win), 0..=5. A case that failed and then passed gets the status
-- 'flaky' (a text like the others: no change of the cases table).
ALTER TABLE queues ADD COLUMN retries BIGINT NOT NULL DEFAULT 0;

-- It shows in the queue's answer, which the server keeps by the queue's `rev` (0007): a
-- change of it (none is made today) gives the queue a new one.
CREATE TRIGGER queues_retries_changed
    BEFORE UPDATE OF retries
    ON queues FOR EACH ROW EXECUTE FUNCTION testarena_queue_rev();
