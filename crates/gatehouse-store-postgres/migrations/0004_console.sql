-- Schema version 4: the console (issue 5): people, sessions, API tokens,
-- the audit log, and the indexes the console's queues and charts read.
-- None of them is on `events`: every index there is one more write on each
-- ingest.
--
-- Never edit a migration that has shipped: add the next file instead.

-- Console users. `id` is the UserId's ULID as 16 big-endian bytes.
CREATE TABLE users (
    id            bytea   NOT NULL,
    username      text    NOT NULL,
    -- viewer | operator | admin (gatehouse_core::Role::as_str).
    role          text    NOT NULL,
    -- The argon2 PHC string.
    password_hash text    NOT NULL,
    disabled      boolean NOT NULL DEFAULT false,
    -- Unix milliseconds.
    created_at    bigint  NOT NULL,
    last_login_at bigint,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_username UNIQUE (username)
);

-- Console sessions, by the SHA-256 (hex) of the cookie's secret.
CREATE TABLE sessions (
    token_hash  text   NOT NULL,
    user_id     bytea  NOT NULL,
    csrf_token  text   NOT NULL,
    created_at  bigint NOT NULL,
    expires_at  bigint NOT NULL,
    remote_addr text,
    CONSTRAINT sessions_pkey PRIMARY KEY (token_hash),
    CONSTRAINT sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id)
);
-- Ending a user's sessions (disabled, new password).
CREATE INDEX sessions_user_id ON sessions (user_id);
-- Removing expired sessions.
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- API tokens, by the SHA-256 (hex) of the secret. `id` is the TokenId's
-- ULID as 16 big-endian bytes, so newest first is id order.
CREATE TABLE api_tokens (
    id           bytea  NOT NULL,
    name         text   NOT NULL,
    token_hash   text   NOT NULL,
    role         text   NOT NULL,
    created_by   text   NOT NULL,
    created_at   bigint NOT NULL,
    expires_at   bigint,
    revoked_at   bigint,
    last_used_at bigint,
    CONSTRAINT api_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT api_tokens_token_hash UNIQUE (token_hash)
);

-- Every action a person or token took. Append-only: the trigger refuses
-- changes, so a bug (or a hand-typed statement) cannot rewrite history.
CREATE TABLE audit_log (
    seq         bigserial NOT NULL,
    at          bigint    NOT NULL,
    actor       text      NOT NULL,
    action      text      NOT NULL,
    object      text      NOT NULL,
    remote_addr text,
    note        text,
    details     text      NOT NULL,
    CONSTRAINT audit_log_pkey PRIMARY KEY (seq)
);
CREATE INDEX audit_log_actor_seq ON audit_log (actor, seq);
CREATE INDEX audit_log_object_seq ON audit_log (object, seq);

CREATE FUNCTION gatehouse_audit_log_is_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION gatehouse_audit_log_is_append_only();

-- The exception queue: dead deliveries grouped by route and error. Partial,
-- so only deliveries that die (and are retried or resolved) touch it.
CREATE INDEX deliveries_dead ON deliveries (route, last_error) INCLUDE (updated_at) WHERE state = 'dead';

-- The overview's charts: attempts by start time (covering, so a chart can
-- read the index alone). Events are charted by id ranges over
-- events_source_id and failures by verification_failures_at, which exist.
CREATE INDEX attempts_started_at ON attempts (started_at) INCLUDE (outcome);
