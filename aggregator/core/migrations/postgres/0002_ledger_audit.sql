-- Privacy-budget ledger, leases, audit log and checkpoints.
-- PostgreSQL twin of migrations/sqlite/0002_ledger_audit.sql.
CREATE TABLE ledger_days (
    venue           TEXT             NOT NULL,
    day             TEXT             NOT NULL,
    budget_epsilon  DOUBLE PRECISION NOT NULL,
    delta           DOUBLE PRECISION NOT NULL,
    pure_epsilon    DOUBLE PRECISION NOT NULL DEFAULT 0,
    pure_as_rho     DOUBLE PRECISION NOT NULL DEFAULT 0,
    rho             DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (venue, day)
);

CREATE TABLE ledger_lines (
    venue    TEXT             NOT NULL,
    day      TEXT             NOT NULL,
    metric   TEXT             NOT NULL,
    purpose  TEXT             NOT NULL,
    epsilon  DOUBLE PRECISION NOT NULL DEFAULT 0,
    rho      DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (venue, day, metric, purpose)
);

CREATE TABLE leases (
    lease_id     TEXT             PRIMARY KEY,
    venue        TEXT             NOT NULL,
    node         TEXT             NOT NULL,
    day          TEXT             NOT NULL,
    metric       TEXT             NOT NULL,
    purpose      TEXT             NOT NULL,
    epsilon      DOUBLE PRECISION NOT NULL,
    rho          DOUBLE PRECISION NOT NULL,
    releases     BIGINT           NOT NULL,
    used         BIGINT           NOT NULL DEFAULT 0,
    policy_hash  TEXT             NOT NULL,
    created_ms   BIGINT           NOT NULL
);

-- One linear, gap-free sequence whatever replica appends (writers hold
-- the audit advisory lock; see src/audit.rs).
CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY CHECK (seq >= 0),
    entry      TEXT   NOT NULL,
    leaf_hash  BYTEA  NOT NULL
);

CREATE TABLE checkpoints (
    size        BIGINT PRIMARY KEY,
    root        BYTEA  NOT NULL,
    note        TEXT   NOT NULL,
    created_ms  BIGINT NOT NULL
);
