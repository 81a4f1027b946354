package claim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
)

// flushNamespace deletes every Redis key of the test's namespace: what a
// flush, a restart without persistence or a failover does to a pool.
func (e *env) flushNamespace() {
	e.t.Helper()
	ctx := context.Background()
	iter := e.rdb.Scan(ctx, 0, strings.TrimSuffix(e.keys.Staged("x"), "{x}:staged")+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	require.NoError(e.t, iter.Err())
	if len(keys) > 0 {
		require.NoError(e.t, e.rdb.Del(ctx, keys...).Err())
	}
}

// forget makes Redis forget a user's claims in a pool (or shard): its
// request's replay record, the user's count and, in a pool of limit 1, the
// user's one claim, as when they expire or a failover loses them.
func (e *env) forget(poolID, requestID, userID string) {
	e.t.Helper()
	k := e.keys
	require.NoError(e.t, e.rdb.Del(context.Background(), k.Replay(poolID, requestID), k.UserClaims(poolID, userID),
		k.OneClaim(poolID, userID)).Err())
}

// A request id belongs to the user who first used it: another user sending
// it is refused on every path, and learns nothing of the first claim.
func TestRequestIDBelongsToOneUser(t *testing.T) {
	t.Parallel()
	paths := []struct {
		name   string
		before func(e *env) // between alice's claim and eve's
		pgOnly bool
		limit  int // the pool's per-user limit, 5 if 0
	}{
		{name: "redis replay record"},
		// Redis keeps each user's one claim, not the request's record: eve
		// pops a code, which Postgres refuses and takes back.
		{name: "pool of limit 1", limit: 1},
		{name: "redis lost its data", before: func(e *env) {
			e.flushNamespace()
			p, err := e.store.GetPool(context.Background(), "p1")
			require.NoError(e.t, err)
			_, err = e.reconciler.Reconcile(context.Background(), p, 0)
			require.NoError(e.t, err)
			e.stageAll(p)
		}},
		{name: "replay record expired", before: func(e *env) {
			require.NoError(e.t, e.rdb.Del(context.Background(), e.keys.Replay("p1", "order-77")).Err())
		}},
		{name: "fallback only", pgOnly: true},
	}
	for _, tc := range paths {
		t.Run(tc.name, func(t *testing.T) {
			ctx, e := start(t)
			if tc.pgOnly {
				e.svc.pgOnly, e.stager.pgOnly = true, true
			}
			p := e.fillStaged("p1", 20, pool.Pool{RefillBatchSize: 10, PerUserLimit: cmp.Or(tc.limit, 5)})
			alice, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "alice", RequestID: "order-77"})
			require.NoError(t, err)
			if tc.before != nil {
				tc.before(e)
			}
			for range 2 { // and again: the refusal is stable
				res, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "eve", RequestID: "order-77"})
				require.ErrorIs(t, err, ErrRequestReused)
				require.Zero(t, res.Claim.Code)
			}
			_, err = NewReads(e.db.Pool).GetClaim(ctx, "p1", "order-77", "eve")
			require.ErrorIs(t, err, ErrRequestReused)
			got, err := NewReads(e.db.Pool).GetClaim(ctx, "p1", "order-77", "alice")
			require.NoError(t, err)
			require.Equal(t, alice.Claim.Code, got.Code)

			// Alice's retry still gets her code; eve's own ids work.
			again, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "alice", RequestID: "order-77"})
			require.NoError(t, err)
			require.True(t, again.Replayed)
			require.Equal(t, alice.Claim.Code, again.Claim.Code)
			eve, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "eve", RequestID: "order-78"})
			require.NoError(t, err)
			require.NotEqual(t, alice.Claim.Code, eve.Claim.Code)
			_, err = e.reconciler.Reconcile(ctx, p, 0)
			require.NoError(t, err)
			e.audit("p1")
		})
	}
}

// A refused request id is its user's too, while the refusal is kept.
func TestRefusedRequestIDBelongsToItsUser(t *testing.T) {
	ctx, e := start(t)
	e.fillStaged("p1", 10, pool.Pool{RefillBatchSize: 10})
	_, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "alice", RequestID: "a1"})
	require.NoError(t, err)
	_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "alice", RequestID: "a2"})
	require.ErrorIs(t, err, ErrUserLimit)
	_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "eve", RequestID: "a2"})
	require.ErrorIs(t, err, ErrRequestReused)
	e.flushNamespace()
	_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "eve", RequestID: "a2"})
	require.ErrorIs(t, err, ErrRequestReused)
}

