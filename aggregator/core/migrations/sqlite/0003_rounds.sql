-- Federated rounds and published model versions (issue 6).
-- Individual node updates are never stored: only the running sum of a
-- round's accepted updates (raw little-endian f32, tensors in name order)
-- and who has contributed (to refuse replays).
CREATE TABLE model_versions (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    parent INTEGER,
    weights BLOB NOT NULL,
    card_json TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (model, version)
);

-- Public (synthetic) evaluation set of a model, safetensors with x and y.
CREATE TABLE model_evals (
    model TEXT PRIMARY KEY,
    eval BLOB NOT NULL
);

CREATE TABLE rounds (
    round_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    base_version INTEGER NOT NULL,
    min_nodes INTEGER NOT NULL,
    clip_norm REAL NOT NULL,
    noise_multiplier REAL NOT NULL,
    local_steps INTEGER NOT NULL,
    learning_rate REAL NOT NULL,
    opened_ms INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'published', 'failed')),
    participants INTEGER NOT NULL DEFAULT 0,
    update_sum BLOB,
    closed_ms INTEGER,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX rounds_state ON rounds (state, deadline_ms);

CREATE TABLE round_participants (
    round_id TEXT NOT NULL REFERENCES rounds (round_id),
    venue TEXT NOT NULL,
    node TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (round_id, venue, node)
);
