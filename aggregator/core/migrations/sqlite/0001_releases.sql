-- Accepted DP releases. One row per idempotency key; never personal data.
CREATE TABLE releases (
    id               INTEGER PRIMARY KEY,
    idempotency_key  TEXT    NOT NULL UNIQUE,
    content_sha256   TEXT    NOT NULL,
    venue            TEXT    NOT NULL,
    node             TEXT    NOT NULL,
    metric           TEXT    NOT NULL,
    zone             TEXT    NOT NULL,
    window_start_ms  INTEGER NOT NULL,
    window_len_s     INTEGER NOT NULL,
    mechanism        TEXT    NOT NULL,
    value            REAL    NOT NULL,
    scale            REAL    NOT NULL,
    epsilon          REAL    NOT NULL,
    rho              REAL    NOT NULL,
    purpose          TEXT    NOT NULL,
    policy_hash      TEXT    NOT NULL,
    lease_id         TEXT    NOT NULL,
    sequence         INTEGER NOT NULL,
    received_ms      INTEGER NOT NULL
);
CREATE INDEX releases_series ON releases (venue, metric, zone, window_start_ms);
CREATE INDEX releases_node ON releases (venue, node, sequence);
