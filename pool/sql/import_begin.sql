INSERT INTO imports (pool_id, source_name, format, strict, lines, inserted,
                     duplicates_in_file, duplicates_in_pool, invalid, bytes)
VALUES ($1, $2, $3, $4, 0, 0, 0, 0, 0, 0)
RETURNING id
