-- Continual-release streams, step by step: `streams.state` holds a stream's
-- header (parameters, noise scale, run id; older outboxes: the steps up to
-- some point), and every released step is one row here, appended in the
-- window's transaction. A window writes O(1) per stream instead of every
-- step so far; a restart rebuilds the state as header + steps in order and
-- never draws noise again for a released step.
CREATE TABLE stream_steps (
    day        INTEGER NOT NULL,
    metric     TEXT    NOT NULL,
    zone       TEXT    NOT NULL,
    step       INTEGER NOT NULL,
    increment  INTEGER NOT NULL,
    noisy      INTEGER NOT NULL,
    released   REAL    NOT NULL,
    PRIMARY KEY (day, metric, zone, step)
);
