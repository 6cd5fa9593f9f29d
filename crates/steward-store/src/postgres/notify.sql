-- Schema 3: the run change feed. Every committed change a run's watchers care about —
-- a new run, its status or cancel request, a step, an event, an approval asked or
-- decided — sends the run's id on the `steward_runs` channel, whoever wrote it (any
-- replica, a CLI). A process running the run learns of a decision or a cancel taken
-- through another replica at once, and live streams wake on any replica, instead of
-- at the next poll. NOTIFY is delivered on commit and folded within a transaction, so
-- a batch of events on one run is one notification. Heartbeats do not notify.
CREATE FUNCTION steward_run_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Separate statements: each names a column only the tables reaching it have.
    IF TG_TABLE_NAME = 'runs' THEN
        PERFORM pg_notify('steward_runs', NEW.id::text);
    ELSE
        PERFORM pg_notify('steward_runs', NEW.run_id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER runs_created AFTER INSERT ON runs FOR EACH ROW EXECUTE FUNCTION steward_run_changed();
CREATE TRIGGER runs_changed AFTER UPDATE ON runs FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.cancel_requested_by IS DISTINCT FROM NEW.cancel_requested_by
          OR OLD.owner IS DISTINCT FROM NEW.owner)
    EXECUTE FUNCTION steward_run_changed();
CREATE TRIGGER run_steps_changed AFTER INSERT OR UPDATE ON run_steps FOR EACH ROW EXECUTE FUNCTION steward_run_changed();
CREATE TRIGGER run_events_appended AFTER INSERT ON run_events FOR EACH ROW EXECUTE FUNCTION steward_run_changed();
CREATE TRIGGER run_approvals_changed AFTER INSERT OR UPDATE ON run_approvals FOR EACH ROW EXECUTE FUNCTION steward_run_changed();
