package stock_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newStore(t *testing.T) *stock.Store {
	t.Helper()
	rdb, ns := testenv.Redis(t)
	return stock.New(rdb, stock.NewKeys(ns))
}

// claimAt runs the claim script once for request of user in pool p1 (limit
// 1) as if at time at.
func claimAt(t *testing.T, s *stock.Store, request, user string, at time.Time) stock.Answer {
	t.Helper()
	ans, err := s.ClaimOnce(context.Background(),
		stock.ClaimArgs{PoolID: "p1", RequestID: request, UserID: user, Limit: 1, TTL: time.Hour}, at)
	require.NoError(t, err)
	return ans
}

func entries(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = stock.FormatEntry(int64(i + 1))
	}
	return out
}

// A push whose answer was lost is sent again by the client: the batch must
// not be staged twice (the audit would count every entry as a duplicate, and
// each code would be popped twice).
func TestPushTwiceStagesOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	require.NoError(t, s.Push(ctx, "p1", 7, entries(3)))
	require.NoError(t, s.Push(ctx, "p1", 7, entries(3)))
	got, err := s.StagedEntries(ctx, "p1")
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.NoError(t, s.Push(ctx, "p1", 8, entries(2)))
	n, err := s.StagedLen(ctx, "p1")
	require.NoError(t, err)
	require.EqualValues(t, 5, n)
}

// eachLimit runs f as parallel subtests for a pool of limit 1 (Redis keeps
// the user's one claim) and one of limit 2 (the request's replay record and
// the user's count).
func eachLimit(t *testing.T, f func(t *testing.T, limit int)) {
	for _, limit := range []int{1, 2} {
		t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
			t.Parallel()
			f(t, limit)
		})
	}
}

// The claim script answers in the claim package's words: a pop, the same
// entry again for a retry of the same user, the limit for the user's next
// request, and exhausted on an empty list. A request id another user holds
// gets nothing from a pool that keeps replay records (a limit above 1); a
// pool of limit 1 keeps the user's one claim instead, so Redis pops for the
// other user and Postgres refuses the claim.
func TestClaimScriptAnswers(t *testing.T) {
	t.Parallel()
	eachLimit(t, func(t *testing.T, limit int) {
		ctx := context.Background()
		s := newStore(t)
		require.NoError(t, s.Push(ctx, "p1", 7, entries(3)))
		p := s.NewPipe(time.Second, nil)
		p.Start()
		defer p.Stop()
		claim := func(request, user string) stock.Answer {
			t.Helper()
			ans, err := p.Claim(ctx, stock.ClaimArgs{PoolID: "p1", RequestID: request, UserID: user, Limit: limit, TTL: time.Hour})
			require.NoError(t, err)
			return ans
		}

		first := claim("r1", "u1")
		require.Equal(t, stock.Answer{Outcome: "popped", Entry: stock.FormatEntry(1), Left: 2}, first)
		again := claim("r1", "u1")
		require.Equal(t, "replay", again.Outcome)
		require.Equal(t, first.Entry, again.Entry)

		if limit == 1 {
			require.Equal(t, stock.Answer{Outcome: "popped", Entry: stock.FormatEntry(2), Left: 1},
				claim("r1", "u2"))
			require.Equal(t, stock.Answer{Outcome: "limit", Entry: "1", Left: -1}, claim("r2", "u1"))
		} else {
			require.Equal(t, stock.Answer{Outcome: "reused", Left: -1}, claim("r1", "u2"))
			require.Equal(t, "popped", claim("r2", "u1").Outcome)
			require.Equal(t, stock.Answer{Outcome: "limit", Entry: "2", Left: -1}, claim("r5", "u1"))
		}
		require.Equal(t, "popped", claim("r3", "u3").Outcome)
		require.Equal(t, "exhausted", claim("r4", "u4").Outcome)

		staged, inFlight, err := s.Levels(ctx, "p1")
		require.NoError(t, err)
		require.Zero(t, staged)
		require.EqualValues(t, 3, inFlight, "every pop is in the ledger until its claim commits")
	})
}

