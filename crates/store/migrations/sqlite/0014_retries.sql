-- Retries and flaky verdicts (issue 16): how many times a failed test case is tried again
-- when its scenario does not say (`<testcase retries>` and `<scenario retries>` win), 0..=5.
-- A case that failed and then passed gets the status 'flaky' (a text like the others: no
-- change of the cases table).
ALTER TABLE queues ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;

-- It shows in the queue's answer, which the server keeps by the queue's `rev` (0011): a
-- change of it (none is made today) gives the queue a new one.
CREATE TRIGGER queues_retries_changed
AFTER UPDATE OF retries ON queues
BEGIN
    UPDATE change_seq SET value = value + 1;
    UPDATE queues SET rev = (SELECT value FROM change_seq) WHERE id = NEW.id;
END;
