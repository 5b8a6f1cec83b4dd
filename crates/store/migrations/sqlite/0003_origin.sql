-- Where a queue came from (a Gitea push), as JSON; its verdict is reported back there.
ALTER TABLE queues ADD COLUMN origin TEXT;
