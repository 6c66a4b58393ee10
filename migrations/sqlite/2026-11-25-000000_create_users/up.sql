-- Users. Times are UTC, written by switchboard. AUTOINCREMENT keeps ids of
-- deleted users from being handed out again (cursors and caches rely on it).
-- email_key is the case-folded address that uniqueness is decided on.
CREATE TABLE users (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    email      TEXT NOT NULL,
    email_key  TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE UNIQUE INDEX users_email_key ON users (email_key);
