-- Accepted DP releases. One row per idempotency key; never personal data.
-- PostgreSQL twin of migrations/sqlite/0001_releases.sql.
CREATE TABLE releases (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key  TEXT             NOT NULL UNIQUE,
    content_sha256   TEXT             NOT NULL,
    venue            TEXT             NOT NULL,
    node             TEXT             NOT NULL,
    metric           TEXT             NOT NULL,
    zone             TEXT             NOT NULL,
    window_start_ms  BIGINT           NOT NULL,
    window_len_s     BIGINT           NOT NULL,
    mechanism        TEXT             NOT NULL,
    value            DOUBLE PRECISION NOT NULL,
    scale            DOUBLE PRECISION NOT NULL,
    epsilon          DOUBLE PRECISION NOT NULL,
    rho              DOUBLE PRECISION NOT NULL,
    purpose          TEXT             NOT NULL,
    policy_hash      TEXT             NOT NULL,
    lease_id         TEXT             NOT NULL,
    sequence         BIGINT           NOT NULL,
    received_ms      BIGINT           NOT NULL
);
CREATE INDEX releases_series ON releases (venue, metric, zone, window_start_ms);
CREATE INDEX releases_node ON releases (venue, node, sequence);
