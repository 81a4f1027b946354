-- A hot pool may spread its staged codes over several Redis shards (hash
-- tags), so that one pool can use several Redis Cluster masters. Each refill
-- batch goes to one shard; the reconciler checks a batch's marker there.
ALTER TABLE pools
    ADD COLUMN redis_shards smallint NOT NULL DEFAULT 1
        CHECK (redis_shards BETWEEN 1 AND 64);
ALTER TABLE stage_batches
    ADD COLUMN shard smallint NOT NULL DEFAULT 0
        CHECK (shard BETWEEN 0 AND 63);
