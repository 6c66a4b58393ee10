-- PATCH /users/{id}: a new name, the row returned.
\set id random(1, 10000)
UPDATE users SET name = 'Renamed ' || :id, updated_at = now() AT TIME ZONE 'utc'
WHERE id = :id RETURNING id, name, email, created_at, updated_at;
