-- Federated rounds and published model versions.
-- PostgreSQL twin of migrations/sqlite/0003_rounds.sql. Individual node
-- updates are never stored: only a round's running sum.
CREATE TABLE model_versions (
    model TEXT NOT NULL,
    version BIGINT NOT NULL,
    parent BIGINT,
    weights BYTEA NOT NULL,
    card_json TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (model, version)
);

CREATE TABLE model_evals (
    model TEXT PRIMARY KEY,
    eval BYTEA NOT NULL
);

CREATE TABLE rounds (
    round_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    base_version BIGINT NOT NULL,
    min_nodes BIGINT NOT NULL,
    clip_norm DOUBLE PRECISION NOT NULL,
    noise_multiplier DOUBLE PRECISION NOT NULL,
    local_steps BIGINT NOT NULL,
    learning_rate DOUBLE PRECISION NOT NULL,
    opened_ms BIGINT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'published', 'failed')),
    participants BIGINT NOT NULL DEFAULT 0,
    update_sum BYTEA,
    closed_ms BIGINT,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX rounds_state ON rounds (state, deadline_ms);

CREATE TABLE round_participants (
    round_id TEXT NOT NULL REFERENCES rounds (round_id),
    venue TEXT NOT NULL,
    node TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (round_id, venue, node)
);
