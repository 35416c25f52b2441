-- Schema version 1: accepted events and verification failures.
--
-- Applied by gatehouse at connect, inside one transaction that holds an
-- advisory lock, and recorded in gatehouse_schema_migrations. Never edit a
-- migration that has shipped: add the next file instead.

-- One row per accepted request. `id` is the event's ULID as 16 big-endian
-- bytes, so it sorts by time and serves keyset pagination ("newest first",
-- "before this id") on its own.
CREATE TABLE events (
    id                bytea   NOT NULL,
    source            text    NOT NULL,
    dedup_key         text    NOT NULL,
    provider_event_id text,
    event_type        text,
    -- accepted | ignored | ping (gatehouse_core::Disposition::as_str).
    disposition       text    NOT NULL,
    -- Unix milliseconds.
    received_at       bigint  NOT NULL,
    -- The request headers as a JSON array of [name, value] pairs, in the
    -- order received. `json` (not `jsonb`) keeps the text exactly as written.
    headers           json    NOT NULL,
    -- The raw body, byte for byte.
    body              bytea   NOT NULL,
    verification      text    NOT NULL,
    remote_addr       text,
    -- How many later requests carried the same (source, dedup_key).
    duplicates        integer NOT NULL DEFAULT 0,
    -- Unix milliseconds of the latest of those.
    last_duplicate_at bigint,
    CONSTRAINT events_pkey PRIMARY KEY (id),
    CONSTRAINT events_id_is_a_ulid CHECK (octet_length(id) = 16),
    -- Deduplication: ingest inserts with ON CONFLICT on this constraint.
    CONSTRAINT events_source_dedup_key UNIQUE (source, dedup_key)
);

-- Newest first overall is a backward scan of events_pkey. These serve the
-- filtered lists, also scanned backward by id.
CREATE INDEX events_source_id ON events (source, id);
CREATE INDEX events_source_event_type_id ON events (source, event_type, id);
-- "Did the provider's event evt_123 arrive?", across sources.
CREATE INDEX events_provider_event_id ON events (provider_event_id) WHERE provider_event_id IS NOT NULL;

-- Requests that failed verification. Never holds a body or a secret.
CREATE TABLE verification_failures (
    id          bigserial NOT NULL,
    source      text      NOT NULL,
    -- Stable reason code, e.g. no_matching_signature.
    reason      text      NOT NULL,
    remote_addr text,
    -- Unix milliseconds.
    at          bigint    NOT NULL,
    CONSTRAINT verification_failures_pkey PRIMARY KEY (id)
);

CREATE INDEX verification_failures_source_at ON verification_failures (source, at DESC, id DESC);
CREATE INDEX verification_failures_at ON verification_failures (at DESC, id DESC);
