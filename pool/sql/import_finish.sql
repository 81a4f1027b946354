UPDATE imports
SET lines = $2, inserted = $3, duplicates_in_file = $4, duplicates_in_pool = $5,
    invalid = $6, bytes = $7
WHERE id = $1
