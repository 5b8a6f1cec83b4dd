-- A case's log is the range of its queue's log it spans (byte offsets into queue.log, across
-- attempts): no file per case is written while the emulator runs; its page is made on request.
ALTER TABLE cases ADD COLUMN log_from BIGINT;
ALTER TABLE cases ADD COLUMN log_to BIGINT;