// Concurrent claims through one pipe each get their own entry: none twice,
// none lost.
func TestPipeConcurrentClaims(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	const n = 500
	require.NoError(t, s.Push(ctx, "p1", 1, entries(n)))
	p := s.NewPipe(time.Second, nil)
	p.Start()
	defer p.Stop()

	var mu sync.Mutex
	got := map[string]bool{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ans, err := p.Claim(ctx, stock.ClaimArgs{PoolID: "p1", RequestID: fmt.Sprint("r", i), UserID: fmt.Sprint("u", i), Limit: 1, TTL: time.Hour})
			if err != nil || ans.Outcome != "popped" {
				t.Errorf("claim %d: %v %+v", i, err, ans)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if got[ans.Entry] {
				t.Errorf("entry %q popped twice", ans.Entry)
			}
			got[ans.Entry] = true
		})
	}
	wg.Wait()
	require.Len(t, got, n)
	ledger, err := s.InFlight(ctx, "p1")
	require.NoError(t, err)
	require.Len(t, ledger, n)
	byPool := map[string][]string{"p1": ledger}
	require.NoError(t, s.ClearInFlight(ctx, byPool))
	left, err := s.InFlightLen(ctx, "p1")
	require.NoError(t, err)
	require.Zero(t, left)
}

// A stopped pipe refuses at once instead of hanging.
func TestPipeStopped(t *testing.T) {
	t.Parallel()
	p := newStore(t).NewPipe(time.Second, nil)
	p.Start()
	p.Stop()
	_, err := p.Claim(context.Background(), stock.ClaimArgs{PoolID: "p1", RequestID: "r", UserID: "u", Limit: 1, TTL: time.Hour})
	require.ErrorIs(t, err, stock.ErrPipeStopped)
}

// Release gives back what a pop took: the ledger entry, the user's count
// and the replay record, which it can point at another entry instead; a
// record that is no longer this pop's is left alone. So in a pool of limit
// 1, where the user's one claim is both, and above it.
func TestRelease(t *testing.T) {
	t.Parallel()
	eachLimit(t, func(t *testing.T, limit int) {
		ctx := context.Background()
		s := newStore(t)
		require.NoError(t, s.Push(ctx, "p1", 1, entries(4)))
		args := func(request string) stock.ClaimArgs {
			return stock.ClaimArgs{PoolID: "p1", RequestID: request, UserID: "u1", Limit: limit, TTL: time.Hour}
		}
		claim := func(request string) stock.Answer {
			t.Helper()
			ans, err := s.ClaimOnce(ctx, args(request), time.Now())
			require.NoError(t, err)
			return ans
		}
		popped := claim("r1")
		require.Equal(t, "popped", popped.Outcome)

		real := stock.FormatEntry(99)
		require.NoError(t, s.Release(ctx, args("r1"), popped.Entry, real, true))
		n, err := s.InFlightLen(ctx, "p1")
		require.NoError(t, err)
		require.Zero(t, n)
		require.Equal(t, stock.Answer{Outcome: "replay", Entry: real, Left: -1}, claim("r1"),
			"the record points at the real claim")
		// Pointed at the real claim, the record still counts it.
		if limit == 1 {
			require.Equal(t, "limit", claim("r2").Outcome)
		}

		// A refused pop is uncounted: the user may pop again with another request.
		second := claim("r3")
		if limit == 1 {
			require.Equal(t, "limit", second.Outcome)
			// The guard set from Postgres's count: at the limit, then not.
			require.NoError(t, s.SetUserCount(ctx, args("r3"), 1))
			require.Equal(t, "limit", claim("r3").Outcome)
			require.NoError(t, s.SetUserCount(ctx, args("r3"), 0))
			second = claim("r3")
		}
		require.Equal(t, "popped", second.Outcome)
		require.NoError(t, s.Release(ctx, args("r3"), second.Entry, "", true))
		third := claim("r4")
		require.Equal(t, "popped", third.Outcome)
		if limit == 1 {
			require.Equal(t, "limit", claim("r5").Outcome)
		}

		// A late release of r1's first pop cannot undo the record it no longer owns.
		require.NoError(t, s.Release(ctx, args("r1"), popped.Entry, "", false))
		if limit == 1 {
			require.Equal(t, "limit", claim("r1").Outcome, "the user's one claim is r4's now")
			require.NoError(t, s.Release(ctx, args("r3"), second.Entry, "", true))
			require.Equal(t, "replay", claim("r4").Outcome, "a late release of r3 leaves r4's claim")
		} else {
			require.Equal(t, real, claim("r1").Entry)
		}
	})
}

