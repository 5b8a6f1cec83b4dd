-- Labels (issue 12, as migrations/sqlite/0006): a queue may ask for labels (JSON array of
-- names, NULL = none) that a worker must all have to claim it; a worker records its version
-- and labels (JSON array).
ALTER TABLE queues ADD COLUMN labels TEXT;
ALTER TABLE workers ADD COLUMN version TEXT NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';
