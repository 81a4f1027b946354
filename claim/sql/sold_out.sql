-- Whether each request that found nothing staged in Redis may be answered
-- exhausted without the fallback's transaction: items $1..$4 (pool,
-- request, user, whether it is a hold). One row per item. See
-- dispenser_sold_out_v1.
SELECT ord, sold_out FROM dispenser_sold_out_v1($1, $2, $3, $4)
