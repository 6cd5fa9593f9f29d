-- Schema 4: web console sessions (see `Store::create_session`). The id is stored only as
-- a hash; a session ends with its expiry, its sign-out or its token's revocation.
CREATE TABLE console_sessions (
    id_hash TEXT PRIMARY KEY,
    token_id BIGINT NOT NULL REFERENCES api_tokens (id),
    csrf TEXT NOT NULL,
    opened_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_ms);
CREATE TRIGGER console_sessions_fence BEFORE INSERT OR UPDATE OR DELETE ON console_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
