package stock

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/testenv"
)

// runScript runs the claim script once for sc's requests and returns its
// answer.
func runScript(t *testing.T, rdb *redis.Client, sc *script) []string {
	t.Helper()
	vals, err := claimScript.Run(context.Background(), rdb, sc.keys, sc.args...).StringSlice()
	require.NoError(t, err)
	return vals
}

// stagedPool returns a store in a Redis namespace of its own whose pool p1
// has n entries staged (codes CODE-0001 on), and the entries.
func stagedPool(t *testing.T, n int) (*redis.Client, *Store, []string) {
	t.Helper()
	rdb, ns := testenv.Redis(t)
	s := New(rdb, NewKeys(ns))
	entries := make([]string, n)
	for i := range entries {
		entries[i] = FormatEntry(int64(i + 1))
	}
	require.NoError(t, s.Push(context.Background(), "p1", 1, entries))
	return rdb, s, entries
}

// p1Call is a request's part of a claim script run in pool p1 of s.
func p1Call(s *Store, request, user string, limit int) *scriptCall {
	return s.call(ClaimArgs{PoolID: "p1", RequestID: request, UserID: user, Limit: limit, TTL: time.Hour})
}

// Several requests in one script run each get what they would get alone:
// each pop's left is the list's length just after that pop, every pop is in
// the ledger at the script's time, and what each request leaves lives for
// the TTL: in a pool of limit 1 the user's one claim, above it the
// request's replay record and the user's count, whether the script set it
// (a first claim) or raised it.
func TestClaimScriptManyRequestsInOneRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, s, entries := stagedPool(t, 7)

	now := time.UnixMilli(1_700_000_000_000)
	runs := scripts([]*scriptCall{
		p1Call(s, "r1", "u1", 1),
		p1Call(s, "r1", "u1", 1), // a copy of r1: its replay
		p1Call(s, "r2", "u2", 1),
		p1Call(s, "r3", "u1", 1), // u1's second request: the limit
		p1Call(s, "r4", "u3", 2),
		p1Call(s, "r5", "u3", 2), // u3's second claim: its count goes to 2
		p1Call(s, "r4", "u9", 2), // another user's request id, known by its replay record
		p1Call(s, "r1", "u9", 1), // in a pool of limit 1 Redis does not know r1 is u1's: Postgres refuses it
		p1Call(s, "r6", "u4", 1),
	}, now)
	require.Len(t, runs, 1)
	vals := runScript(t, rdb, runs[0])
	require.Equal(t, []string{
		"popped", entries[0], "6",
		"replay", entries[0], "",
		"popped", entries[1], "5",
		"limit", "1", "",
		"popped", entries[2], "4",
		"popped", entries[3], "3",
		"reused", "", "",
		"popped", entries[4], "2",
		"popped", entries[5], "1",
	}, vals)

	ledger, err := rdb.ZRangeWithScores(ctx, s.keys.InFlight("p1"), 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, ledger, 6)
	for _, z := range ledger {
		require.Equal(t, float64(now.UnixMilli()), z.Score)
	}
	want := map[string]string{
		s.keys.OneClaim("p1", "u1"):   OneClaimRecord("r1", entries[0]),
		s.keys.OneClaim("p1", "u2"):   OneClaimRecord("r2", entries[1]),
		s.keys.OneClaim("p1", "u9"):   OneClaimRecord("r1", entries[4]),
		s.keys.OneClaim("p1", "u4"):   OneClaimRecord("r6", entries[5]),
		s.keys.UserClaims("p1", "u3"): "2",
		s.keys.Replay("p1", "r4"):     ReplayRecord("u3", entries[2]),
		s.keys.Replay("p1", "r5"):     ReplayRecord("u3", entries[3]),
	}
	for key, value := range want {
		got, err := rdb.Get(ctx, key).Result()
		require.NoError(t, err)
		require.Equal(t, value, got, key)
		ttl, err := rdb.TTL(ctx, key).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, 59*time.Minute, key)
	}
	// A pool of limit 1 keeps one key per user and nothing per request.
	n, err := rdb.Exists(ctx, s.keys.Replay("p1", "r1"), s.keys.Replay("p1", "r6"), s.keys.UserClaims("p1", "u1"),
		s.keys.UserClaims("p1", "u4")).Result()
	require.NoError(t, err)
	require.Zero(t, n)
	left, err := rdb.LLen(ctx, s.keys.Staged("p1")).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, left)
}