// The ledger is read by pop time, batch markers are kept and dropped, and
// the refill lock is held by one token at a time.
func TestLedgerBatchesAndLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	require.NoError(t, s.Push(ctx, "p1", 11, entries(2)))
	require.NoError(t, s.Push(ctx, "p1", 12, nil))
	old := claimAt(t, s, "a", "a", time.Now().Add(-time.Hour))
	claimAt(t, s, "b", "b", time.Now())
	stale, err := s.InFlightBefore(ctx, "p1", time.Now().Add(-time.Minute))
	require.NoError(t, err)
	require.Equal(t, []string{old.Entry}, stale)

	batches, err := s.Batches(ctx, "p1")
	require.NoError(t, err)
	require.ElementsMatch(t, []int64{11, 12}, batches)
	require.NoError(t, s.DropBatches(ctx, "p1", []int64{11}))
	batches, err = s.Batches(ctx, "p1")
	require.NoError(t, err)
	require.Equal(t, []int64{12}, batches)

	ok, err := s.TryLock(ctx, "p1", "t1", time.Minute)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = s.TryLock(ctx, "p1", "t2", time.Minute)
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, s.Unlock(ctx, "p1", "t2"), "another token's unlock does nothing")
	listed, err := s.StagedLen(ctx, "p1")
	require.NoError(t, err)
	held, staged, err := s.Refilling(ctx, "p1")
	require.NoError(t, err)
	require.True(t, held)
	require.Equal(t, listed, staged)
	require.NoError(t, s.Unlock(ctx, "p1", "t1"))
	held, _, err = s.Refilling(ctx, "p1")
	require.NoError(t, err)
	require.False(t, held)
}

// An entry names its code by id alone ("42:"); entries staged by earlier
// versions also carried the code ("42:<code>", which may hold colons) and
// read the same. The code never goes to Redis.
func TestEntryCodeID(t *testing.T) {
	t.Parallel()
	require.Equal(t, "42:", stock.FormatEntry(42))
	for _, entry := range []string{stock.FormatEntry(42), "42:A:B:C"} {
		id, err := stock.EntryCodeID(entry)
		require.NoError(t, err, entry)
		require.EqualValues(t, 42, id, entry)
	}
	for _, bad := range []string{"", "x:CODE", "0:CODE", "-3:CODE", "42"} {
		_, err := stock.EntryCodeID(bad)
		require.Error(t, err, bad)
	}
}

// Shard 0 is the pool id itself (a pool of one shard keeps its keys); other
// shards are names no pool id can take. Home shards are stable and spread
// users about evenly.
func TestShards(t *testing.T) {
	t.Parallel()
	require.Equal(t, "p1", stock.Shard("p1", 0))
	require.Equal(t, "p1#2", stock.Shard("p1", 2))
	require.Equal(t, []string{"p1"}, stock.Shards("p1", 1))
	require.Equal(t, []string{"p1", "p1#1", "p1#2"}, stock.Shards("p1", 3))
	k := stock.NewKeys("ns")
	require.Equal(t, "ns:{p1#2}:staged", k.Staged(stock.Shard("p1", 2)))

	require.Zero(t, stock.HomeShard("anyone", 1))
	counts := make([]int, 5)
	for i := range 10_000 {
		u := fmt.Sprint("user-", i)
		h := stock.HomeShard(u, 5)
		require.Equal(t, h, stock.HomeShard(u, 5))
		counts[h]++
	}
	for s, n := range counts {
		require.InDelta(t, 2000, n, 200, "shard %d", s)
	}
}

// Levels and CodeIDs sum over the shards given; ShardLevels reads each.
func TestShardLevels(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	require.NoError(t, s.Push(ctx, stock.Shard("p1", 0), 1, entries(3)))
	require.NoError(t, s.Push(ctx, stock.Shard("p1", 2), 2, []string{stock.FormatEntry(10), stock.FormatEntry(11)}))
	levels, err := s.ShardLevels(ctx, stock.Shards("p1", 3)...)
	require.NoError(t, err)
	require.Equal(t, []int64{3, 0, 2}, levels)
	staged, inFlight, err := s.Levels(ctx, stock.Shards("p1", 3)...)
	require.NoError(t, err)
	require.EqualValues(t, 5, staged)
	require.Zero(t, inFlight)
	ids, err := s.CodeIDs(ctx, stock.Shards("p1", 3)...)
	require.NoError(t, err)
	require.ElementsMatch(t, []int64{1, 2, 3, 10, 11}, ids)
	ids, err = s.CodeIDs(ctx, stock.Shard("p1", 1))
	require.NoError(t, err)
	require.NotNil(t, ids, "an empty set, never nil (it becomes an SQL array)")
	require.Empty(t, ids)
	require.NoError(t, s.DropShard(ctx, stock.Shard("p1", 2)))
	levels, err = s.ShardLevels(ctx, stock.Shards("p1", 3)...)
	require.NoError(t, err)
	require.Equal(t, []int64{3, 0, 0}, levels)
}