// Prize claims live in an id space no caller can reach: a caller's
// "prize:1" is an ordinary request id, and the reserved form is refused.
func TestPrizeRequestIDsUnreachable(t *testing.T) {
	ctx, e := start(t)
	e.fillStaged("p1", 10, pool.Pool{RefillBatchSize: 10})
	var prizeID int64 // the first prize of the schema: 1
	require.NoError(t, e.db.Pool.QueryRow(ctx,
		`INSERT INTO prizes (pool_id, user_id, external_id) VALUES ('p1', 'winner', 'w1') RETURNING id`).Scan(&prizeID))
	require.EqualValues(t, 1, prizeID)
	mallory, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "mallory", RequestID: "prize:1"})
	require.NoError(t, err)
	winner, err := e.svc.ClaimPrize(ctx, "p1", "winner", 1)
	require.NoError(t, err)
	require.NotEqual(t, mallory.Claim.Code, winner.Claim.Code)
	require.False(t, winner.Replayed)
	require.EqualValues(t, 1, winner.Claim.PrizeID)
	require.Empty(t, winner.Claim.RequestID)

	// No caller's id names the prize's claim.
	for _, rid := range []string{PrizeRequestID(1), "\x01prize:1", "prize:1\x00"} {
		_, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "winner", RequestID: rid})
		var fe *FieldError
		require.ErrorAs(t, err, &fe, "request id %q", rid)
		_, err = NewReads(e.db.Pool).GetClaim(ctx, "p1", rid, "")
		require.ErrorAs(t, err, &fe, "request id %q", rid)
	}
	got, err := NewReads(e.db.Pool).GetClaim(ctx, "p1", "prize:1", "")
	require.NoError(t, err)
	require.Equal(t, "mallory", got.UserID)
	require.Equal(t, mallory.Claim.Code, got.Code)

	// The prize's claim replays by prize id, and lists as the prize's.
	again, err := e.svc.ClaimPrize(ctx, "p1", "winner", 1)
	require.NoError(t, err)
	require.True(t, again.Replayed)
	require.Equal(t, winner.Claim.Code, again.Claim.Code)
	list, err := NewReads(e.db.Pool).ListUserClaims(ctx, "p1", "winner")
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.EqualValues(t, 1, list[0].PrizeID)
	require.Empty(t, list[0].RequestID)

	// The schema keeps the reserved form for prizes.
	_, err = e.db.Pool.Exec(ctx, `UPDATE claims SET request_id = E'\x01order' WHERE user_id = 'mallory'`)
	require.ErrorContains(t, err, "claims_request_space")
	e.audit("p1")
}

// The case 3: with a limit of 2, a retry of R0 whose replay record
// Redis forgot (expired, flushed) gets R0's code, not USER_LIMIT_REACHED.
func TestRetryAfterRedisForgotGetsItsCode(t *testing.T) {
	t.Parallel()
	for _, forget := range []string{"replay record expired", "namespace flushed"} {
		t.Run(forget, func(t *testing.T) {
			ctx, e := start(t)
			p := e.fillStaged("p1", 20, pool.Pool{RefillBatchSize: 20, PerUserLimit: 2})
			r0, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "u", RequestID: "R0"})
			require.NoError(t, err)
			r1, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "u", RequestID: "R1"})
			require.NoError(t, err)
			if forget == "namespace flushed" {
				e.flushNamespace()
				// The guard comes back (as it would after more claims) while
				// R0's record does not.
				require.NoError(t, e.rdb.Set(ctx, e.keys.UserClaims("p1", "u"), 2, time.Hour).Err())
				_, err := e.reconciler.Reconcile(ctx, p, 0)
				require.NoError(t, err)
				e.stageAll(p)
			} else {
				require.NoError(t, e.rdb.Del(ctx, e.keys.Replay("p1", "R0")).Err())
			}
			for _, r := range []struct {
				id   string
				want Result
			}{{"R0", r0}, {"R1", r1}, {"R0", r0}} {
				got, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "u", RequestID: r.id})
				require.NoError(t, err, r.id)
				require.True(t, got.Replayed)
				require.Equal(t, r.want.Claim.Code, got.Claim.Code, r.id)
			}
			_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "u", RequestID: "R2"})
			require.ErrorIs(t, err, ErrUserLimit)
			e.audit("p1")
		})
	}
}

