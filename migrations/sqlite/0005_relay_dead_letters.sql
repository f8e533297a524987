-- Kafka messages the broker refused for good (too large, invalid, not authorized): the relay
-- records each here and moves on, so one bad message never stops the stream. The message body
-- is not kept; `replay --to-kafka --from <global_position - 1>` sends it again once the cause
-- is fixed.
CREATE TABLE relay_dead_letters (
    global_position  BIGINT NOT NULL,
    topic            TEXT NOT NULL,
    message_key      TEXT NOT NULL,
    error            TEXT NOT NULL,
    size_bytes       BIGINT NOT NULL,
    recorded_at      TEXT NOT NULL,
    PRIMARY KEY (global_position, topic, message_key)
);
