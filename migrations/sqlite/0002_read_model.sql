-- The read model, folded from the events by the projector.
CREATE TABLE projection_checkpoints (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
INSERT INTO projection_checkpoints (name, position) VALUES ('read_model', 0);

CREATE TABLE request_views (
    id           INTEGER PRIMARY KEY,
    batch_id     INTEGER NOT NULL,
    request_type TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    username     TEXT,
    from_index   TEXT,
    index_image  TEXT,
    queue        TEXT,
    claimed_by   TEXT,
    lease_until  TEXT,
    updated      TEXT    NOT NULL,
    record       TEXT    NOT NULL,
    verbose_json TEXT    NOT NULL,
    summary_json TEXT    NOT NULL
);
CREATE INDEX request_views_state ON request_views (state, id);
CREATE INDEX request_views_user ON request_views (username, id);
CREATE INDEX request_views_batch ON request_views (batch_id, id);
CREATE INDEX request_views_type ON request_views (request_type, id);
CREATE INDEX request_views_from_index ON request_views (from_index, id);
CREATE INDEX request_views_index_image ON request_views (index_image, id);
CREATE INDEX request_views_work ON request_views (state, queue, id);

CREATE TABLE batch_views (
    id     INTEGER PRIMARY KEY,
    state  TEXT NOT NULL,
    record TEXT NOT NULL
);

-- Every pull spec any request has named (IIB's `image` table): the list filters `from_index`,
-- `from_index_startswith` and `index_image` reject pull specs never seen.
CREATE TABLE images (
    pull_spec TEXT PRIMARY KEY
);
