-- Cases are inserted and updated a batch at a time, in one statement each
-- (crates/store/src/postgres/work.rs): their queue gets its new rev once per statement, as for
-- deleted cases since 0007, not once per case. One update of the queue row per case made 100
-- row versions of it in one transaction (and 100 of the change counter), ~10 ms for a task of
-- 100 cases.
DROP TRIGGER cases_changed ON cases;

CREATE FUNCTION testarena_children_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE queues SET rev = testarena_next_rev(id)
        WHERE id IN (SELECT DISTINCT queue_id FROM changed);
    RETURN NULL;
END $$;
CREATE TRIGGER cases_changed_ins AFTER INSERT ON cases REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION testarena_children_changed();
CREATE TRIGGER cases_changed_upd AFTER UPDATE ON cases REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION testarena_children_changed();
