-- Schema version 2: deliveries, their attempts, and paused routes.
--
-- Never edit a migration that has shipped: add the next file instead.

-- One event on one route. `id` is the delivery's ULID as 16 big-endian
-- bytes, so it sorts by creation time and serves keyset pagination.
-- Times are unix milliseconds.
CREATE TABLE deliveries (
    id               bytea   NOT NULL,
    event_id         bytea   NOT NULL,
    route            text    NOT NULL,
    -- gatehouse_core::DeliveryState::as_str: pending, awaiting_approval,
    -- in_flight, succeeded, retrying, dead, rejected, skipped, cancelled.
    state            text    NOT NULL,
    -- Attempts made so far.
    attempts         integer NOT NULL DEFAULT 0,
    -- When the next attempt is due (while pending or retrying).
    next_attempt_at  bigint  NOT NULL,
    -- While in_flight: who claimed it, and until when the claim holds.
    lease_owner      text,
    lease_expires_at bigint,
    last_error       text,
    created_at       bigint  NOT NULL,
    updated_at       bigint  NOT NULL,
    CONSTRAINT deliveries_pkey PRIMARY KEY (id),
    CONSTRAINT deliveries_id_is_a_ulid CHECK (octet_length(id) = 16),
    CONSTRAINT deliveries_event_id_fkey FOREIGN KEY (event_id) REFERENCES events (id)
);

-- Due work: what a claim scans, oldest due first.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state IN ('pending', 'retrying');
-- Expired leases: claims take over in-flight deliveries whose worker died.
CREATE INDEX deliveries_leases ON deliveries (lease_expires_at) WHERE state = 'in_flight';
-- An event's deliveries.
CREATE INDEX deliveries_event_id ON deliveries (event_id);
-- Lists by state (the exception queue is state = 'dead') and route, newest first.
CREATE INDEX deliveries_state_route_id ON deliveries (state, route, id);

-- Every attempt of every delivery.
CREATE TABLE attempts (
    id               bigserial NOT NULL,
    delivery_id      bytea     NOT NULL,
    -- 1 for the first attempt.
    number           integer   NOT NULL,
    started_at       bigint    NOT NULL,
    duration_ms      integer   NOT NULL,
    -- The HTTP status, or the exit code of an exec destination.
    status_code      integer,
    -- The response headers as a JSON array of [name, value] pairs, like
    -- events.headers.
    response_headers json      NOT NULL,
    -- The start of the response body or of the command's output.
    response_excerpt bytea     NOT NULL,
    error            text,
    -- gatehouse_core::AttemptOutcome::as_str: succeeded, retry, dead, skipped.
    outcome          text      NOT NULL,
    CONSTRAINT attempts_pkey PRIMARY KEY (id),
    CONSTRAINT attempts_delivery_id_fkey FOREIGN KEY (delivery_id) REFERENCES deliveries (id)
);

CREATE INDEX attempts_delivery_id_number ON attempts (delivery_id, number);

-- Routes an operator paused (or resumed): kept across restarts and shared
-- by every gatehouse process on the database.
CREATE TABLE route_states (
    route      text    NOT NULL,
    paused     boolean NOT NULL,
    updated_at bigint  NOT NULL,
    CONSTRAINT route_states_pkey PRIMARY KEY (route)
);
