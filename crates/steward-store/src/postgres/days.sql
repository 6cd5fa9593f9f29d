-- Schema 5: daily sums of folded results, written with the hourly rollups (see
-- `compact`), so 90 days of a check read 90 rows, not 2,160. Filled from the rollups
-- already there.
CREATE TABLE check_days (
    check_name TEXT NOT NULL,
    day_ms BIGINT NOT NULL,
    runs BIGINT NOT NULL,
    failures BIGINT NOT NULL,
    latency_sum_ms DOUBLE PRECISION NOT NULL,
    latency_max_ms DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (check_name, day_ms)
);
INSERT INTO check_days (check_name, day_ms, runs, failures, latency_sum_ms, latency_max_ms)
SELECT check_name, (hour_ms / 86400000) * 86400000, sum(runs), sum(failures), sum(latency_sum_ms), max(latency_max_ms)
FROM check_rollups GROUP BY 1, 2;
CREATE TRIGGER check_days_fence BEFORE INSERT OR UPDATE OR DELETE ON check_days
    FOR EACH STATEMENT EXECUTE FUNCTION steward_fence();
