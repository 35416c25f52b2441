-- Lookups by provider event id: almost always the dedup key, which the
-- UNIQUE (source, dedup_key) index already serves (a lookup names the
-- configured sources: `source IN (…) AND dedup_key = ?`). Indexing only the
-- rows where the two differ removes one random-order index write from every
-- ingest.
DROP INDEX events_provider_event_id;
CREATE INDEX events_provider_event_id ON events (provider_event_id)
    WHERE provider_event_id IS NOT NULL AND provider_event_id IS DISTINCT FROM dedup_key;
