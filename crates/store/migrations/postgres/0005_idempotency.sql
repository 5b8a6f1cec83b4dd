-- Idempotency-Key of a submit (as migrations/sqlite/0009): a client that sends the same
-- request again with the same key (after a dropped answer) gets the queue its first try made.
-- The key is scoped by its caller (idem_caller: SHA-256 hex of the caller's token, '' for
-- anonymous callers), and idem_request is a SHA-256 hex digest of the request, so the same key
-- with another request is refused. The unique index makes two concurrent tries make one queue.
ALTER TABLE queues ADD COLUMN idem_caller TEXT;
ALTER TABLE queues ADD COLUMN idem_key TEXT;
ALTER TABLE queues ADD COLUMN idem_request TEXT;
CREATE UNIQUE INDEX queues_idem ON queues (idem_caller, idem_key) WHERE idem_key IS NOT NULL;
