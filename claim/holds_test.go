package claim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/pgerr"
	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
)

// holdPath is one way a reservation is served: codes staged in Redis, or
// none staged (the fallback reads Postgres).
type holdPath struct {
	name string
	path Path
	// fill creates pool id with n codes, prepared for this path.
	fill func(e *env, id string, n int, settings pool.Pool) pool.Pool
}

var holdPaths = []holdPath{
	{name: "redis", path: PathRedis, fill: func(e *env, id string, n int, s pool.Pool) pool.Pool {
		e.manualStaging()
		return e.fillStaged(id, n, s)
	}},
	{name: "fallback", path: PathFallback, fill: func(e *env, id string, n int, s pool.Pool) pool.Pool {
		e.manualStaging()
		return e.fill(id, n, s)
	}},
}

// forHoldPaths runs fn as a parallel subtest per path, each on its own env.
func forHoldPaths(t *testing.T, fn func(t *testing.T, ctx context.Context, e *env, hp holdPath)) {
	t.Parallel()
	for _, hp := range holdPaths {
		t.Run(hp.name, func(t *testing.T) {
			t.Parallel()
			fn(t, context.Background(), newEnv(t), hp)
		})
	}
}

func reserveReq(user, request string, hold time.Duration) ReserveRequest {
	return ReserveRequest{PoolID: "p1", UserID: user, RequestID: request, HoldFor: hold}
}

func TestHoldConfirm(t *testing.T) {
	forHoldPaths(t, func(t *testing.T, ctx context.Context, e *env, hp holdPath) {
		hp.fill(e, "p1", 5, pool.Pool{})
		before := time.Now()
		r, err := e.svc.Reserve(ctx, reserveReq("alice", "checkout-1", 0))
		require.NoError(t, err)
		require.Equal(t, ReservationHeld, r.State)
		require.Equal(t, hp.path, r.Path)
		require.False(t, r.Replayed)
		require.Equal(t, "alice", r.UserID)
		// The pool's default hold: 10 minutes.
		require.WithinDuration(t, before.Add(pool.DefaultHoldDefault), r.HeldUntil, 5*time.Second)
		st := e.audit("p1")
		require.EqualValues(t, 1, st.Held)
		require.Zero(t, st.Claimed)

		// A retry answers the same hold.
		again, err := e.svc.Reserve(ctx, reserveReq("alice", "checkout-1", 0))
		require.NoError(t, err)
		require.True(t, again.Replayed)
		require.Equal(t, ReservationHeld, again.State)
		require.True(t, r.HeldUntil.Equal(again.HeldUntil))

		res, err := e.svc.Confirm(ctx, "p1", "checkout-1", "alice")
		require.NoError(t, err)
		require.False(t, res.Replayed)
		require.NotEmpty(t, res.Claim.Code.Reveal())
		require.Equal(t, PathConfirm, res.Path)
		require.False(t, res.Claim.ClaimedAt.Before(r.ReservedAt))
		st = e.audit("p1")
		require.EqualValues(t, 1, st.Claimed)
		require.Zero(t, st.Held)

		// Confirm again, with or without the user: the same code.
		for _, user := range []string{"alice", ""} {
			replay, err := e.svc.Confirm(ctx, "p1", "checkout-1", user)
			require.NoError(t, err)
			require.True(t, replay.Replayed)
			require.Equal(t, res.Claim.Code, replay.Claim.Code)
		}
		// It is a claim now: every read shows it, a ClaimCode retry
		// replays it, a Reserve retry answers it confirmed.
		got, err := NewReads(e.db.Pool).GetClaim(ctx, "p1", "checkout-1", "alice")
		require.NoError(t, err)
		require.Equal(t, res.Claim.Code, got.Code)
		cres, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "alice", RequestID: "checkout-1"})
		require.NoError(t, err)
		require.True(t, cres.Replayed)
		require.Equal(t, res.Claim.Code, cres.Claim.Code)
		rr, err := e.svc.Reserve(ctx, reserveReq("alice", "checkout-1", 0))
		require.NoError(t, err)
		require.Equal(t, ReservationConfirmed, rr.State)
		require.True(t, rr.Replayed)
		// Cancelling a claim is refused.
		_, err = e.svc.Cancel(ctx, "p1", "checkout-1", "alice")
		require.ErrorIs(t, err, ErrReservationConfirmed)
	})
}

