-- One row that /ready rewrites (at most once a second per instance) to learn
-- whether the database takes writes: a read-only file or server, or a full
-- disk, fails this write as it would fail a user's.
CREATE TABLE write_probe (
    id         INTEGER PRIMARY KEY,
    written_at TIMESTAMP NOT NULL
);
