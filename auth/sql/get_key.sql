SELECT id, name, role::text, pools, secret_hash, rate, burst, created_at, revoked_at
FROM api_keys WHERE id = $1
