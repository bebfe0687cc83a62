-- Facts about this service's data, e.g. when its schema was created.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('schema_created', CURRENT_TIMESTAMP);
