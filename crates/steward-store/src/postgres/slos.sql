-- Schema 7: SLOs: good and total events per minute, older ones rolled up into wider
-- buckets (steward_model::slo).
CREATE TABLE slo_buckets (
    slo TEXT NOT NULL,
    start_minute BIGINT NOT NULL,
    minutes BIGINT NOT NULL,
    good BIGINT NOT NULL,
    total BIGINT NOT NULL,
    good_slices BIGINT NOT NULL DEFAULT 0,
    slices BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (slo, start_minute)
);
CREATE TRIGGER slo_buckets_fence BEFORE INSERT OR UPDATE OR DELETE ON slo_buckets
    FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
