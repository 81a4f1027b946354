-- When the next delivery of these prizes comes due ('' for every pool).
SELECT min(d.next_attempt_at) FROM deliveries d JOIN prizes p ON p.id = d.prize_id
WHERE p.state = 'assigned' AND ($1 = '' OR p.pool_id = $1)
