-- Forget refusals of pool $1 past their expiry: a retry is decided afresh.
DELETE FROM refusals WHERE pool_id = $1 AND expires_at <= now()
