-- One event on one route. `next_attempt_at` orders due work; a claim sets
-- state 'in_flight' with a lease that another claimer may take over once it
-- has expired.
CREATE TABLE deliveries (
    seq              INTEGER PRIMARY KEY,
    id               BLOB    NOT NULL UNIQUE,
    event_id         BLOB    NOT NULL REFERENCES events (id),
    route            TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX deliveries_leases ON deliveries (state, lease_expires_at);
CREATE INDEX deliveries_by_event ON deliveries (event_id);
CREATE INDEX deliveries_by_route_state ON deliveries (route, state, id);

-- Every attempt, as the console's timeline shows it.
CREATE TABLE attempts (
    seq               INTEGER PRIMARY KEY,
    delivery_id       BLOB    NOT NULL,
    number            INTEGER NOT NULL,
    started_at        INTEGER NOT NULL,
    duration_ms       INTEGER NOT NULL,
    status_code       INTEGER,
    response_headers  TEXT    NOT NULL,
    response_excerpt  BLOB    NOT NULL,
    error             TEXT,
    outcome           TEXT    NOT NULL
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, number);

-- Runtime route switches (pause/resume) that outlive a restart.
CREATE TABLE route_states (
    route      TEXT    PRIMARY KEY,
    paused     INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
