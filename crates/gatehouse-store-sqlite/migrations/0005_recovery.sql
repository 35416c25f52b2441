-- Recovery (issue 6): how an event arrived, retention tombstones, per-source
-- state kept across restarts, and enrichment fetches.

-- live | backfill | poll (gatehouse_core::EventOrigin::as_str).
ALTER TABLE events ADD COLUMN origin TEXT NOT NULL DEFAULT 'live';
-- When retention removed the body, headers and attempts (unix ms); the row
-- stays as a tombstone so "was it processed?" still answers.
ALTER TABLE events ADD COLUMN pruned_at INTEGER;
-- What retention scans: a source's unpruned events, oldest first. Partial,
-- so pruned rows drop out of it and each pass starts where work remains.
CREATE INDEX events_prunable ON events (source, received_at) WHERE pruned_at IS NULL;

-- Small pieces of state per source (a poller's ETag and item versions, a
-- scheduled backfill's last run), as JSON text.
CREATE TABLE source_state (
    source     TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (source, key)
);

-- The latest enrichment fetch per delivery.
CREATE TABLE enrichments (
    delivery_id BLOB    PRIMARY KEY,
    fetched_at  INTEGER NOT NULL,
    url         TEXT    NOT NULL,
    status_code INTEGER,
    body        BLOB    NOT NULL,
    error       TEXT
);