// Calls queued together run as one script per pool shard, each request as if
// alone: under 600 concurrent calls on two pools, every user pops once and
// then hits its limit, a copy of a request gets the same entry, and no entry
// is popped twice.
func TestPipeBatchesRequestsPerShard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	const users = 100
	for _, pool := range []string{"p1", "p2"} {
		require.NoError(t, s.Push(ctx, pool, 1, entries(users)))
	}
	p := s.NewPipe(5*time.Second, nil)
	p.Start()
	defer p.Stop()

	type call struct{ pool, request, user string }
	var calls []call
	for _, pool := range []string{"p1", "p2"} {
		for u := range users {
			user := fmt.Sprint("u", u)
			calls = append(calls,
				call{pool, "a-" + user, user}, call{pool, "a-" + user, user}, // a request and its copy
				call{pool, "b-" + user, user}, // the same user's second request: its limit is 1
			)
		}
	}
	answers := make([]stock.Answer, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Go(func() {
			ans, err := p.Claim(ctx, stock.ClaimArgs{PoolID: c.pool, RequestID: c.request, UserID: c.user, Limit: 1, TTL: time.Hour})
			if err != nil {
				t.Errorf("claim %+v: %v", c, err)
			}
			answers[i] = ans
		})
	}
	wg.Wait()

	popped := map[string]bool{}
	for i := 0; i < len(calls); i += 3 {
		a, copyOf, b := answers[i], answers[i+1], answers[i+2]
		first, second := a, copyOf
		if copyOf.Outcome == "popped" {
			first, second = copyOf, a
		}
		if first.Outcome == "popped" {
			// The request popped, its copy replayed the same entry.
			require.Equal(t, "replay", second.Outcome, "%+v", calls[i])
			require.Equal(t, first.Entry, second.Entry)
			require.False(t, popped[calls[i].pool+first.Entry], "popped twice")
			popped[calls[i].pool+first.Entry] = true
			require.Equal(t, "limit", b.Outcome, "%+v", calls[i+2])
		} else {
			// The second request came first and took the user's one claim.
			require.Equal(t, "popped", b.Outcome, "%+v", calls[i+2])
			require.Equal(t, "limit", a.Outcome)
			require.Equal(t, "limit", copyOf.Outcome)
		}
	}
}

// Clear removes committed entries from the ledger with the pipe's next
// pipeline, or alone when no claim comes; Stop sends what is still pending.
func TestPipeClearsLedger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	require.NoError(t, s.Push(ctx, "p1", 1, entries(10)))
	p := s.NewPipe(time.Second, nil)
	p.Start()
	var popped []string
	for i := range 6 {
		ans, err := p.Claim(ctx, stock.ClaimArgs{PoolID: "p1", RequestID: fmt.Sprint("r", i), UserID: fmt.Sprint("u", i), Limit: 1, TTL: time.Hour})
		require.NoError(t, err)
		popped = append(popped, ans.Entry)
	}
	ledger := func() int64 {
		n, err := s.InFlightLen(ctx, "p1")
		require.NoError(t, err)
		return n
	}
	require.EqualValues(t, 6, ledger())

	p.Clear(map[string][]string{"p1": popped[:2]}) // alone: no claim follows
	require.Eventually(t, func() bool { return ledger() == 4 }, 5*time.Second, 5*time.Millisecond)

	p.Clear(map[string][]string{"p1": popped[2:4]})
	_, err := p.Claim(ctx, stock.ClaimArgs{PoolID: "p1", RequestID: "r9", UserID: "u9", Limit: 1, TTL: time.Hour})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return ledger() == 3 }, 5*time.Second, 5*time.Millisecond)

	p.Clear(map[string][]string{"p1": popped[4:]})
	p.Stop()
	require.EqualValues(t, 1, ledger(), "Stop sends the pending clears")
}

// A ledger clear that Redis refuses is logged (the reconciler clears the
// entries later); it does not stop the pipe.
func TestPipeLogsFailedClear(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, ns := testenv.Redis(t)
	keys := stock.NewKeys(ns)
	s := stock.New(rdb, keys)
	require.NoError(t, rdb.Set(ctx, keys.InFlight("p1"), "not a sorted set", 0).Err())
	var buf bytes.Buffer
	p := s.NewPipe(time.Second, slog.New(slog.NewTextHandler(&buf, nil)))
	p.Start()
	p.Clear(map[string][]string{"p1": {"1:CODE"}})
	p.Stop()
	require.Contains(t, buf.String(), "clearing the in-flight ledger failed")
}
