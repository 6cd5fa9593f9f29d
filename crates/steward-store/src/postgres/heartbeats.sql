-- Schema 6: push (`heartbeat`) checks: the signals jobs sent, one row per check.
CREATE TABLE heartbeats (
    check_name TEXT PRIMARY KEY,
    watching_since_ms BIGINT NOT NULL,
    last_ok_ms BIGINT,
    last_fail_ms BIGINT,
    signals BIGINT NOT NULL DEFAULT 0
);
CREATE TRIGGER heartbeats_fence BEFORE INSERT OR UPDATE OR DELETE ON heartbeats
    FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