func TestHoldCancel(t *testing.T) {
	forHoldPaths(t, func(t *testing.T, ctx context.Context, e *env, hp holdPath) {
		hp.fill(e, "p1", 1, pool.Pool{PerUserLimit: 2})
		_, err := e.svc.Reserve(ctx, reserveReq("alice", "cart", time.Minute))
		require.NoError(t, err)
		// The only code is held: nobody else gets it.
		_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "bob", RequestID: "b1"})
		require.ErrorIs(t, err, ErrPoolExhausted)

		c, err := e.svc.Cancel(ctx, "p1", "cart", "alice")
		require.NoError(t, err)
		require.Equal(t, ReservationCancelled, c.State)
		st := e.audit("p1")
		require.Zero(t, st.Held)
		require.EqualValues(t, 1, st.Available)

		// Cancel again: the same answer. Everything else about the request
		// says it was cancelled.
		c, err = e.svc.Cancel(ctx, "p1", "cart", "")
		require.NoError(t, err)
		require.Equal(t, ReservationCancelled, c.State)
		_, err = e.svc.Confirm(ctx, "p1", "cart", "alice")
		require.ErrorIs(t, err, ErrReservationCancelled)
		_, err = e.svc.Reserve(ctx, reserveReq("alice", "cart", time.Minute))
		require.ErrorIs(t, err, ErrReservationCancelled)
		_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "alice", RequestID: "cart"})
		require.ErrorIs(t, err, ErrReservationCancelled)
		// Another user learns nothing of it.
		_, err = e.svc.Cancel(ctx, "p1", "cart", "mallory")
		require.ErrorIs(t, err, ErrRequestReused)

		// The code is given again, at once (it was never shown).
		e.stageAll(pool.Pool{ID: "p1", RefillBatchSize: 10})
		res, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "bob", RequestID: "b2"})
		require.NoError(t, err)
		require.Equal(t, "p1-CODE-000000", res.Claim.Code.Reveal())
		e.audit("p1")
	})
}

func TestHoldExpiry(t *testing.T) {
	forHoldPaths(t, func(t *testing.T, ctx context.Context, e *env, hp holdPath) {
		hp.fill(e, "p1", 1, pool.Pool{})
		r, err := e.svc.Reserve(ctx, reserveReq("alice", "cart", time.Second))
		require.NoError(t, err)
		_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "bob", RequestID: "b1"})
		require.ErrorIs(t, err, ErrPoolExhausted)

		time.Sleep(time.Until(r.HeldUntil) + 50*time.Millisecond)
		ended, err := ExpireHolds(ctx, e.db.Pool, "")
		require.NoError(t, err)
		require.Equal(t, map[string]int64{"p1": 1}, ended)
		st := e.audit("p1")
		require.EqualValues(t, 1, st.Available)

		// Another user gets the code; the late confirm never gets any.
		e.stageAll(pool.Pool{ID: "p1", RefillBatchSize: 10})
		res, err := e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "bob", RequestID: "b2"})
		require.NoError(t, err)
		require.Equal(t, "p1-CODE-000000", res.Claim.Code.Reveal())
		_, err = e.svc.Confirm(ctx, "p1", "cart", "alice")
		require.ErrorIs(t, err, ErrReservationExpired)
		c, err := e.svc.Cancel(ctx, "p1", "cart", "alice")
		require.NoError(t, err)
		require.Equal(t, ReservationExpired, c.State)
		e.audit("p1")
	})
}

// A confirm after the hold ran out is refused even before the expiry job
// ends it, and the confirm itself ends it.
func TestHoldConfirmAfterExpiry(t *testing.T) {
	forHoldPaths(t, func(t *testing.T, ctx context.Context, e *env, hp holdPath) {
		hp.fill(e, "p1", 2, pool.Pool{})
		r, err := e.svc.Reserve(ctx, reserveReq("alice", "cart", time.Second))
		require.NoError(t, err)
		time.Sleep(time.Until(r.HeldUntil) + 50*time.Millisecond)
		_, err = e.svc.Confirm(ctx, "p1", "cart", "alice")
		require.ErrorIs(t, err, ErrReservationExpired)
		_, err = e.svc.Confirm(ctx, "p1", "cart", "alice")
		require.ErrorIs(t, err, ErrReservationExpired)
		_, err = e.svc.Reserve(ctx, reserveReq("alice", "cart", time.Second))
		require.ErrorIs(t, err, ErrReservationExpired)
		st := e.audit("p1")
		require.Zero(t, st.Held)
		ended, err := ExpireHolds(ctx, e.db.Pool, "p1")
		require.NoError(t, err)
		require.Empty(t, ended)
		// The user's slot is free again.
		_, err = e.svc.Reserve(ctx, reserveReq("alice", "cart-2", time.Minute))
		require.NoError(t, err)
		e.audit("p1")
	})
}

