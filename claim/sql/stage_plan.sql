-- Run in the refill's transaction, before stage_batch.sql: its pick must walk
-- codes_pool_id_idx in order and stop after its batch. A pool imported
-- since the last ANALYZE looks nearly empty to the planner, which then reads
-- every available code of the pool through a bitmap and sorts them all (on
-- disk) to take the first few thousand: 0.4 to 0.6 s per refill of a fresh
-- 300,000-code pool, every refill until autovacuum analyzes the table (never
-- where it is off). Without bitmap scans and sorts the ordered index scan is
-- the plan whatever the statistics say (an incremental sort over the pool's
-- range of codes_pool_code_key, read whole, is the other way round it). For
-- this transaction only.
SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_sort', 'off', true),
       set_config('enable_incremental_sort', 'off', true)
