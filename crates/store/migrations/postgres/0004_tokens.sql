-- API tokens (issue 13, as migrations/sqlite/0008): a token's text is `ta_<id>_<secret>`; only
-- the SHA-256 of the secret (lower-case hex) is kept, looked up by id. `scope` is read, submit
-- or admin. Revoking a token deletes its row, so every server replica refuses it at its next
-- request. Times are milliseconds since the Unix epoch; `expires_at` NULL: never;
-- `last_used_at` is updated at most about once a minute per token and server process.
CREATE TABLE tokens (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT   NOT NULL UNIQUE,
    scope        TEXT   NOT NULL,
    hash         TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at   BIGINT
);
-- The name of the token that submitted a queue (NULL: no token, or a webhook). A name, not a
-- reference: the queue keeps it after the token is revoked.
ALTER TABLE queues ADD COLUMN submitted_by TEXT;
