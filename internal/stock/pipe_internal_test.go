package stock

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Calls queued together become one script per shard, each shard's calls in
// queue order, with the keys and arguments the script reads per request.
func TestScriptsGroupByShard(t *testing.T) {
	t.Parallel()
	s := &Store{keys: NewKeys("ns")}
	call := func(shard, request, user string, limit int) *scriptCall {
		return s.call(ClaimArgs{PoolID: shard, RequestID: request, UserID: user, Limit: limit, TTL: time.Minute})
	}
	now := time.UnixMilli(1_700_000_000_000)
	got := scripts([]*scriptCall{call("p1", "r1", "u1", 1), call("p1#1", "r2", "u2", 2), call("p1", "r3", "u3", 3)}, now)
	require.Len(t, got, 2)
	k := s.keys
	// A pool of limit 1 names the user's one claim twice and passes the
	// request id; above it, the request's replay record and the user's
	// count, and the user id.
	require.Equal(t, []string{k.Staged("p1"), k.InFlight("p1"), k.OneClaim("p1", "u1"), k.OneClaim("p1", "u1"),
		k.Replay("p1", "r3"), k.UserClaims("p1", "u3")}, got[0].keys)
	require.Equal(t, []any{now.UnixMilli(), 1, 60, "r1", 3, 60, "u3"}, got[0].args)
	require.Len(t, got[0].calls, 2)
	require.Equal(t, []string{k.Staged("p1#1"), k.InFlight("p1#1"), k.Replay("p1#1", "r2"), k.UserClaims("p1#1", "u2")}, got[1].keys)
	require.Equal(t, []any{now.UnixMilli(), 2, 60, "u2"}, got[1].args)
}