// A pool's limit changed between 1 and more swaps what Redis keeps (the
// user's one claim, or the request's record and the user's count): after
// each change Redis knows nothing of the claims before it, and Postgres
// answers as when Redis forgets. Retries get their codes, the new limit
// holds, and no code is lost.
func TestLimitChangedBetweenOneAndMore(t *testing.T) {
	ctx, e := start(t)
	e.fillStaged("p1", 20, pool.Pool{RefillBatchSize: 20, PerUserLimit: 1})
	setLimit := func(n int) {
		t.Helper()
		_, err := e.store.UpdatePool(ctx, "p1", func(p *pool.Pool) error { p.PerUserLimit = n; return nil })
		require.NoError(t, err)
		time.Sleep(60 * time.Millisecond) // the service's pool cache: 20 ms
	}
	claim := func(request string) (Result, error) {
		return e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "u", RequestID: request})
	}
	r1, err := claim("r1")
	require.NoError(t, err)
	require.EqualValues(t, 1, e.rdb.Exists(ctx, e.keys.OneClaim("p1", "u")).Val())

	setLimit(2)
	again, err := claim("r1")
	require.NoError(t, err)
	require.True(t, again.Replayed)
	require.Equal(t, r1.Claim.Code, again.Claim.Code)
	r2, err := claim("r2")
	require.NoError(t, err)
	require.False(t, r2.Replayed)
	_, err = claim("r3")
	require.ErrorIs(t, err, ErrUserLimit)

	setLimit(1)
	for _, want := range []Result{r1, r2, r1} {
		got, err := claim(want.Claim.RequestID)
		require.NoError(t, err, want.Claim.RequestID)
		require.True(t, got.Replayed)
		require.Equal(t, want.Claim.Code, got.Claim.Code, want.Claim.RequestID)
	}
	_, err = claim("r4")
	require.ErrorIs(t, err, ErrUserLimit)
	// u keeps the two claims made under a limit of 2: the audit (which
	// fails the test on a user over the limit) counts against the highest
	// limit the pool has had, not the limit of 1 now.
	st := e.audit("p1")
	require.EqualValues(t, 2, st.Claimed)
}

