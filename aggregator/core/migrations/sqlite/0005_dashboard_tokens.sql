-- Organizer dashboard bearer tokens (issue 9). Only the SHA-256 of a token
-- is stored; the token itself is printed once by `token issue`.
-- Portable subset (SQLite and PostgreSQL): INTEGER/TEXT.
CREATE TABLE dashboard_tokens (
    token_id      TEXT    PRIMARY KEY,
    token_sha256  TEXT    NOT NULL UNIQUE,
    venue         TEXT    NOT NULL,
    label         TEXT    NOT NULL DEFAULT '',
    created_ms    INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL,
    revoked_ms    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX dashboard_tokens_venue ON dashboard_tokens (venue);
