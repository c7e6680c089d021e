-- Releases waiting for the aggregator's ack. Only DP releases and declared
-- non-personal values are ever written here.
CREATE TABLE outbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key  TEXT    NOT NULL UNIQUE,
    window_start_ms  INTEGER NOT NULL,
    payload          BLOB    NOT NULL,
    payload_sha256   BLOB    NOT NULL,
    created_ms       INTEGER NOT NULL
);
-- Node-wide facts: last successful upload, counters that must survive restarts.
CREATE TABLE node_state (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
