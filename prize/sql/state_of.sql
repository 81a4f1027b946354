SELECT state::text FROM prizes WHERE id = $1
