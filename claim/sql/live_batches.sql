-- Which of the batch ids $2 still have staged codes in pool $1.
SELECT DISTINCT stage_batch FROM codes
WHERE pool_id = $1 AND state = 'staged' AND stage_batch = ANY($2)
