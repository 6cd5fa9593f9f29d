-- Schema 2: replicas and the leadership lease (see `cluster.rs`). The term only grows: a
-- lease given up keeps its row, expired.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    version TEXT NOT NULL,
    schema BIGINT NOT NULL,
    started_ms BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);
CREATE TABLE leadership (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    term BIGINT NOT NULL,
    acquired_ms BIGINT NOT NULL,
    renewed_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);

-- The fence (see `cluster.rs`). A leader's connections carry `steward.fence` =
-- 'TERM:HOLDER' (a startup option of its fenced pool); before any statement of theirs
-- writes state, the lease must still name that holder and term. FOR SHARE holds the
-- lease row until the writing transaction ends: a takeover (which updates the row)
-- waits for writes already admitted, and none is admitted after it. Other connections
-- (followers serving the API, the CLI) carry no fence and are not checked.
CREATE FUNCTION steward_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    fence text := current_setting('steward.fence', true);
    fence_term bigint;
    fence_holder text;
BEGIN
    IF fence IS NULL OR fence = '' THEN
        RETURN NULL;
    END IF;
    fence_term := split_part(fence, ':', 1)::bigint;
    fence_holder := substr(fence, length(split_part(fence, ':', 1)) + 2);
    PERFORM 1 FROM leadership WHERE name = 'steward' AND holder = fence_holder AND term = fence_term FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'term % of % no longer holds the leadership', fence_term, fence_holder
            USING ERRCODE = 'SF001';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER check_results_fence BEFORE INSERT OR UPDATE OR DELETE ON check_results FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER check_states_fence BEFORE INSERT OR UPDATE OR DELETE ON check_states FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER check_transitions_fence BEFORE INSERT OR UPDATE OR DELETE ON check_transitions FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER check_rollups_fence BEFORE INSERT OR UPDATE OR DELETE ON check_rollups FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER api_tokens_fence BEFORE INSERT OR UPDATE OR DELETE ON api_tokens FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER alerts_fence BEFORE INSERT OR UPDATE OR DELETE ON alerts FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER alert_events_fence BEFORE INSERT OR UPDATE OR DELETE ON alert_events FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER notify_log_fence BEFORE INSERT OR UPDATE OR DELETE ON notify_log FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER outbox_fence BEFORE INSERT OR UPDATE OR DELETE ON outbox FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER outbox_alerts_fence BEFORE INSERT OR UPDATE OR DELETE ON outbox_alerts FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER silences_fence BEFORE INSERT OR UPDATE OR DELETE ON silences FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER incidents_fence BEFORE INSERT OR UPDATE OR DELETE ON incidents FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER incident_alerts_fence BEFORE INSERT OR UPDATE OR DELETE ON incident_alerts FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER incident_timeline_fence BEFORE INSERT OR UPDATE OR DELETE ON incident_timeline FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER action_items_fence BEFORE INSERT OR UPDATE OR DELETE ON action_items FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER oncall_overrides_fence BEFORE INSERT OR UPDATE OR DELETE ON oncall_overrides FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER server_keys_fence BEFORE INSERT OR UPDATE OR DELETE ON server_keys FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER runs_fence BEFORE INSERT OR UPDATE OR DELETE ON runs FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER run_steps_fence BEFORE INSERT OR UPDATE OR DELETE ON run_steps FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER run_events_fence BEFORE INSERT OR UPDATE OR DELETE ON run_events FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER run_approvals_fence BEFORE INSERT OR UPDATE OR DELETE ON run_approvals FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER locks_fence BEFORE INSERT OR UPDATE OR DELETE ON locks FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER backups_fence BEFORE INSERT OR UPDATE OR DELETE ON backups FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER backup_verifications_fence BEFORE INSERT OR UPDATE OR DELETE ON backup_verifications FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
CREATE TRIGGER backup_restores_fence BEFORE INSERT OR UPDATE OR DELETE ON backup_restores FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
