-- What the server and worker roles of deploy/postgres/roles.sql may do in the TestArena
-- database: the least each needs (found from the SQL of crates/store and the triggers of
-- crates/store/migrations/postgres). Run it in that database, as testarena_owner (or a
-- superuser), after the first `testarena migrate` and again after every upgrade that migrates;
-- running it again changes nothing, and it first takes back what it granted before:
--   psql "postgres://testarena_owner@db.example/testarena" -v ON_ERROR_STOP=1 \
--        -f deploy/postgres/grants.sql
--
-- Triggers run with the privileges of the role whose statement fired them, so a role that
-- changes queues, tasks or cases also needs what the triggers do: UPDATE on queues (the
-- queue's `rev`) and change_seq (the change counter); INSERT and UPDATE on status_reports
-- (a queue with an origin changes status) and deleted_queues (a queue is deleted). NOTIFY
-- (pg_notify) and LISTEN need no privilege. Deleting a queue deletes its tasks, cases and
-- status report through foreign keys, which run as the tables' owner: no DELETE on them.

-- Connect: the three roles only (PUBLIC may connect to, and make temporary tables in, any
-- new database by default).
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO testarena_server, testarena_worker',
                   current_database());
END $$;

-- Schema: only the owner creates (and migrates). `serve` and `worker` leave a database whose
-- migrations are all applied alone, so they need no CREATE; after an upgrade, run
-- `testarena migrate` as testarena_owner first (then this file again). (PostgreSQL 14 and
-- older: the schema belongs to the superuser and PUBLIC may create in it; run this file as the
-- superuser there.)
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO testarena_owner;
GRANT USAGE ON SCHEMA public TO testarena_server, testarena_worker;

-- Start from nothing, so a privilege taken out of this file is taken back by running it.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM testarena_server, testarena_worker;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM testarena_server, testarena_worker;

-- --- testarena_server (`testarena serve`) ---------------------------------------------------
-- Reads everything (queues, tasks, cases, workers, the change counter, deleted queues, commit
-- statuses; _sqlx_migrations for the migrator's check).
GRANT SELECT ON ALL TABLES IN SCHEMA public TO testarena_server;
-- Creates queues with their tasks (submit, rerun, webhook), aborts them (a waiting one and
-- its tasks at once, a running one by setting abort_requested) and deletes them.
GRANT INSERT, UPDATE, DELETE ON queues TO testarena_server;
GRANT INSERT, UPDATE ON tasks TO testarena_server;
GRANT USAGE ON SEQUENCE queues_id_seq, tasks_id_seq TO testarena_server;
-- Triggers: the change counter, the ids of deleted queues, commit statuses to send. The
-- Gitea reporter also claims and updates status_reports rows.
GRANT UPDATE ON change_seq TO testarena_server;
GRANT INSERT, UPDATE ON deleted_queues TO testarena_server;
GRANT INSERT, UPDATE ON status_reports TO testarena_server;

-- --- testarena_worker (`testarena worker`) --------------------------------------------------
-- Claims queues and holds them (status, lease, phase, commit, abort_requested, attempts),
-- finishes them, hands them back, takes back those whose lease ran out; never deletes one (and
-- creates only a bisect's step queues, see below).
GRANT SELECT, UPDATE ON queues TO testarena_worker;
-- The tasks and cases of the queues it runs: made after the checkout, dropped when a queue
-- starts over.
GRANT SELECT, INSERT, UPDATE, DELETE ON tasks, cases TO testarena_worker;
GRANT USAGE ON SEQUENCE tasks_id_seq, cases_id_seq TO testarena_worker;
-- Its own row (register, heartbeat, unregister; rows of dead workers on its host) and the
-- process groups it started (a restarted worker kills those of its dead predecessor).
GRANT SELECT, INSERT, UPDATE, DELETE ON workers, process_groups TO testarena_worker;
-- Triggers: the change counter; a finished queue with an origin wants its status sent.
GRANT SELECT, UPDATE ON change_seq TO testarena_worker;
GRANT SELECT, INSERT, UPDATE ON status_reports TO testarena_worker;
-- The migrator's check of the applied migrations.
GRANT SELECT ON _sqlx_migrations TO testarena_worker;

-- --- Chunks of logs and files (queue_files), once a migration has made the table -----------
-- The worker writes them (and drops a queue's when it starts over); the server reads them
-- and deletes them with the queue.
DO $$
BEGIN
    IF to_regclass('queue_files') IS NOT NULL THEN
        GRANT SELECT, INSERT, DELETE ON queue_files TO testarena_worker;
        GRANT SELECT, DELETE ON queue_files TO testarena_server;
    END IF;
END $$;

-- --- API tokens (tokens), once a migration has made the table ------------------------------
-- `testarena token create|list|revoke` run with serve's own configuration, so as the server
-- role: it makes, lists and deletes tokens. The server reads a token on every request that
-- carries one and records when it was last used (that column only). The worker never sees
-- them.
DO $$
BEGIN
    IF to_regclass('tokens') IS NOT NULL THEN
        GRANT SELECT, INSERT, DELETE ON tokens TO testarena_server;
        GRANT UPDATE (last_used_at) ON tokens TO testarena_server;
        GRANT USAGE ON SEQUENCE tokens_id_seq TO testarena_server;
    END IF;
END $$;

-- --- Bisects (bisects, bisect_steps), once a migration has made the tables ------------------
-- The server starts bisects and aborts them (it reads their steps). The worker's bisect driver
-- claims a bisect that needs a decision, records its range and steps, and submits its step
-- queues: so the worker inserts queues too (their tasks it may insert already), but only the
-- columns a step queue has: never an `origin` (a commit status to send), a webhook delivery,
-- an idempotency key or a case filter. A queue that ends or is deleted looks up the bisect
-- waiting for it (a trigger, run as whichever role ends or deletes it: both read bisects).
DO $$
BEGIN
    IF to_regclass('bisects') IS NOT NULL THEN
        GRANT INSERT, UPDATE ON bisects TO testarena_server;
        GRANT USAGE ON SEQUENCE bisects_id_seq TO testarena_server;
        GRANT SELECT, UPDATE ON bisects TO testarena_worker;
        GRANT SELECT, INSERT, UPDATE ON bisect_steps TO testarena_worker;
        GRANT INSERT (name, repo, branch, requested_commit, scenarios, status, priority,
                      created_at, labels, submitted_by) ON queues TO testarena_worker;
        GRANT USAGE ON SEQUENCE queues_id_seq TO testarena_worker;
    END IF;
END $$;

-- --- The case history (case_results), once a migration has made the table -----------------
-- The worker copies the verdicts of a run it finishes in (in the transaction of the verdict)
-- and reads them back to count the run's regressions; the server reads them. Deleting a queue
-- deletes its results through their foreign key.
DO $$
BEGIN
    IF to_regclass('case_results') IS NOT NULL THEN
        GRANT SELECT, INSERT ON case_results TO testarena_worker;
    END IF;
END $$;

-- --- Tables a later migration makes ----------------------------------------------------------
-- The server may read them at once; anything more comes with the next run of this file.
ALTER DEFAULT PRIVILEGES FOR ROLE testarena_owner IN SCHEMA public
    GRANT SELECT ON TABLES TO testarena_server;
