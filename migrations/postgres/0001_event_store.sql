-- The event store: one append-only table, one total order (global_position).
CREATE TABLE events (
    global_position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    aggregate_type  TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL,
    sequence        BIGINT NOT NULL,
    event_type      TEXT    NOT NULL,
    event_version   TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    recorded_at     TEXT    NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, sequence)
);

-- Integer ids from one sequence each, as IIB's (request, batch).
CREATE TABLE id_sequences (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO id_sequences (name, value) VALUES ('request', 0), ('batch', 0);

-- Secrets handed to workers: never in events; deleted when their request ends.
CREATE TABLE request_secrets (
    request_id BIGINT NOT NULL,
    kind       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    expires_at TEXT    NOT NULL,
    PRIMARY KEY (request_id, kind)
);
