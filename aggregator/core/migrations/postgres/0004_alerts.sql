-- Organizer alerts (issue 9): post-processing of stored DP releases only.
-- Rows hold the rule, zone, windows and lifecycle; never a raw value of a
-- suppressed metric and never anything a node did not release.
-- PostgreSQL twin of migrations/sqlite/0004_alerts.sql (BIGINT for every integer).
CREATE TABLE alerts (
    alert_id          TEXT    PRIMARY KEY,
    venue             TEXT    NOT NULL,
    zone              TEXT    NOT NULL,
    metric            TEXT    NOT NULL,
    source            TEXT    NOT NULL,
    severity          TEXT    NOT NULL,
    state             TEXT    NOT NULL CHECK (state IN ('raised', 'resolved')),
    window_start_ms   BIGINT  NOT NULL,
    window_len_s      BIGINT  NOT NULL,
    last_window_ms    BIGINT  NOT NULL,
    runbook           TEXT    NOT NULL,
    detail            TEXT    NOT NULL,
    raised_ms         BIGINT  NOT NULL,
    resolved_ms       BIGINT  NOT NULL DEFAULT 0,
    acked_by          TEXT    NOT NULL DEFAULT '',
    acked_ms          BIGINT  NOT NULL DEFAULT 0
);
-- At most one open alert per (venue, zone, source, metric): deduplication
-- while a condition persists survives restarts.
CREATE UNIQUE INDEX alerts_open ON alerts (venue, zone, source, metric) WHERE state = 'raised';
CREATE INDEX alerts_venue_time ON alerts (venue, raised_ms);
