-- Attendee-day state that must survive a restart within the event day. This
-- file is created 0600 and nothing here ever leaves the node.
-- One pseudonym key per event day (32 random bytes): a restart within the day
-- gives every identifier the same pseudonym, so the bounds keep holding.
-- Keys of past days are deleted at start, so old pseudonyms cannot be
-- recomputed.
CREATE TABLE day_keys (
    day  INTEGER PRIMARY KEY,
    key  BLOB    NOT NULL
);
-- Contribution-bound state per unit (a pseudonym, never an identifier).
CREATE TABLE unit_bounds (
    day     INTEGER NOT NULL,
    family  INTEGER NOT NULL,
    unit    BLOB    NOT NULL,
    state   BLOB    NOT NULL,
    PRIMARY KEY (day, family, unit)
);
-- Continual-release streams: the noise already drawn and the values released
-- (JSON of veil_privacy's StreamState). A restart continues a stream and never
-- draws noise again for a released step.
CREATE TABLE streams (
    day     INTEGER NOT NULL,
    metric  TEXT    NOT NULL,
    zone    TEXT    NOT NULL,
    state   TEXT    NOT NULL,
    PRIMARY KEY (day, metric, zone)
);
-- Stream leases granted (charged once per metric and event day).
CREATE TABLE stream_leases (
    day       TEXT NOT NULL,
    metric    TEXT NOT NULL,
    purpose   TEXT NOT NULL,
    lease_id  TEXT NOT NULL,
    PRIMARY KEY (day, metric, purpose)
);
-- The end of the last window this node released (all metrics), per window
-- length: re-read input before it is skipped, nothing is released twice.
CREATE TABLE released_windows (
    length_s      INTEGER PRIMARY KEY,
    released_end  INTEGER NOT NULL
);
