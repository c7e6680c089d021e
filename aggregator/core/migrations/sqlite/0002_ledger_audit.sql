-- Privacy-budget ledger: one row per venue and event day (UTC), composed
-- exactly as veil_privacy::accounting::Composition keeps it.
CREATE TABLE ledger_days (
    venue           TEXT    NOT NULL,
    day             TEXT    NOT NULL,
    budget_epsilon  REAL    NOT NULL,
    delta           REAL    NOT NULL,
    pure_epsilon    REAL    NOT NULL DEFAULT 0,
    pure_as_rho     REAL    NOT NULL DEFAULT 0,
    rho             REAL    NOT NULL DEFAULT 0,
    PRIMARY KEY (venue, day)
);

-- What the budget was spent on.
CREATE TABLE ledger_lines (
    venue    TEXT NOT NULL,
    day      TEXT NOT NULL,
    metric   TEXT NOT NULL,
    purpose  TEXT NOT NULL,
    epsilon  REAL NOT NULL DEFAULT 0,
    rho      REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (venue, day, metric, purpose)
);

-- Leases: budget charged up front for a number of releases.
CREATE TABLE leases (
    lease_id     TEXT    PRIMARY KEY,
    venue        TEXT    NOT NULL,
    node         TEXT    NOT NULL,
    day          TEXT    NOT NULL,
    metric       TEXT    NOT NULL,
    purpose      TEXT    NOT NULL,
    epsilon      REAL    NOT NULL,
    rho          REAL    NOT NULL,
    releases     INTEGER NOT NULL,
    used         INTEGER NOT NULL DEFAULT 0,
    policy_hash  TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL
);

-- Tamper-evident audit log: canonical JSON entries, leaves of an RFC 9162 tree.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    entry      TEXT    NOT NULL,
    leaf_hash  BLOB    NOT NULL
);

-- Signed checkpoints (C2SP signed notes), each consistent with the previous.
CREATE TABLE checkpoints (
    size        INTEGER PRIMARY KEY,
    root        BLOB    NOT NULL,
    note        TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL
);
