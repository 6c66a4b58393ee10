-- GET /users/{id}: the SELECT switchboard sends for one user.
\set id random(1, 10000)
SELECT id, name, email, created_at, updated_at FROM users WHERE id = :id LIMIT 1;
