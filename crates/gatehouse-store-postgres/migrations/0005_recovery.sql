-- Schema version 5: recovery (issue 6): how an event arrived, retention
-- tombstones, per-source state kept across restarts, and enrichment fetches.
--
-- Never edit a migration that has shipped: add the next file instead.

-- live | backfill | poll (gatehouse_core::EventOrigin::as_str).
ALTER TABLE events ADD COLUMN origin text NOT NULL DEFAULT 'live';
-- When retention removed the body, headers and attempts (unix ms); the row
-- stays as a tombstone so "was it processed?" still answers.
ALTER TABLE events ADD COLUMN pruned_at bigint;
-- What retention scans: a source's unpruned events, oldest first. Partial,
-- so pruned rows drop out of it and each pass starts where work remains.
CREATE INDEX events_prunable ON events (source, received_at) WHERE pruned_at IS NULL;

-- Small pieces of state per source (a poller's ETag and item versions, a
-- scheduled backfill's last run), as JSON text.
CREATE TABLE source_state (
    source     text   NOT NULL,
    key        text   NOT NULL,
    value      text   NOT NULL,
    updated_at bigint NOT NULL,
    CONSTRAINT source_state_pkey PRIMARY KEY (source, key)
);

-- The latest enrichment fetch per delivery.
CREATE TABLE enrichments (
    delivery_id bytea   NOT NULL,
    fetched_at  bigint  NOT NULL,
    url         text    NOT NULL,
    status_code integer,
    body        bytea   NOT NULL,
    error       text,
    CONSTRAINT enrichments_pkey PRIMARY KEY (delivery_id)
);
