-- A queue's files (issue 12): its logs, case logs and HTML pages, junit.xml and the files its
-- builds left, as chunks of bytes in order, so every server replica reads them from the
-- database and nothing on a worker's disk is needed. `name` is the path inside the queue
-- (e.g. `queue.log`, `01-smoke/TC_1.log`); chunk `start` is its byte offset in that file.
CREATE TABLE queue_files (
    queue_id INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    name     TEXT NOT NULL,
    start    INTEGER NOT NULL,
    data     BLOB NOT NULL,
    PRIMARY KEY (queue_id, name, start)
);