// A copy of a request that popped a code before Redis lost its data, and
// commits after another copy was refused, answers the same refusal, and so
// do later retries, until the pool is restocked.
func TestRefusalBindsCopiesStartedBefore(t *testing.T) {
	ctx, e := start(t)
	e.fillStaged("p1", 1, pool.Pool{RefillBatchSize: 1})
	req := Request{PoolID: "p1", UserID: "u", RequestID: "R", started: time.Now()}
	// Copy 1 pops the only code and is slow to commit.
	ans, err := stock.New(e.rdb, e.keys).ClaimOnce(ctx,
		stock.ClaimArgs{PoolID: "p1", RequestID: "R", UserID: "u", Limit: 1, TTL: time.Hour}, time.Now())
	require.NoError(t, err)
	require.Equal(t, string(outPopped), ans.Outcome)
	codeID, err := stock.EntryCodeID(ans.Entry)
	require.NoError(t, err)
	// Redis forgets the request (its replay record expired, the guard
	// too) while the popped code is still in flight: copy 2 finds nothing
	// to pop, and every staged code is accounted for (in the ledger), so
	// the pool is sold out.
	e.forget("p1", "R", "u")
	_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "u", RequestID: "R"})
	require.ErrorIs(t, err, ErrPoolExhausted)
	// Copy 1 commits now: the same refusal, and its code goes back.
	res := e.svc.redis.commit.submit(ctx, &commitItem{req: req, codeID: codeID, entry: ans.Entry, popped: true})
	require.NoError(t, res.err)
	require.Equal(t, outExhausted, res.outcome)
	var state string
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT state::text FROM codes WHERE id = $1`, codeID).Scan(&state))
	require.Equal(t, "available", state)
	// A later retry gets the same answer, though the code is back...
	_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "u", RequestID: "R"})
	require.ErrorIs(t, err, ErrPoolExhausted)
	// ...until the pool is restocked: then it is decided afresh.
	_, err = e.store.Import(ctx, pool.ImportOptions{PoolID: "p1", Format: pool.FormatLines}, strings.NewReader("RESTOCK-0001\n"))
	require.NoError(t, err)
	got, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "u", RequestID: "R"})
	require.NoError(t, err)
	require.False(t, got.Replayed)
	e.audit("p1")
}

// The storm: copies of each request id race on two services that
// share Postgres and Redis, Redis is flushed midway, the pool runs out and
// users hit their limit. Every copy of a request id gets the same answer:
// the same code, or the same refusal.
func TestDuplicateStormTwoServicesRedisFlushed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.StartRedisServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	e := newEnv(t, envOpts{redis: rdb})
	// The second service commits slowly, so its copies sit popped and
	// uncommitted when Redis is flushed.
	second := testenv.Must(NewService(e.db.Pool, rdb, e.keys, Config{PoolCacheTTL: 20 * time.Millisecond,
		BreakerOpenFor: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		RedisAllocator: RedisConfig{Commit: CommitterConfig{MaxWait: 30 * time.Millisecond}}}))
	require.NoError(t, second.Start(context.Background()))
	t.Cleanup(second.Stop)
	services := []*Service{e.svc, second}

	const requests, copies, users, codes = 600, 4, 200, 300
	p := e.fillStaged("storm", codes, pool.Pool{RefillBatchSize: 100, PerUserLimit: 2})

	type answer struct {
		code int64
		err  string
	}
	var mu sync.Mutex
	answers := map[string][]answer{}
	var unanswered atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 48)
	send := func(i, c int) {
		req := Request{PoolID: "storm", UserID: fmt.Sprint("user-", i%users), RequestID: fmt.Sprint("req-", i)}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			// Odd copies go to the slow service.
			res, err := services[c%2].Claim(cctx, req)
			a := answer{code: res.Claim.CodeID}
			switch {
			case err == nil:
			case errors.Is(err, ErrPoolExhausted), errors.Is(err, ErrUserLimit):
				a = answer{err: err.Error()}
			case errors.Is(err, ErrStagedUnreachable):
				// Not an answer: nothing was decided (Redis lost staged
				// codes, reconcile has not returned them yet). A caller
				// retries; other copies' answers must still agree.
				unanswered.Add(1)
				return
			default:
				t.Errorf("%s: unexpected error %v", req.RequestID, err)
			}
			mu.Lock()
			answers[req.RequestID] = append(answers[req.RequestID], a)
			mu.Unlock()
		}()
	}
	const straddle = 12 // requests whose copies fall on both sides of a flush
	for i := 0; i < requests; {
		switch i {
		case requests / 4, requests / 2:
			// One copy of each of the next requests pops on the slow
			// service; Redis loses everything while they wait for their
			// commit; the other copies come after.
			for j := i; j < i+straddle; j++ {
				send(j, 1)
			}
			// Once each has popped (its replay record is written), and
			// while its batch still waits to fill (30 ms), Redis loses
			// everything.
			first := i
			require.Eventually(t, func() bool {
				for j := first; j < first+straddle; j++ {
					if rdb.Exists(ctx, e.keys.Replay("storm", fmt.Sprint("req-", j))).Val() == 0 {
						return false
					}
				}
				return true
			}, 10*time.Second, time.Millisecond)
			require.NoError(t, rdb.FlushAll(ctx).Err())
			for j := i; j < i+straddle; j++ {
				for c := 2; c < copies+1; c++ {
					send(j, c)
				}
			}
			i += straddle
			continue
		case requests/4 + 50, requests/2 + 50, 3 * requests / 4:
			_, err := e.reconciler.Reconcile(ctx, p, 0)
			require.NoError(t, err)
			_, err = e.stager.Refill(ctx, p)
			require.NoError(t, err)
		}
		for c := range copies {
			send(i, c)
		}
		i++
	}
	wg.Wait()

	owner := map[int64]string{}
	var claimed, refused int
	for rid, as := range answers {
		for _, a := range as[1:] {
			require.Equal(t, as[0], a, "copies of %s answered differently: %v", rid, as)
		}
		if as[0].err != "" {
			refused++
			continue
		}
		claimed++
		if prev, ok := owner[as[0].code]; ok {
			t.Fatalf("code %d answered to %s and %s", as[0].code, prev, rid)
		}
		owner[as[0].code] = rid
	}
	require.Positive(t, refused, "the storm should exhaust the pool or hit limits")
	_, err := e.reconciler.Reconcile(ctx, p, 0)
	require.NoError(t, err)
	st := e.audit("storm")
	require.EqualValues(t, claimed, st.Claimed, "every claim answered is committed, and only those")
	t.Logf("claimed %d, refused %d, copies not answered (Unavailable) %d, stats %+v", claimed, refused, unanswered.Load(), st)
}

// A sold-out pool with nothing staged has no copy of any request about to
// commit: its refusals are answered without writing anything.
func TestSoldOutPoolRefusesWithoutWriting(t *testing.T) {
	ctx, e := start(t)
	e.svc.pgOnly = true
	e.fill("p1", 1, pool.Pool{})
	_, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "u0", RequestID: "r0"})
	require.NoError(t, err)
	for i := range 5 {
		_, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: fmt.Sprint("u", i+1), RequestID: fmt.Sprint("r", i+1)})
		require.ErrorIs(t, err, ErrPoolExhausted)
	}
	var n int
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM refusals`).Scan(&n))
	require.Zero(t, n)
	e.audit("p1")
}

