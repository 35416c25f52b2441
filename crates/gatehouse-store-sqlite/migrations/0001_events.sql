-- Events accepted on /in/{source}: the raw request, byte for byte, with what
-- verification and identification found. `id` is the ULID as 16 big-endian
-- bytes, so it sorts by time and serves keyset pagination.
CREATE TABLE events (
    seq               INTEGER PRIMARY KEY,
    id                BLOB    NOT NULL UNIQUE,
    source            TEXT    NOT NULL,
    dedup_key         TEXT    NOT NULL,
    provider_event_id TEXT,
    event_type        TEXT,
    disposition       TEXT    NOT NULL,
    received_at       INTEGER NOT NULL,
    headers           TEXT    NOT NULL,
    body              BLOB    NOT NULL,
    verification      TEXT    NOT NULL,
    remote_addr       TEXT,
    duplicates        INTEGER NOT NULL DEFAULT 0,
    last_duplicate_at INTEGER,
    UNIQUE (source, dedup_key)
);
CREATE INDEX events_by_source ON events (source, id);
CREATE INDEX events_by_provider_id ON events (provider_event_id);

-- Requests that failed verification: never the body, never a secret.
CREATE TABLE verification_failures (
    seq         INTEGER PRIMARY KEY,
    source      TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    remote_addr TEXT,
    at          INTEGER NOT NULL
);
CREATE INDEX verification_failures_by_source ON verification_failures (source, seq);
