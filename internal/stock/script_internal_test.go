package stock

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/testenv"
)

// Several requests in one script run each get what they would get alone:
// each pop's left is the list's length just after that pop, every pop is in
// the ledger at the script's time, and each user's count is right and lives
// for the TTL whether the script set it (a first claim) or raised it.
func TestClaimScriptManyRequestsInOneRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, ns := testenv.Redis(t)
	s := New(rdb, NewKeys(ns))
	entries := make([]string, 7)
	for i := range entries {
		entries[i] = FormatEntry(int64(i+1), fmt.Sprintf("CODE-%04d", i+1))
	}
	require.NoError(t, s.Push(ctx, "p1", 1, entries))

	call := func(request, user string, limit int) *scriptCall {
		return s.call(ClaimArgs{PoolID: "p1", RequestID: request, UserID: user, Limit: limit, TTL: time.Hour})
	}
	now := time.UnixMilli(1_700_000_000_000)
	runs := scripts([]*scriptCall{
		call("r1", "u1", 1),
		call("r1", "u1", 1), // a copy of r1: its replay
		call("r2", "u2", 1),
		call("r3", "u1", 1), // u1's second request: the limit
		call("r4", "u3", 2),
		call("r5", "u3", 2), // u3's second claim: its count goes to 2
		call("r1", "u9", 1), // another user's request id
		call("r6", "u4", 1),
	}, now)
	require.Len(t, runs, 1)
	vals, err := claimScript.Run(ctx, rdb, runs[0].keys, runs[0].args...).StringSlice()
	require.NoError(t, err)
	require.Equal(t, []string{
		"popped", entries[0], "6",
		"replay", entries[0], "",
		"popped", entries[1], "5",
		"limit", "1", "",
		"popped", entries[2], "4",
		"popped", entries[3], "3",
		"reused", "", "",
		"popped", entries[4], "2",
	}, vals)

	ledger, err := rdb.ZRangeWithScores(ctx, s.keys.InFlight("p1"), 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, ledger, 5)
	for _, z := range ledger {
		require.Equal(t, float64(now.UnixMilli()), z.Score)
	}
	for user, want := range map[string]string{"u1": "1", "u2": "1", "u3": "2", "u4": "1"} {
		key := s.keys.UserClaims("p1", user)
		got, err := rdb.Get(ctx, key).Result()
		require.NoError(t, err)
		require.Equal(t, want, got, user)
		ttl, err := rdb.TTL(ctx, key).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, 59*time.Minute, user)
	}
	left, err := rdb.LLen(ctx, s.keys.Staged("p1")).Result()
	require.NoError(t, err)
	require.EqualValues(t, 2, left)
}