// Confirms racing the expiry job at the instant the holds run out: every
// hold ends exactly one way, and the answer each confirm got is what
// Postgres holds.
func TestHoldConfirmRacesExpiry(t *testing.T) {
	forHoldPaths(t, func(t *testing.T, ctx context.Context, e *env, hp holdPath) {
		const n = 40
		hp.fill(e, "p1", n, pool.Pool{})
		var until time.Time
		for i := range n {
			r, err := e.svc.Reserve(ctx, reserveReq(fmt.Sprint("u", i), fmt.Sprint("r", i), time.Second))
			require.NoError(t, err)
			until = r.HeldUntil
		}
		time.Sleep(time.Until(until) - 30*time.Millisecond)
		confirmed := make([]bool, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				time.Sleep(time.Duration(i) * 2 * time.Millisecond)
				_, err := e.svc.Confirm(ctx, "p1", fmt.Sprint("r", i), fmt.Sprint("u", i))
				if err == nil {
					confirmed[i] = true
					return
				}
				require.ErrorIs(t, err, ErrReservationExpired)
			})
		}
		for range 5 {
			wg.Go(func() {
				for range 10 {
					_, err := ExpireHolds(ctx, e.db.Pool, "p1")
					require.NoError(t, err)
					time.Sleep(5 * time.Millisecond)
				}
			})
		}
		wg.Wait()
		_, err := ExpireHolds(ctx, e.db.Pool, "p1")
		require.NoError(t, err)
		won := 0
		for i := range n {
			_, err := NewReads(e.db.Pool).GetClaim(ctx, "p1", fmt.Sprint("r", i), "")
			if confirmed[i] {
				won++
				require.NoError(t, err, "confirmed r%d has no claim", i)
			} else {
				require.ErrorIs(t, err, ErrNotFound, "expired r%d", i)
			}
		}
		st := e.audit("p1")
		require.EqualValues(t, won, st.Claimed)
		require.EqualValues(t, n-won, st.Available)
		require.Zero(t, st.Held)
		t.Logf("%d of %d confirms won the race", won, n)
	})
}

func TestHoldLimits(t *testing.T) {
	forHoldPaths(t, func(t *testing.T, ctx context.Context, e *env, hp holdPath) {
		hp.fill(e, "p1", 10, pool.Pool{PerUserLimit: 3, HoldsPerUser: 1})
		_, err := e.svc.Reserve(ctx, reserveReq("alice", "h1", time.Minute))
		require.NoError(t, err)
		// One hold open at a time.
		_, err = e.svc.Reserve(ctx, reserveReq("alice", "h2", time.Minute))
		require.ErrorIs(t, err, ErrHoldLimit)
		// Claims are not holds.
		_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "alice", RequestID: "c1"})
		require.NoError(t, err)
		// The hold limit is not recorded: once h1 is confirmed, h2 may hold.
		_, err = e.svc.Confirm(ctx, "p1", "h1", "alice")
		require.NoError(t, err)
		r, err := e.svc.Reserve(ctx, reserveReq("alice", "h2", time.Minute))
		require.NoError(t, err)
		require.False(t, r.Replayed)
		// Holds count toward per_user_limit: h1, c1 and h2 make three.
		_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "alice", RequestID: "c2"})
		require.ErrorIs(t, err, ErrUserLimit)
		_, err = e.svc.Cancel(ctx, "p1", "h2", "alice")
		require.NoError(t, err)
		_, err = e.svc.Reserve(ctx, reserveReq("alice", "h3", time.Minute))
		require.NoError(t, err)
		// Hold times are bounded by the pool.
		_, err = e.svc.Reserve(ctx, reserveReq("bob", "b1", 2*time.Hour))
		var fe *FieldError
		require.ErrorAs(t, err, &fe)
		require.Equal(t, "hold_for", fe.Field)
		_, err = e.svc.Reserve(ctx, reserveReq("bob", "b1", 25*time.Hour))
		require.ErrorAs(t, err, &fe)
		require.Equal(t, "hold_for", fe.Field)
		_, err = e.svc.Reserve(ctx, reserveReq("bob", "b1", 10*time.Millisecond))
		require.ErrorAs(t, err, &fe)
		e.audit("p1")
	})
}

