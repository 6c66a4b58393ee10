-- GET /users?limit=50: the first page, one row more than asked for.
SELECT id, name, email, created_at, updated_at FROM users WHERE id > 0 ORDER BY id ASC LIMIT 51;
