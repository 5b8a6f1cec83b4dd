-- The worker's build cache (issue 15): `no_cache` 1 makes the queue build even when an earlier
-- build of the same commit could be reused; `build_cached_from` is the queue whose build it
-- reused instead of building (NULL: it built, or has not reached the build yet).
ALTER TABLE queues ADD COLUMN no_cache INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN build_cached_from INTEGER;

-- Both show in the queue's answer, which the server keeps by the queue's `rev` (0011): a
-- change of either gives the queue a new one.
CREATE TRIGGER queues_build_changed
AFTER UPDATE OF no_cache, build_cached_from ON queues
BEGIN
    UPDATE change_seq SET value = value + 1;
    UPDATE queues SET rev = (SELECT value FROM change_seq) WHERE id = NEW.id;
END;
