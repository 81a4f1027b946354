// Package stock owns Redis: the keys of every pool's structures (keys.go),
// the entry format, the scripts (scripts.go), the pipelined claim sender
// (pipe.go) and every command the service sends. Redis is only fast: it
// holds pools' staged codes, replay records, user counts, the in-flight
// ledger, refill batch markers and the refill lock, and Postgres decides
// every claim. Nothing else in the module talks to Redis (tests may poke
// keys to inject faults).
package stock

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Store sends the service's Redis commands for the pools of one namespace.
// It starts nothing; its methods are safe for concurrent use.
type Store struct {
	rdb  redis.UniversalClient
	keys Keys
}

// New returns the store of the pools in keys' namespace.
func New(rdb redis.UniversalClient, keys Keys) *Store {
	return &Store{rdb: rdb, keys: keys}
}

// Keys returns the key builder (for tests that inject faults).
func (s *Store) Keys() Keys { return s.keys }

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// A staged entry is "<code id>:": the id lets Postgres update by primary
// key, and Postgres answers the code itself, so codes never go to Redis
// (one place fewer that holds them). Versions before kept
// "<code id>:<code>"; both read the same, and the colon stays so that
// those versions read the entries of this one during a rolling deploy.

// FormatEntry returns the staged entry of a code.
func FormatEntry(codeID int64) string {
	return strconv.FormatInt(codeID, 10) + ":"
}

// EntryCodeID returns the code id of a staged entry.
func EntryCodeID(entry string) (int64, error) {
	idText, _, ok := strings.Cut(entry, ":")
	id, err := strconv.ParseInt(idText, 10, 64)
	if !ok || err != nil || id <= 0 {
		return 0, fmt.Errorf("malformed staged entry")
	}
	return id, nil
}

// ReplayRecord is the value of a replay record in a pool of a per-user
// limit above 1: the owner, then the entry (user ids hold no control
// character).
func ReplayRecord(userID, entry string) string { return userID + "\n" + entry }

// OneClaimRecord is the value of a user's one claim in a pool of limit 1
// (Keys.OneClaim): the request, then the entry.
func OneClaimRecord(requestID, entry string) string { return requestID + "\n" + entry }

// Release undoes a pop whose claim Postgres refused or answered from an
// earlier claim, in the shard a.PoolID names: it clears the ledger entry,
// uncounts the pop if popped (this call counted it), and points the
// request's replay record at replayTo (an entry; "" deletes the record)
// while the record is still this call's (see releaseScript).
func (s *Store) Release(ctx context.Context, a ClaimArgs, entry, replayTo string, popped bool) error {
	// Above a limit of 1: the request's record names its user, and the
	// user's count is its own key. At 1: the user's one claim names the
	// request and is the count, so deleting it uncounts the pop.
	keys := []string{s.keys.Replay(a.PoolID, a.RequestID), s.keys.UserClaims(a.PoolID, a.UserID), s.keys.InFlight(a.PoolID)}
	record := func(e string) string { return ReplayRecord(a.UserID, e) }
	counted := "0"
	if a.Limit == 1 {
		one := s.keys.OneClaim(a.PoolID, a.UserID)
		keys[0], keys[1] = one, one
		record = func(e string) string { return OneClaimRecord(a.RequestID, e) }
	} else if popped {
		counted = "1"
	}
	next := ""
	if replayTo != "" {
		next = record(replayTo)
	}
	return releaseScript.Run(ctx, s.rdb, keys, entry, record(entry), next, int(a.TTL.Seconds()), counted).Err()
}

// SetUserCount sets the user's claim count in the shard a.PoolID names, a
// guard that had gone stale, to n (Postgres's count). In a pool of limit 1,
// n is 0 (a user at the limit is refused before this) and the user's one
// claim is deleted.
func (s *Store) SetUserCount(ctx context.Context, a ClaimArgs, n int64) error {
	if a.Limit == 1 {
		if n == 0 {
			return s.rdb.Del(ctx, s.keys.OneClaim(a.PoolID, a.UserID)).Err()
		}
		return s.rdb.Set(ctx, s.keys.OneClaim(a.PoolID, a.UserID), OneClaimRecord("", ""), a.TTL).Err()
	}
	return s.rdb.Set(ctx, s.keys.UserClaims(a.PoolID, a.UserID), n, a.TTL).Err()
}