// A copy of a request that got its code from the request's Redis replay
// record (another copy popped it) and is refused does not make the code
// available: the popping copy was refused first and gave the code back, a
// refill staged it again, and its new entry sits in the list. Making it
// available would let the next refill stage it a second time: listed
// twice (issue 12's CI saw "1 entries staged twice"). It goes back to the
// batch it is staged in; the audit stays clean.
func TestReplayedCodeRefusedStaysInItsBatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		hold time.Duration // a hold refused by holds_per_user, or a claim refused by the limit
	}{{"claim", 0}, {"hold", time.Minute}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, e := start(t)
			e.manualStaging()
			p := e.fillStaged("p1", 4, pool.Pool{RefillBatchSize: 4, PerUserLimit: 2, HoldsPerUser: 1})
			first := Request{PoolID: "p1", UserID: "u", RequestID: "R0"}
			var err error
			if tc.hold > 0 {
				_, err = e.svc.Reserve(ctx, ReserveRequest{PoolID: "p1", UserID: "u", RequestID: "R0", HoldFor: tc.hold})
			} else {
				p, err = e.store.UpdatePool(ctx, "p1", func(p *pool.Pool) error { p.PerUserLimit = 1; return nil })
				require.NoError(t, err)
				_, err = e.svc.Claim(ctx, first)
			}
			require.NoError(t, err)

			// Copy 1 of R1 pops a code (past Redis's guard) and is refused.
			ans, err := stock.New(e.rdb, e.keys).ClaimOnce(ctx,
				stock.ClaimArgs{PoolID: "p1", RequestID: "R1", UserID: "u", Limit: 10, TTL: time.Hour}, time.Now())
			require.NoError(t, err)
			require.Equal(t, string(outPopped), ans.Outcome)
			codeID, err := stock.EntryCodeID(ans.Entry)
			require.NoError(t, err)
			req := Request{PoolID: "p1", UserID: "u", RequestID: "R1", started: time.Now(), reserve: tc.hold > 0, hold: tc.hold}
			res := e.svc.redis.commit.submit(ctx, &commitItem{req: req, codeID: codeID, entry: ans.Entry, popped: true})
			require.NoError(t, res.err)
			require.NotEqual(t, outClaimed, res.outcome)
			var state string
			require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT state::text FROM codes WHERE id = $1`, codeID).Scan(&state))
			require.Equal(t, "available", state, "the popping copy gives its code back")

			// A refill stages it again; then copy 2, replayed the same code
			// by Redis, is refused too.
			e.stageAll(p)
			require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT state::text FROM codes WHERE id = $1`, codeID).Scan(&state))
			require.Equal(t, "staged", state)
			req.started = time.Now()
			res = e.svc.redis.commit.submit(ctx, &commitItem{req: req, codeID: codeID, entry: ans.Entry, popped: false})
			require.NoError(t, res.err)
			require.NotEqual(t, outClaimed, res.outcome)
			require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT state::text FROM codes WHERE id = $1`, codeID).Scan(&state))
			require.Equal(t, "staged", state, "a replayed code is not the copy's to give back")

			e.stageAll(p)
			e.audit("p1") // no code listed twice
		})
	}
}
