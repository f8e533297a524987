-- Events a reader (the read-model projector, the Kafka relay) could not apply, set aside so
-- that everything after them goes on. `iib replay --request N` still shows them.
CREATE TABLE set_aside_events (
    reader          TEXT   NOT NULL,
    global_position BIGINT NOT NULL,
    aggregate_type  TEXT   NOT NULL,
    aggregate_id    TEXT   NOT NULL,
    error           TEXT   NOT NULL,
    set_aside_at    TEXT   NOT NULL,
    PRIMARY KEY (reader, global_position)
);