// An open hold is not a claim: no read and no ClaimCode shows its code.
func TestHoldIsPrivate(t *testing.T) {
	forHoldPaths(t, func(t *testing.T, ctx context.Context, e *env, hp holdPath) {
		hp.fill(e, "p1", 5, pool.Pool{PerUserLimit: 5})
		_, err := e.svc.Reserve(ctx, reserveReq("alice", "cart", time.Minute))
		require.NoError(t, err)
		_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "alice", RequestID: "cart"})
		require.ErrorIs(t, err, ErrReservationPending)
		_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "bob", RequestID: "cart"})
		require.ErrorIs(t, err, ErrRequestReused)
		_, err = e.svc.Reserve(ctx, reserveReq("bob", "cart", time.Minute))
		require.ErrorIs(t, err, ErrRequestReused)
		reads := NewReads(e.db.Pool)
		_, err = reads.GetClaim(ctx, "p1", "cart", "")
		require.ErrorIs(t, err, ErrReservationPending)
		_, err = reads.GetClaim(ctx, "p1", "cart", "bob")
		require.ErrorIs(t, err, ErrRequestReused)
		list, err := reads.ListUserClaims(ctx, "p1", "alice")
		require.NoError(t, err)
		require.Empty(t, list)
		require.NoError(t, reads.ExportClaims(ctx, "p1", time.Time{}, time.Time{}, func(page []Claim) error {
			return fmt.Errorf("export shows %d claims", len(page))
		}))
		_, err = e.svc.Confirm(ctx, "p1", "cart", "bob")
		require.ErrorIs(t, err, ErrRequestReused)
		// A ClaimCode claim is not a reservation.
		_, err = e.svc.Claim(ctx, Request{PoolID: "p1", UserID: "alice", RequestID: "plain"})
		require.NoError(t, err)
		_, err = e.svc.Reserve(ctx, reserveReq("alice", "plain", time.Minute))
		require.ErrorIs(t, err, ErrNotReservation)
		_, err = e.svc.Confirm(ctx, "p1", "plain", "alice")
		require.ErrorIs(t, err, ErrNotReservation)
		_, err = e.svc.Confirm(ctx, "p1", "nothing", "alice")
		require.ErrorIs(t, err, ErrReservationNotFound)
		_, err = e.svc.Confirm(ctx, "no-pool", "nothing", "alice")
		require.ErrorIs(t, err, pool.ErrPoolNotFound)
		e.audit("p1")
	})
}

// The hold drill: claims, reservations confirmed at once, late (some after
// their hold ran out) or cancelled, and retries of all of them, from many
// callers, while the expiry job runs every 50 ms and Redis is flushed with
// holds open mid-run. Every code reaches at most one request, every answer
// is committed, no held code is ever answered, and once the last holds
// ran out the pool balances with nothing held.
func TestHoldDrill(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedisServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	e := newEnv(t, envOpts{redis: rdb})
	holdDrill(t, e, func(ctx context.Context, p pool.Pool) {
		// Redis loses everything with holds open; the jobs bring the
		// staged codes back.
		assert.NoError(t, rdb.FlushAll(ctx).Err())
		_, err := e.reconciler.Reconcile(ctx, p, 0)
		assert.NoError(t, err)
	}, false)
}

// The hold drill with Postgres crashed twice mid-run (stop -m immediate,
// then crash recovery) while reservations, confirms and cancels are in
// flight and the expiry job runs. Callers retry whatever met the outage
// with the same request. The same promises hold: a hold whose reserve or
// confirm was cut off is answered by its retry as it was committed, no
// code reaches two requests, no held code is answered, and once the last
// holds ran out the pool balances with nothing held.
func TestHoldDrillPostgresCrashed(t *testing.T) {
	t.Parallel()
	srv := testenv.StartPostgresServer(t)
	e := newEnv(t, envOpts{db: testenv.PostgresOn(t, srv)})
	holdDrill(t, e, func(context.Context, pool.Pool) {
		srv.Crash()
		time.Sleep(300 * time.Millisecond) // callers and the expiry job meet the stopped server
		srv.Start()
	}, true)
}

