-- Idempotent submission: a POST with an Idempotency-Key answers with the requests the first
-- POST with that key (and the same body) created. Keys are per user.
CREATE TABLE idempotency_keys (
    username     TEXT NOT NULL,
    key          TEXT NOT NULL,
    body_sha256  TEXT NOT NULL,
    request_ids  TEXT,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (username, key)
);
