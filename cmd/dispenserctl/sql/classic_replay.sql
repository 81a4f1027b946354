SELECT k.code FROM claims c JOIN codes k ON k.id = c.code_id WHERE c.pool_id = $1 AND c.request_id = $2
