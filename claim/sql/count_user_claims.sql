SELECT count(*) FROM claims WHERE pool_id = $1 AND user_id = $2
