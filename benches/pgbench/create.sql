-- POST /users: one INSERT ... RETURNING with a unique email.
\set n random(1, 1000000000)
INSERT INTO users (name, email, email_key, created_at, updated_at)
VALUES ('Bench User', 'pgbench-' || :client_id || '-' || :n || '-' || txid_current() || '@example.com',
        'pgbench-' || :client_id || '-' || :n || '-' || txid_current() || '@example.com',
        now() AT TIME ZONE 'utc', now() AT TIME ZONE 'utc')
RETURNING id, name, email, created_at, updated_at;
