-- Whether a prize is already ready with these very details (a repeated call).
SELECT state = 'ready' AND details = $2::jsonb FROM prizes WHERE id = $1
