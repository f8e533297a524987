-- Which index a request overwrites (overwrite_from_index / overwrite_target_index): requests on
-- one index run one at a time, in submission order, across every queue and worker.
ALTER TABLE request_views ADD COLUMN writes_index TEXT;
CREATE INDEX request_views_writes ON request_views (writes_index, state, id);
