-- The webhook delivery (Gitea's X-Gitea-Delivery) a queue was made for: a replayed delivery
-- finds its queue instead of making a second one.
ALTER TABLE queues ADD COLUMN delivery TEXT;
CREATE UNIQUE INDEX queues_delivery ON queues (delivery) WHERE delivery IS NOT NULL;
