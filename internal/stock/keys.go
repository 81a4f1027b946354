package stock

import (
	"hash/fnv"
	"strconv"
)

// Keys builds the Redis keys of pools. Every key of one pool carries the
// pool id as its hash tag ({id}), so a pool lives in one Redis Cluster slot
// and one script can touch all its keys atomically. No key is assembled
// anywhere else.
type Keys struct {
	prefix string
}

// NewKeys returns the key builder for a namespace. Deployments sharing
// one Redis use different namespaces; tests use one each.
func NewKeys(namespace string) Keys {
	return Keys{prefix: namespace + ":{"}
}

// Shard names shard s of a pool spread over several Redis shards: every
// method of this package that takes a pool id takes a shard name too, and
// keys the shard's structures under it (its own hash tag, so its own Cluster
// slot). Shard 0 is the pool id itself, so a pool of one shard keeps the keys
// it always had; shard s > 0 is "<pool id>#<s>" ('#' never appears in a pool
// id, see input.PoolID).
func Shard(poolID string, s int) string {
	if s == 0 {
		return poolID
	}
	return poolID + "#" + strconv.Itoa(s)
}

// Shards names shards 0 to n-1 of a pool (at least shard 0).
func Shards(poolID string, n int) []string {
	out := []string{poolID}
	for s := 1; s < n; s++ {
		out = append(out, Shard(poolID, s))
	}
	return out
}

// HomeShard is the shard, of n, where a user's claims start: the user's
// count and replay records live there, so the claim script reads and writes
// them with the pop, atomically. A claim moves to the next shards only when
// its home is empty.
func HomeShard(userID string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(userID))
	return int(h.Sum32() % uint32(n))
}

// Staged is the list of codes staged for fast claims (LPOP from the head).
func (k Keys) Staged(poolID string) string { return k.prefix + poolID + "}:staged" }

// InFlight is the ledger of codes popped whose claim has not committed yet: a
// sorted set scored by pop time, so the reconciler finds the stale ones.
func (k Keys) InFlight(poolID string) string { return k.prefix + poolID + "}:inflight" }

// Replay records which staged entry a request got, so a retry gets the same
// code. It expires; Postgres keeps the claim forever.
func (k Keys) Replay(poolID, requestID string) string {
	return k.prefix + poolID + "}:req:" + requestID
}

// UserClaims counts a user's claims from the pool: a fast guard only, since
// Postgres enforces the limit. It expires like replay records. Pools of a
// per-user limit of 1 keep OneClaim instead of this and Replay.
func (k Keys) UserClaims(poolID, userID string) string {
	return k.prefix + poolID + "}:user:" + userID
}

// OneClaim is, in a pool of a per-user limit of 1, the user's one claim as
// Redis knows it: "<request id>\n<entry>" (request ids hold no control
// character). It is both the user's count and the request's replay record,
// so a claim reads and writes one key instead of two. It expires like
// them. Its name is not UserClaims's, whose value replicas of earlier
// versions read as a number.
func (k Keys) OneClaim(poolID, userID string) string {
	return k.prefix + poolID + "}:one:" + userID
}

// Batches is the set of refill batch ids whose codes were pushed to Staged;
// reconciliation returns the staged codes of batches missing from it.
func (k Keys) Batches(poolID string) string { return k.prefix + poolID + "}:batches" }

// RefillLock is held (SET NX with a TTL) by the replica refilling the pool
// ahead of demand, so that one refill at a time runs across replicas.
func (k Keys) RefillLock(poolID string) string { return k.prefix + poolID + "}:refilling" }
