-- Deduplication without a random-order index write on every ingest.
--
-- UNIQUE (source, dedup_key) on `events` put one entry with a random key
-- into a B-tree on each insert, so each commit dirtied about one 8 KiB leaf
-- per event: written to the WAL, then again at the checkpoint. It was the
-- largest part of ingest's disk writes and cost ~30 % of the durable acks
-- per second (measured with the index dropped, same hour, interleaved runs).
--
-- Now the keys of events up to `dedup_merge.merged_through` live in
-- `dedup_keys`, filled by the writer in key order, a slice of a sorted run
-- per transaction, so a run's entries share leaves. The newer events (the
-- tail) carry their key in their row only; the writer holds the tail's keys
-- in memory and readers scan the tail's rows (a rowid range). The writer
-- checks both, inside its write transaction, before every insert, so a
-- (source, dedup key) is still stored once (see src/dedup.rs).

-- `events` again, without the UNIQUE constraint (SQLite cannot drop one in
-- place). Columns and indexes as before; the runner turns foreign keys off
-- around migrations and checks them before committing.
CREATE TABLE events_new (
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
    origin            TEXT    NOT NULL DEFAULT 'live',
    pruned_at         INTEGER
);
INSERT INTO events_new (seq, id, source, dedup_key, provider_event_id, event_type, disposition, received_at,
                        headers, body, verification, remote_addr, duplicates, last_duplicate_at, origin, pruned_at)
SELECT seq, id, source, dedup_key, provider_event_id, event_type, disposition, received_at,
       headers, body, verification, remote_addr, duplicates, last_duplicate_at, origin, pruned_at
FROM events;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_by_source ON events (source, id);
CREATE INDEX events_by_provider_id ON events (provider_event_id)
    WHERE provider_event_id IS NOT NULL AND provider_event_id IS NOT dedup_key;
CREATE INDEX events_by_source_type ON events (source, event_type, id);
CREATE INDEX events_prunable ON events (source, received_at) WHERE pruned_at IS NULL;

-- The merged keys: each (source, dedup key) once, with its event's seq.
CREATE TABLE dedup_keys (
    source    TEXT    NOT NULL,
    dedup_key TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (source, dedup_key)
) WITHOUT ROWID;
INSERT INTO dedup_keys (source, dedup_key, seq)
SELECT source, dedup_key, seq FROM events ORDER BY source, dedup_key;

-- Every event with seq <= merged_through has its key in dedup_keys.
CREATE TABLE dedup_merge (
    only           INTEGER PRIMARY KEY CHECK (only = 1),
    merged_through INTEGER NOT NULL
);
INSERT INTO dedup_merge (only, merged_through) SELECT 1, coalesce(max(seq), 0) FROM events;
