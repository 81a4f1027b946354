package pool

// RedisKeys builds the Redis keys of pools. Every key of one pool carries the
// pool id as its hash tag ({id}), so a pool lives in one Redis Cluster slot
// and one script can touch all its keys atomically. No key is assembled
// anywhere else.
type RedisKeys struct {
	prefix string
}

// NewRedisKeys returns the key builder for a namespace. Deployments sharing
// one Redis use different namespaces; tests use one each.
func NewRedisKeys(namespace string) RedisKeys {
	return RedisKeys{prefix: namespace + ":{"}
}

// Staged is the list of codes staged for fast claims (LPOP from the head).
func (k RedisKeys) Staged(poolID string) string { return k.prefix + poolID + "}:staged" }

// InFlight is the ledger of codes popped whose claim has not committed yet: a
// sorted set scored by pop time, so the reconciler finds the stale ones.
func (k RedisKeys) InFlight(poolID string) string { return k.prefix + poolID + "}:inflight" }
