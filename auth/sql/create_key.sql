INSERT INTO api_keys (id, name, role, pools, secret_hash, rate, burst)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING created_at