// holdDrill runs the hold drill on e; mid runs a third of the way in (with
// crash, two thirds of the way in too) while the other callers go on. With
// crash, a call that meets pgerr.ErrUnavailable is sent again until it gets
// another answer, and the expiry job may meet it too.
func holdDrill(t *testing.T, e *env, mid func(context.Context, pool.Pool), crash bool) {
	t.Helper()
	const codes, workers, ops = 1500, 64, 3000
	p := e.fillStaged("drill", codes, pool.Pool{RefillBatchSize: 300, PerUserLimit: 2, HoldsPerUser: 1})
	ctx := context.Background()

	var mu sync.Mutex
	answered := map[string]int64{} // request -> code id answered
	owner := map[int64]string{}    // code id -> request
	var issued []ReserveRequest    // requests sent so far (HoldFor 0: a claim)
	counts := map[string]int{}
	answer := func(req string, c Claim) {
		mu.Lock()
		defer mu.Unlock()
		if prev, ok := answered[req]; ok && prev != c.CodeID {
			t.Errorf("request %s answered codes %d and %d", req, prev, c.CodeID)
		}
		if other, ok := owner[c.CodeID]; ok && other != req {
			t.Errorf("code %d answered to %s and %s", c.CodeID, other, req)
		}
		answered[req], owner[c.CodeID] = c.CodeID, req
	}
	allowed := []error{ErrPoolExhausted, ErrUserLimit, ErrHoldLimit, ErrReservationExpired, ErrReservationCancelled, ErrStagedUnreachable}
	note := func(op string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			counts[op+" ok"]++
			return
		}
		for _, a := range allowed {
			if errors.Is(err, a) {
				counts[op+" "+a.Error()]++
				return
			}
		}
		t.Errorf("%s: unexpected error: %v", op, err)
	}
	// retried calls f again while the store is unavailable (crash only).
	retried := func(op string, f func() error) error {
		if !crash {
			return f()
		}
		return untilAvailable(t, op, func(error) {
			mu.Lock()
			counts[op+" retried"]++
			mu.Unlock()
		}, f)
	}

	stopJob := make(chan struct{})
	jobDone := make(chan struct{})
	go func() {
		defer close(jobDone)
		for {
			select {
			case <-stopJob:
				return
			case <-time.After(50 * time.Millisecond):
			}
			_, err := ExpireHolds(ctx, e.db.Pool, "")
			if !crash || !errors.Is(err, pgerr.ErrUnavailable) {
				assert.NoError(t, err)
			}
		}
	}()

	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for {
				i := next.Add(1)
				if i > ops {
					return
				}
				if i == ops/3 || crash && i == 2*ops/3 {
					mid(ctx, p)
				}
				var req ReserveRequest
				mu.Lock()
				replay := len(issued) > 0 && rng.Float64() < 0.2
				if replay {
					req = issued[rng.IntN(len(issued))]
				} else {
					req = ReserveRequest{PoolID: "drill", UserID: fmt.Sprint("u", rng.IntN(2000)), RequestID: fmt.Sprint("r", i)}
					if rng.IntN(2) == 0 {
						req.HoldFor = time.Second
					}
					issued = append(issued, req)
				}
				mu.Unlock()
				if req.HoldFor == 0 {
					var res Result
					err := retried("claim", func() (err error) {
						res, err = e.svc.Claim(ctx, Request{PoolID: req.PoolID, UserID: req.UserID, RequestID: req.RequestID})
						return err
					})
					note("claim", err)
					if err == nil {
						answer(req.RequestID, res.Claim)
					}
					continue
				}
				if !replay {
					err := retried("reserve", func() (err error) {
						_, err = e.svc.Reserve(ctx, req)
						return err
					})
					note("reserve", err)
					if err != nil {
						continue
					}
					switch k := rng.IntN(10); {
					case k < 2:
						err := retried("cancel", func() (err error) {
							_, err = e.svc.Cancel(ctx, "drill", req.RequestID, req.UserID)
							return err
						})
						// A retry may have confirmed it first; a cancel
						// retried after an outage may find it cancelled by
						// its own first attempt.
						cancelledBefore := crash && errors.Is(err, ErrReservationCancelled)
						if !errors.Is(err, ErrReservationConfirmed) && !cancelledBefore {
							assert.NoError(t, err)
						}
						continue
					case k < 5:
						// A slow payer: some confirm after the hold ran out.
						time.Sleep(time.Duration(800+rng.IntN(400)) * time.Millisecond)
					}
				}
				var res Result
				err := retried("confirm", func() (err error) {
					res, err = e.svc.Confirm(ctx, "drill", req.RequestID, req.UserID)
					return err
				})
				if errors.Is(err, ErrReservationNotFound) {
					continue // a retry of a reserve that was refused
				}
				note("confirm", err)
				if err == nil {
					answer(req.RequestID, res.Claim)
				}
			}
		})
	}
	wg.Wait()
	close(stopJob)
	<-jobDone

	// The last holds run out; the jobs end them and return lost codes.
	time.Sleep(1100 * time.Millisecond)
	_, err := ExpireHolds(ctx, e.db.Pool, "")
	require.NoError(t, err)
	_, err = e.reconciler.Reconcile(ctx, p, 0)
	require.NoError(t, err)
	st := e.audit("drill")
	require.Zero(t, st.Held)
	require.EqualValues(t, len(answered), st.Claimed, "every claim was answered, and only claims")
	for req, code := range committedClaims(t, e, "drill") {
		require.Equal(t, answered[req], code, "request %s", req)
	}
	require.Positive(t, counts["confirm ok"])
	require.Positive(t, counts["confirm "+ErrReservationExpired.Error()], "some confirms came too late")
	if crash {
		require.Positive(t, counts["claim retried"]+counts["reserve retried"]+counts["confirm retried"]+counts["cancel retried"],
			"no caller met the outage")
	}
	t.Logf("outcomes %v; stats %+v", counts, st)
}

