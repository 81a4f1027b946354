package stock

import (
	"runtime"
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

// The sender yields before it sends, for as long as yielding brings calls:
// callers that were runnable when the first call woke it, or became so
// meanwhile, go in its pipeline, not one pipeline each. Here on one
// processor, so that no caller runs unless the sender yields; not parallel,
// as it sets GOMAXPROCS.
func TestPipeFillTakesCallsOfRunnableCallers(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	p := (&Store{keys: NewKeys("ns")}).NewPipe(time.Second, nil)
	// The scheduler now and then runs the sender before the caller (its
	// fairness check of the global queue), and fill then stops early; so
	// the test tries a few times. With a single yield no try could take
	// more than two calls, and without one none more than one.
	most := 0
	for try := 0; try < 20 && most < 4; try++ {
		// A runnable caller: it queues a call and yields, three times,
		// as if each next call came to it after the sender's yield.
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range 3 {
				p.in <- &scriptCall{}
				runtime.Gosched()
			}
		}()
		most = max(most, len(p.fill([]*scriptCall{{}})))
		<-done
		for len(p.in) > 0 {
			<-p.in
		}
	}
	require.Equal(t, 4, most)

	// With nothing runnable, fill returns what it was given.
	require.Len(t, p.fill([]*scriptCall{{}}), 1)
}