// The list runs out within a run. From the first request that finds
// nothing, each later one is answered as if alone on an empty list: a copy
// of an exhausted request, or another request of its user, is exhausted
// too (not a replay, not the limit: the first one wrote nothing), while the
// requests that did pop are replayed, and an exhausted request writes
// nothing. A pool never staged answers every request exhausted.
func TestClaimScriptListRunsOutWithinARun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, s, entries := stagedPool(t, 2)
	runs := scripts([]*scriptCall{
		p1Call(s, "a1", "u1", 1),
		p1Call(s, "b1", "u2", 2),
		p1Call(s, "c1", "u3", 1),
		p1Call(s, "c1", "u3", 1),
		p1Call(s, "c2", "u3", 1),
		p1Call(s, "a1", "u1", 1),
		p1Call(s, "b2", "u2", 2),
		p1Call(s, "b1", "u2", 2),
		p1Call(s, "d1", "u4", 2),
	}, time.Now())
	vals := runScript(t, rdb, runs[0])
	require.Equal(t, []string{
		"popped", entries[0], "1",
		"popped", entries[1], "0",
		"exhausted", "", "",
		"exhausted", "", "",
		"exhausted", "", "",
		"replay", entries[0], "",
		"exhausted", "", "",
		"replay", entries[1], "",
		"exhausted", "", "",
	}, vals)
	require.EqualValues(t, 2, rdb.ZCard(ctx, s.keys.InFlight("p1")).Val())
	require.Equal(t, "1", rdb.Get(ctx, s.keys.UserClaims("p1", "u2")).Val())
	n, err := rdb.Exists(ctx, s.keys.OneClaim("p1", "u3"), s.keys.Replay("p1", "b2"), s.keys.Replay("p1", "d1"),
		s.keys.UserClaims("p1", "u4")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "an exhausted request writes nothing")

	// A pool never staged: no list at all.
	runs = scripts([]*scriptCall{
		s.call(ClaimArgs{PoolID: "p2", RequestID: "r1", UserID: "u1", Limit: 1, TTL: time.Hour}),
		s.call(ClaimArgs{PoolID: "p2", RequestID: "r2", UserID: "u2", Limit: 3, TTL: time.Hour}),
	}, time.Now())
	vals = runScript(t, rdb, runs[0])
	require.Equal(t, []string{"exhausted", "", "", "exhausted", "", ""}, vals)
	require.Zero(t, rdb.Exists(ctx, s.keys.InFlight("p2"), s.keys.OneClaim("p2", "u1"), s.keys.Replay("p2", "r2")).Val())
}

// A run decides each request against what Redis held before it and what the
// requests before it in the same run wrote: a user of a higher limit reaches
// it within one run, counting from a count an earlier run left (and the
// count is written once, at its final value, with the TTL); a record written
// before owners were kept (just the entry) replays, whoever asks; a one-claim
// key of that form is the user's claim, so any request of the user is at the
// limit.
func TestClaimScriptDecidesAgainstItsOwnWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, s, entries := stagedPool(t, 5)
	old := FormatEntry(99)
	require.NoError(t, rdb.Set(ctx, s.keys.UserClaims("p1", "u1"), "1", time.Minute).Err())
	require.NoError(t, rdb.Set(ctx, s.keys.Replay("p1", "legacy"), old, time.Minute).Err())
	require.NoError(t, rdb.Set(ctx, s.keys.OneClaim("p1", "u7"), old, time.Minute).Err())

	runs := scripts([]*scriptCall{
		p1Call(s, "a", "u1", 3),      // u1 held 1: now 2
		p1Call(s, "b", "u1", 3),      // 3
		p1Call(s, "c", "u1", 3),      // at the limit of 3
		p1Call(s, "b", "u1", 3),      // a copy of b: its replay
		p1Call(s, "legacy", "u2", 3), // an old record: replayed
		p1Call(s, "x", "u7", 1),      // an old one-claim key: the limit
		p1Call(s, "y", "u8", 1),
	}, time.Now())
	require.Len(t, runs, 1)
	vals := runScript(t, rdb, runs[0])
	require.Equal(t, []string{
		"popped", entries[0], "4",
		"popped", entries[1], "3",
		"limit", "3", "",
		"replay", entries[1], "",
		"replay", old, "",
		"limit", "1", "",
		"popped", entries[2], "2",
	}, vals)
	require.Equal(t, "3", rdb.Get(ctx, s.keys.UserClaims("p1", "u1")).Val())
	require.Greater(t, rdb.TTL(ctx, s.keys.UserClaims("p1", "u1")).Val(), 59*time.Minute)
	require.Equal(t, ReplayRecord("u1", entries[1]), rdb.Get(ctx, s.keys.Replay("p1", "b")).Val())
	require.Equal(t, old, rdb.Get(ctx, s.keys.OneClaim("p1", "u7")).Val(), "a request at the limit writes nothing")
	require.EqualValues(t, 3, rdb.ZCard(ctx, s.keys.InFlight("p1")).Val())

	// The same run again (go-redis retries a script whose answer was lost)
	// answers the same entries and pops nothing more.
	require.Equal(t, []string{
		"replay", entries[0], "",
		"replay", entries[1], "",
		"limit", "3", "",
		"replay", entries[1], "",
		"replay", old, "",
		"limit", "1", "",
		"replay", entries[2], "",
	}, runScript(t, rdb, runs[0]))
	require.EqualValues(t, 2, rdb.LLen(ctx, s.keys.Staged("p1")).Val())
}
