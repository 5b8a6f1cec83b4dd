-- A queue's files (issue 12, as migrations/sqlite/0007): its logs, case logs and HTML pages,
-- junit.xml and the files its builds left, as chunks of bytes in order, so every server
-- replica reads them from the database and nothing on a worker's disk is needed. `name` is the
-- path inside the queue (e.g. `queue.log`, `01-smoke/TC_1.log`); chunk `start` is its byte
-- offset in that file.
CREATE TABLE queue_files (
    queue_id BIGINT NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    name     TEXT NOT NULL,
    start    BIGINT NOT NULL,
    data     BYTEA NOT NULL,
    PRIMARY KEY (queue_id, name, start)
);

-- New chunks wake the live consoles of every server replica (payload: the queue id; one
-- notification per queue and transaction, PostgreSQL folds duplicates).
CREATE FUNCTION testarena_files_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('testarena_files', NEW.queue_id::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER queue_files_notify AFTER INSERT ON queue_files
    FOR EACH ROW EXECUTE FUNCTION testarena_files_notify();
