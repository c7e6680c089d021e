-- Organizer dashboard bearer tokens (issue 9). Only the SHA-256 of a token
-- is stored; the token itself is printed once by `token issue`.
-- PostgreSQL twin of migrations/sqlite/0005_dashboard_tokens.sql (BIGINT for every integer).
CREATE TABLE dashboard_tokens (
    token_id      TEXT    PRIMARY KEY,
    token_sha256  TEXT    NOT NULL UNIQUE,
    venue         TEXT    NOT NULL,
    label         TEXT    NOT NULL DEFAULT '',
    created_ms    BIGINT  NOT NULL,
    expires_ms    BIGINT  NOT NULL,
    revoked_ms    BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX dashboard_tokens_venue ON dashboard_tokens (venue);