// ClearInFlight removes entries from the in-flight ledgers of pools' shards,
// given by shard name (see Shard): one ZREM per shard, in one pipeline.
func (s *Store) ClearInFlight(ctx context.Context, byShard map[string][]string) error {
	pipe := s.rdb.Pipeline()
	for poolID, entries := range byShard {
		members := make([]any, len(entries))
		for i, e := range entries {
			members[i] = e
		}
		pipe.ZRem(ctx, s.keys.InFlight(poolID), members...)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// Push stages a refill batch: its entries at the tail of the pool's list and
// its id in the batch set, both or neither.
func (s *Store) Push(ctx context.Context, poolID string, batchID int64, entries []string) error {
	args := make([]any, 0, len(entries)+1)
	args = append(args, strconv.FormatInt(batchID, 10))
	for _, e := range entries {
		args = append(args, e)
	}
	return pushScript.Run(ctx, s.rdb, []string{s.keys.Staged(poolID), s.keys.Batches(poolID)}, args...).Err()
}

// StagedLen is the length of the pool's staged list.
func (s *Store) StagedLen(ctx context.Context, poolID string) (int64, error) {
	return s.rdb.LLen(ctx, s.keys.Staged(poolID)).Result()
}

// CodeIDs returns the ids of the codes Redis holds in the given shards (see
// Shard): in their staged lists or in their in-flight ledgers, read in one
// pipeline. Malformed entries are skipped.
func (s *Store) CodeIDs(ctx context.Context, shards ...string) ([]int64, error) {
	cmds := make([]*redis.StringSliceCmd, 0, 2*len(shards))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, sh := range shards {
			cmds = append(cmds, p.LRange(ctx, s.keys.Staged(sh), 0, -1), p.ZRange(ctx, s.keys.InFlight(sh), 0, -1))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ids := []int64{} // never nil: callers pass it as an SQL array, and nil is NULL
	for _, c := range cmds {
		for _, e := range c.Val() {
			if id, err := EntryCodeID(e); err == nil {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}

// StagedEntries returns the pool's whole staged list (for audits).
func (s *Store) StagedEntries(ctx context.Context, poolID string) ([]string, error) {
	return s.rdb.LRange(ctx, s.keys.Staged(poolID), 0, -1).Result()
}

// InFlightLen is the size of the pool's in-flight ledger.
func (s *Store) InFlightLen(ctx context.Context, poolID string) (int64, error) {
	return s.rdb.ZCard(ctx, s.keys.InFlight(poolID)).Result()
}

// InFlight returns the pool's whole in-flight ledger.
func (s *Store) InFlight(ctx context.Context, poolID string) ([]string, error) {
	return s.rdb.ZRange(ctx, s.keys.InFlight(poolID), 0, -1).Result()
}

// InFlightBefore returns the ledger entries popped before cutoff.
func (s *Store) InFlightBefore(ctx context.Context, poolID string, cutoff time.Time) ([]string, error) {
	return s.rdb.ZRangeByScore(ctx, s.keys.InFlight(poolID), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(cutoff.UnixMilli(), 10),
	}).Result()
}

// Levels reads the staged list lengths and ledger sizes of the given shards
// (see Shard) in one pipeline, and returns their sums.
func (s *Store) Levels(ctx context.Context, shards ...string) (staged, inFlight int64, err error) {
	lens, cards, err := s.shardLevels(ctx, shards, true)
	for i := range lens {
		staged += lens[i]
		inFlight += cards[i]
	}
	return staged, inFlight, err
}

// ShardLevels returns the staged list length of each given shard, read in
// one pipeline.
func (s *Store) ShardLevels(ctx context.Context, shards ...string) ([]int64, error) {
	lens, _, err := s.shardLevels(ctx, shards, false)
	return lens, err
}

// shardLevels reads each shard's list length and, with ledgers, its ledger
// size, in one pipeline.
func (s *Store) shardLevels(ctx context.Context, shards []string, ledgers bool) (lens, cards []int64, err error) {
	pipe := s.rdb.Pipeline()
	lenCmds := make([]*redis.IntCmd, len(shards))
	cardCmds := make([]*redis.IntCmd, len(shards))
	for i, sh := range shards {
		lenCmds[i] = pipe.LLen(ctx, s.keys.Staged(sh))
		if ledgers {
			cardCmds[i] = pipe.ZCard(ctx, s.keys.InFlight(sh))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, nil, err
	}
	lens, cards = make([]int64, len(shards)), make([]int64, len(shards))
	for i := range shards {
		lens[i] = lenCmds[i].Val()
		if ledgers {
			cards[i] = cardCmds[i].Val()
		}
	}
	return lens, cards, nil
}

// DropShard deletes the staged list and batch markers of a shard no claim
// pops from any more (a pool's shard count was lowered), once reconcile has
// returned its codes. The ledger is left to drain like any other.
func (s *Store) DropShard(ctx context.Context, shard string) error {
	pipe := s.rdb.Pipeline()
	pipe.Del(ctx, s.keys.Staged(shard))
	pipe.Del(ctx, s.keys.Batches(shard))
	_, err := pipe.Exec(ctx)
	return err
}

// Batches returns the ids of the refill batches whose entries were pushed
// and whose markers are still kept.
func (s *Store) Batches(ctx context.Context, poolID string) ([]int64, error) {
	members, err := s.rdb.SMembers(ctx, s.keys.Batches(poolID)).Result()
	if err != nil {
		return nil, err
	}
	ids := make([]int64, 0, len(members))
	for _, m := range members {
		if id, err := strconv.ParseInt(m, 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// DropBatches forgets the markers of batches.
func (s *Store) DropBatches(ctx context.Context, poolID string, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	members := make([]any, len(ids))
	for i, id := range ids {
		members[i] = strconv.FormatInt(id, 10)
	}
	return s.rdb.SRem(ctx, s.keys.Batches(poolID), members...).Err()
}

// TryLock takes the pool's refill lock for ttl under token, and reports
// whether it got it (one refill at a time across replicas).
func (s *Store) TryLock(ctx context.Context, poolID, token string, ttl time.Duration) (bool, error) {
	return s.rdb.SetNX(ctx, s.keys.RefillLock(poolID), token, ttl).Result()
}

// Unlock releases the pool's refill lock if token still holds it.
func (s *Store) Unlock(ctx context.Context, poolID, token string) error {
	return unlockScript.Run(ctx, s.rdb, []string{s.keys.RefillLock(poolID)}, token).Err()
}

// Refilling reads, in one round trip, whether a refill of the shard holds
// its lock and how many entries the shard's list holds.
func (s *Store) Refilling(ctx context.Context, shard string) (locked bool, staged int64, err error) {
	pipe := s.rdb.Pipeline()
	lock := pipe.Exists(ctx, s.keys.RefillLock(shard))
	n := pipe.LLen(ctx, s.keys.Staged(shard))
	if _, err := pipe.Exec(ctx); err != nil {
		return false, 0, err
	}
	return lock.Val() > 0, n.Val(), nil
}
