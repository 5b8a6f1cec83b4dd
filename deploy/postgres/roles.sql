-- The three PostgreSQL roles of a TestArena farm (docs/deployment.md, "Scaling out"):
--
--   testarena_owner   owns the database and its tables; runs `testarena migrate` (schema
--                     changes) and deploy/postgres/grants.sql. No service runs as it.
--   testarena_server  the `testarena serve` replicas: create, abort and delete queues, read
--                     everything, send commit statuses.
--   testarena_worker  the `testarena worker` hosts: claim queues and record what they run.
--
-- Run once per PostgreSQL cluster, as a superuser or a role with CREATEROLE; running it again
-- changes nothing:
--   psql -U postgres -v ON_ERROR_STOP=1 -f deploy/postgres/roles.sql
-- Then give each role a password (psql: \password testarena_owner, and so on; or
-- ALTER ROLE ... PASSWORD), and create the database, owned by testarena_owner:
--   createdb -U postgres -O testarena_owner testarena
-- then migrate as testarena_owner and apply grants.sql (docs/deployment.md shows the steps).
-- No password is kept in this file. Other role names: replace these three names here and in
-- grants.sql (crates/cli/tests/roles.rs does just that).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'testarena_owner') THEN
        CREATE ROLE testarena_owner LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'testarena_server') THEN
        CREATE ROLE testarena_server LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'testarena_worker') THEN
        CREATE ROLE testarena_worker LOGIN;
    END IF;
END $$;

-- None of them needs more than its login and the grants of grants.sql: no superuser, no new
-- databases or roles, not a member of another role, no way around row-level security.
ALTER ROLE testarena_owner  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE testarena_server NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE testarena_worker NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