// Replicas of the previous version call the _v1 functions during a rolling
// deploy: they answer as before, and a request that is a hold answers
// 'held' (an outcome those replicas refuse to turn into an answer), never
// as a claim.
func TestVersion1FunctionsStillAnswer(t *testing.T) {
	ctx, e := start(t)
	e.manualStaging()
	p := e.fill("p1", 10, pool.Pool{PerUserLimit: 3, RefillBatchSize: 3})
	_, err := e.stager.Refill(ctx, p)
	require.NoError(t, err)
	ids, err := pgx.CollectRows(testenv.Must(e.db.Pool.Query(ctx,
		`SELECT id FROM codes WHERE pool_id = 'p1' AND state = 'staged' ORDER BY id LIMIT 3`)), pgx.RowTo[int64])
	require.NoError(t, err)
	now := time.Now()
	type row struct {
		Ord     int32
		Outcome string
	}
	outcomes, err := pgx.CollectRows(testenv.Must(e.db.Pool.Query(ctx,
		`SELECT ord, outcome FROM dispenser_claim_staged_v1($1, $2, $3, $4, $5, '1 minute')`,
		[]string{"p1", "p1"}, []string{"r1", "r2"}, []string{"u1", "u2"}, ids[:2], []time.Time{now, now})), pgx.RowToStructByPos[row])
	require.NoError(t, err)
	require.ElementsMatch(t, []row{{1, "claimed"}, {2, "claimed"}}, outcomes)

	var out string
	require.NoError(t, e.db.Pool.QueryRow(ctx,
		`SELECT outcome FROM dispenser_claim_fallback_v1('p1', 'r3', 'u3', 0, now(), '1 minute')`).Scan(&out))
	require.Equal(t, "claimed", out)

	_, err = e.svc.Reserve(ctx, reserveReq("u4", "h4", time.Minute))
	require.NoError(t, err)
	var code *string
	require.NoError(t, e.db.Pool.QueryRow(ctx,
		`SELECT outcome, code FROM dispenser_settle_v1('p1', 'h4', 'u4', false, now(), '1 minute')`).Scan(&out, &code))
	require.Equal(t, "held", out)
	require.NoError(t, e.db.Pool.QueryRow(ctx,
		`SELECT outcome FROM dispenser_claim_fallback_v1('p1', 'h4', 'u4', 0, now(), '1 minute')`).Scan(&out))
	require.Equal(t, "held", out)
	e.audit("p1")
}
