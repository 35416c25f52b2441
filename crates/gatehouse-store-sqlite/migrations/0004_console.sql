-- The console (issue 5): people, sessions, API tokens, the audit log, and
-- the indexes the console's queues and charts read. Only one is on
-- `events`, where every index is one more write on each ingest.

-- Filtering a source by event type. Without it a rare type ("the last
-- dispute") walks the whole source, reading every row: 1-2 s on 1,000,000
-- events; with it, one index range. PostgreSQL has had it since version 1.
-- Its inserts land at the end of each (source, type) range, a few hot
-- pages per batch, beside the random-order UNIQUE (source, dedup_key)
-- writes every ingest already makes.
CREATE INDEX events_by_source_type ON events (source, event_type, id);

-- Console users. `id` is the UserId's ULID as 16 big-endian bytes.
CREATE TABLE users (
    id            BLOB    PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    -- viewer | operator | admin (gatehouse_core::Role::as_str).
    role          TEXT    NOT NULL,
    -- The argon2 PHC string.
    password_hash TEXT    NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    last_login_at INTEGER
);

-- Console sessions, by the SHA-256 (hex) of the cookie's secret.
CREATE TABLE sessions (
    token_hash  TEXT    PRIMARY KEY,
    user_id     BLOB    NOT NULL REFERENCES users (id),
    csrf_token  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    remote_addr TEXT
) WITHOUT ROWID;
-- Ending a user's sessions (disabled, new password).
CREATE INDEX sessions_by_user ON sessions (user_id);
-- Removing expired sessions.
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- API tokens, by the SHA-256 (hex) of the secret. `id` is the TokenId's
-- ULID as 16 big-endian bytes, so newest first is id order.
CREATE TABLE api_tokens (
    id           BLOB    PRIMARY KEY,
    name         TEXT    NOT NULL,
    token_hash   TEXT    NOT NULL UNIQUE,
    role         TEXT    NOT NULL,
    created_by   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER
);

-- Every action a person or token took. Append-only: the triggers refuse
-- changes, so a bug (or a hand-typed statement) cannot rewrite history.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    object      TEXT    NOT NULL,
    remote_addr TEXT,
    note        TEXT,
    details     TEXT    NOT NULL
);
CREATE INDEX audit_log_by_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_by_object ON audit_log (object, seq);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

-- The exception queue: dead deliveries grouped by route and error. Partial,
-- so only deliveries that die (and are retried or resolved) touch it.
CREATE INDEX deliveries_dead ON deliveries (route, last_error, updated_at) WHERE state = 'dead';

-- The overview's charts: attempts and verification failures by time
-- (covering, so a chart reads the index alone). Events are charted by id
-- ranges over events_by_source, which needs no new index.
CREATE INDEX attempts_by_started_at ON attempts (started_at, outcome);
CREATE INDEX verification_failures_by_at ON verification_failures (at, source);
