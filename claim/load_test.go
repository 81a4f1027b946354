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

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/pgerr"
	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
)

// workload is the drill: many goroutines, many users, limit 1, a
// share of retries of earlier request ids.
type workload struct {
	workers, calls, users int
	replayRatio           float64
	// during is called once by the driver after each tenth of the calls,
	// with the answers so far.
	during func(tenth int, l *ledger)
	// allowed are the errors a call may end with besides success.
	allowed []error
	// timeout, when set, draws each call's deadline (else 30 s).
	timeout func(*rand.Rand) time.Duration
	// retryUnavailable makes a caller that gets pgerr.ErrUnavailable send
	// the same request again until it gets another answer.
	retryUnavailable bool
}

// ledger records every answer the callers saw.
type ledger struct {
	mu        sync.Mutex
	issued    []string          // request ids sent so far
	user      map[string]string // request id -> user id
	pool      map[string]string // request id -> pool id
	answered  map[string]Claim  // request id -> first code seen
	mismatch  int               // a request answered with two different codes
	byPath    map[Path]int
	errCounts map[string]int
}

func runWorkload(t *testing.T, e *env, poolID string, wl workload) *ledger {
	t.Helper()
	return runMultiPoolWorkload(t, e, []string{poolID}, wl)
}

// runMultiPoolWorkload is runWorkload over several pools: each new request
// goes to one drawn at random.
func runMultiPoolWorkload(t *testing.T, e *env, pools []string, wl workload) *ledger {
	t.Helper()
	l := &ledger{user: map[string]string{}, pool: map[string]string{}, answered: map[string]Claim{}, byPath: map[Path]int{},
		errCounts: map[string]int{}}
	var next atomic.Int64
	var done atomic.Int64
	var wg sync.WaitGroup
	tenths := make(chan int, 10)
	for w := range wl.workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for next.Add(1) <= int64(wl.calls) {
				var req Request
				l.mu.Lock()
				if len(l.issued) > 0 && rng.Float64() < wl.replayRatio {
					rid := l.issued[rng.IntN(len(l.issued))]
					req = Request{PoolID: l.pool[rid], UserID: l.user[rid], RequestID: rid}
				} else {
					rid := fmt.Sprintf("req-%d-%d", w, rng.Uint64())
					req = Request{PoolID: pools[rng.IntN(len(pools))], UserID: fmt.Sprint("user-", rng.IntN(wl.users)), RequestID: rid}
					l.issued = append(l.issued, rid)
					l.user[rid], l.pool[rid] = req.UserID, req.PoolID
				}
				l.mu.Unlock()

				timeout := 30 * time.Second
				if wl.timeout != nil {
					timeout = wl.timeout(rng)
				}
				var res Result
				claim := func() error {
					ctx, cancel := context.WithTimeout(context.Background(), timeout)
					defer cancel()
					var err error
					res, err = e.svc.Claim(ctx, req)
					return err
				}
				var err error
				if wl.retryUnavailable {
					err = untilAvailable(t, fmt.Sprintf("claim %v", req), func(err error) {
						l.mu.Lock()
						l.errCounts[errName(err)+", retried"]++
						l.mu.Unlock()
					}, claim)
				} else {
					err = claim()
				}

				l.mu.Lock()
				if err == nil {
					l.byPath[res.Path]++
					if prev, ok := l.answered[req.RequestID]; ok && prev.CodeID != res.Claim.CodeID {
						l.mismatch++
					} else if !ok {
						l.answered[req.RequestID] = res.Claim
					}
				} else {
					// Unavailable because the pool's last codes are staged
					// where Redis cannot serve them yet (a refill between
					// its two steps, lost codes before reconcile) decides
					// nothing: a caller retries. Any workload may see it as
					// the pool runs dry.
					ok := errors.Is(err, ErrStagedUnreachable)
					for _, a := range wl.allowed {
						ok = ok || errors.Is(err, a)
					}
					if !ok {
						t.Errorf("claim %v: unexpected error: %v", req, err)
					}
					l.errCounts[errName(err)]++
				}
				l.mu.Unlock()
				if n := done.Add(1); n%int64(wl.calls/10) == 0 {
					tenths <- int(n / int64(wl.calls/10))
				}
			}
		})
	}
	go func() { wg.Wait(); close(tenths) }()
	for tenth := range tenths {
		if wl.during != nil {
			wl.during(tenth, l)
		}
	}
	return l
}

func errName(err error) string {
	for _, e := range []error{ErrPoolExhausted, ErrUserLimit, pgerr.ErrUnavailable, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "other"
}

// untilAvailable is a caller that retries an unavailable store: f, then f
// again 25 ms apart for as long as it fails with pgerr.ErrUnavailable (a
// test error after 2000 retries); first gets the error that set off the
// retries. It returns f's last error. ErrStagedUnreachable is returned as
// it is: the pool's last codes then wait for reconcile, which the drills
// run only once their callers are done.
func untilAvailable(t *testing.T, what string, first func(error), f func() error) error {
	t.Helper()
	err := f()
	for retries := 0; errors.Is(err, pgerr.ErrUnavailable) && !errors.Is(err, ErrStagedUnreachable); retries++ {
		if retries == 0 {
			first(err)
		}
		if retries > 2000 {
			t.Errorf("%s: still unavailable after %d retries: %v", what, retries, err)
			break
		}
		time.Sleep(25 * time.Millisecond)
		err = f()
	}
	return err
}

// committedClaims is the pool's claims in Postgres: request id -> code id.
func committedClaims(t *testing.T, e *env, poolID string) map[string]int64 {
	t.Helper()
	rows, err := e.db.Pool.Query(context.Background(), `SELECT request_id, code_id FROM claims WHERE pool_id = $1`, poolID)
	require.NoError(t, err)
	committed := map[string]int64{}
	for rows.Next() {
		var rid string
		var id int64
		require.NoError(t, rows.Scan(&rid, &id))
		committed[rid] = id
	}
	require.NoError(t, rows.Err())
	return committed
}

// check verifies the answers against Postgres: no code went to two
// requests, replays matched, and every answered code is committed there.
func (l *ledger) check(t *testing.T, e *env, poolID string) map[string]bool {
	t.Helper()
	require.Zero(t, l.mismatch, "replay mismatches")
	owner := map[int64]string{}
	for rid, c := range l.answered {
		if other, ok := owner[c.CodeID]; ok {
			t.Fatalf("code %d answered to %s and %s", c.CodeID, other, rid)
		}
		owner[c.CodeID] = rid
	}
	committed := committedClaims(t, e, poolID)
	for rid, c := range l.answered {
		id, ok := committed[rid]
		require.True(t, ok, "answered request %s has no committed claim", rid)
		require.Equal(t, c.CodeID, id, "answered request %s got another code than committed", rid)
	}
	e.audit(poolID)
	codes := map[string]bool{}
	for _, c := range l.answered {
		codes[c.Code.Reveal()] = true
	}
	return codes
}

const (
	drillCodes   = 1000
	drillWorkers = 200
	drillUsers   = 5000
	drillCalls   = 6000
	drillReplays = 0.2
)

// The drill without faults: exactly 1,000 codes handed out, each
// once, every replay the same code, every answer committed.
func TestClaimDrill(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.fillStaged("drill", drillCodes, pool.Pool{RefillBatchSize: drillCodes})
	l := runWorkload(t, e, "drill", workload{workers: drillWorkers, calls: drillCalls, users: drillUsers,
		replayRatio: drillReplays, allowed: []error{ErrPoolExhausted, ErrUserLimit}})
	codes := l.check(t, e, "drill")
	require.Len(t, codes, drillCodes)
	require.Len(t, l.answered, drillCodes)
	require.Positive(t, l.byPath[PathRedis])
	require.Positive(t, l.byPath[PathReplay])
	t.Logf("paths %v, errors %v", l.byPath, l.errCounts)
}

// Callers whose deadlines pass mid-claim, as a backend with a short
// timeout's do in a flash sale: a cut call either committed its claim,
// which a retry with the same request id then gets, or leaves nothing that
// reconcile does not give back. Nothing is lost or doubled.
func TestClaimDrillCallersDeadlines(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.fillStaged("drill", drillCodes, pool.Pool{RefillBatchSize: drillCodes})
	ctx := context.Background()
	// Deadlines from none left at all to about a claim's time under this
	// load, so that calls end before, while and after a code is popped.
	l := runWorkload(t, e, "drill", workload{workers: drillWorkers, calls: drillCalls / 4, users: drillUsers,
		replayRatio: drillReplays, allowed: []error{ErrPoolExhausted, ErrUserLimit, context.DeadlineExceeded},
		timeout: func(rng *rand.Rand) time.Duration { return time.Duration(rng.IntN(200_000)) * time.Microsecond }})
	require.Positive(t, l.errCounts[context.DeadlineExceeded.Error()], "no call was cut")
	require.NotEmpty(t, l.answered, "no call was answered")
	_, err := e.reconciler.Reconcile(ctx, p, 0)
	require.NoError(t, err)
	l.check(t, e, "drill")
	require.Zero(t, e.rdb.ZCard(ctx, e.keys.InFlight("drill")).Val(), "popped codes left in flight")

	// Every request again, without a deadline: one whose claim committed,
	// answered or cut, gets that claim back.
	committed := committedClaims(t, e, "drill")
	cut := 0
	for _, rid := range l.issued {
		if _, answered := l.answered[rid]; !answered {
			if _, ok := committed[rid]; ok {
				cut++
			}
		}
		res, err := e.svc.Claim(ctx, Request{PoolID: "drill", UserID: l.user[rid], RequestID: rid})
		if id, ok := committed[rid]; ok {
			require.NoError(t, err, "request %s", rid)
			require.True(t, res.Replayed, "request %s", rid)
			require.Equal(t, id, res.Claim.CodeID, "request %s", rid)
			continue
		}
		if err != nil {
			require.True(t, errors.Is(err, ErrPoolExhausted) || errors.Is(err, ErrUserLimit), "request %s: %v", rid, err)
		}
	}
	_, err = e.reconciler.Reconcile(ctx, p, 0)
	require.NoError(t, err)
	st := e.audit("drill")
	t.Logf("answered %d, cut after committing %d, paths %v, errors %v, stats %+v", len(l.answered), cut, l.byPath, l.errCounts, st)
}

// Redis loses everything mid-run (a flush, or a restart without
// persistence): replay records, guards, the staged list and the ledger.
// Postgres still decides: nothing is lost or doubled, and reconciliation
// brings the staged codes back.
func TestClaimDrillRedisFlushed(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedisServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	e := newEnv(t, envOpts{redis: rdb})
	p := e.fillStaged("drill", drillCodes, pool.Pool{RefillBatchSize: 300})
	ctx := context.Background()
	l := runWorkload(t, e, "drill", workload{workers: drillWorkers, calls: drillCalls, users: drillUsers,
		replayRatio: drillReplays, allowed: []error{ErrPoolExhausted, ErrUserLimit, ErrStagedUnreachable},
		during: func(tenth int, _ *ledger) {
			switch tenth {
			case 2:
				require.NoError(t, rdb.FlushAll(ctx).Err())
			case 3, 5, 7:
				// What the jobs do: return lost batches, stage again.
				_, err := e.reconciler.Reconcile(ctx, p, 0)
				require.NoError(t, err)
				_, err = e.stager.Refill(ctx, p)
				require.NoError(t, err)
			}
		}})
	_, err := e.reconciler.Reconcile(ctx, p, 0)
	require.NoError(t, err)
	codes := l.check(t, e, "drill")
	st := e.audit("drill")
	require.EqualValues(t, len(codes), st.Claimed, "every claim was answered")
	t.Logf("answered %d, paths %v, errors %v, stats %+v", len(codes), l.byPath, l.errCounts, st)
}

// Redis dies mid-run (the fallback serves, and the breaker spares callers
// Redis's timeouts) and comes back (the fast path returns by itself).
func TestClaimDrillRedisStoppedAndRestarted(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedisServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: 1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	e := newEnv(t, envOpts{redis: rdb})
	// Staged by hand, 200 codes: refill ahead of demand would stage most of
	// the pool, out of the fallback's reach while Redis is down. Enough
	// codes that the pool outlasts the outage.
	e.manualStaging()
	p := e.fill("drill", 3*drillCodes, pool.Pool{RefillBatchSize: 200})
	_, err := e.stager.Refill(context.Background(), p)
	require.NoError(t, err)
	ctx := context.Background()
	var duringOutage, afterRestart map[Path]int
	snapshot := func(l *ledger) map[Path]int {
		l.mu.Lock()
		defer l.mu.Unlock()
		out := map[Path]int{}
		for k, v := range l.byPath {
			out[k] = v
		}
		return out
	}
	l := runWorkload(t, e, "drill", workload{workers: 50, calls: 4000, users: drillUsers,
		replayRatio: drillReplays, allowed: []error{ErrPoolExhausted, ErrUserLimit},
		during: func(tenth int, l *ledger) {
			switch tenth {
			case 1:
				srv.Kill()
				duringOutage = snapshot(l)
			case 3:
				afterRestart = snapshot(l)
				srv.Start()
				// The jobs: codes staged in the dead Redis come back, a new
				// batch is staged. Each is retried, as its job would run
				// again: go-redis answers its last dial error for up to a
				// second after the server is back, without dialing.
				require.Eventually(t, func() bool {
					_, err := e.reconciler.Reconcile(ctx, p, 0)
					return err == nil
				}, 5*time.Second, 50*time.Millisecond)
				require.EventuallyWithT(t, func(c *assert.CollectT) {
					_, err := e.stager.Refill(ctx, p)
					assert.NoError(c, err, "refill after the restart")
				}, 5*time.Second, 50*time.Millisecond)
			}
		}})
	final := snapshot(l)
	l.check(t, e, "drill")
	require.Greater(t, afterRestart[PathFallback], duringOutage[PathFallback], "the fallback served while Redis was down")
	// The fast path came back after the restart. The workload runs beside
	// the fault callbacks and may end before the restarted Redis holds a
	// staged batch (once in CI, on a loaded machine, no claim after the
	// restart popped from Redis), so fresh claims made now show it: once a
	// batch is staged there and the breaker has closed, they pop from it.
	_, err = e.stager.Refill(ctx, p)
	require.NoError(t, err)
	deadline := time.Now().Add(5 * time.Second)
	for i := 1; ; i++ {
		id := fmt.Sprint("after-restart-", i)
		res, err := e.svc.Claim(ctx, Request{PoolID: "drill", UserID: id, RequestID: id})
		require.NoError(t, err)
		if res.Path == PathRedis {
			break
		}
		require.True(t, time.Now().Before(deadline), "the fast path came back after the restart")
		time.Sleep(20 * time.Millisecond)
	}
	require.Equal(t, "closed", e.svc.BreakerState())
	t.Logf("paths at kill %v, at restart %v, final %v, errors %v", duringOutage, afterRestart, final, l.errCounts)
}

// Postgres crashes twice mid-run (pg_ctl stop -m immediate: every
// connection drops at once, nothing is flushed, crash recovery at the next
// start), then shuts down cleanly and restarts, while callers retry each
// request that met the outage until it is answered. Every claim answered
// before a crash survives it, a request whose commit was cut off gets the
// claim it made if it made one, nothing is half written or lost, and the
// service recovers by itself.
func TestClaimDrillPostgresCrashedAndRestarted(t *testing.T) {
	t.Parallel()
	srv := testenv.StartPostgresServer(t)
	e := newEnv(t, envOpts{db: testenv.PostgresOn(t, srv)})
	const codes, calls = 4000, 4000
	p := e.fillStaged("drill", codes, pool.Pool{RefillBatchSize: codes})
	ctx := context.Background()
	var outages []time.Duration
	outage := func(stop func()) {
		began := time.Now()
		stop()
		time.Sleep(300 * time.Millisecond) // callers meet the stopped server
		srv.Start()
		outages = append(outages, time.Since(began))
	}
	l := runWorkload(t, e, "drill", workload{workers: drillWorkers, calls: calls, users: drillUsers,
		replayRatio: drillReplays, allowed: []error{ErrUserLimit}, retryUnavailable: true,
		during: func(tenth int, _ *ledger) {
			switch tenth {
			case 2, 5:
				outage(srv.Crash)
			case 8:
				outage(srv.Stop)
			}
		}})
	require.Len(t, outages, 3)
	require.Positive(t, l.errCounts[pgerr.ErrUnavailable.Error()+", retried"], "no caller met the outages")
	_, err := e.reconciler.Reconcile(ctx, p, 0)
	require.NoError(t, err)
	l.check(t, e, "drill")
	require.Zero(t, e.rdb.ZCard(ctx, e.keys.InFlight("drill")).Val(), "popped codes left in flight")

	// Every request again: one whose claim committed, answered or not, gets
	// that claim back; the others are claims of their own now, or the
	// user's limit.
	committed := committedClaims(t, e, "drill")
	for _, rid := range l.issued {
		res, err := e.svc.Claim(ctx, Request{PoolID: "drill", UserID: l.user[rid], RequestID: rid})
		if id, ok := committed[rid]; ok {
			require.NoError(t, err, "request %s", rid)
			require.Equal(t, id, res.Claim.CodeID, "request %s", rid)
			continue
		}
		if err != nil {
			require.ErrorIs(t, err, ErrUserLimit, "request %s", rid)
		}
	}
	st := e.audit("drill")
	require.Positive(t, st.Available+st.Staged, "the pool did not run dry")
	t.Logf("outages %v; answered %d, paths %v, errors %v, stats %+v", outages, len(l.answered), l.byPath, l.errCounts, st)
}

// Postgres drops every connection several times mid-run (a restart or a
// failover): callers see Unavailable, nothing is half written, and the
// service recovers by itself.
func TestClaimDrillPostgresConnectionsKilled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.fillStaged("drill", drillCodes, pool.Pool{RefillBatchSize: drillCodes})
	ctx := context.Background()
	killed := 0
	l := runWorkload(t, e, "drill", workload{workers: drillWorkers, calls: drillCalls, users: drillUsers,
		replayRatio: drillReplays, allowed: []error{ErrPoolExhausted, ErrUserLimit, pgerr.ErrUnavailable},
		during: func(tenth int, _ *ledger) {
			if tenth%2 == 1 && tenth < 9 {
				n, err := e.db.TerminateBackends(ctx)
				require.NoError(t, err)
				killed += n
			}
		}})
	require.Positive(t, killed)
	// Recovery: popped codes whose commit died come back through the
	// ledger, and every unanswered request can still be claimed.
	_, err := e.reconciler.Reconcile(ctx, p, 0)
	require.NoError(t, err)
	codes := l.check(t, e, "drill")
	st := e.audit("drill")
	require.GreaterOrEqual(t, st.Claimed, int64(len(codes)))
	res, err := e.svc.Claim(ctx, Request{PoolID: "drill", UserID: "after", RequestID: "after"})
	if st.Available+st.Staged > 0 {
		require.NoError(t, err, "the service recovered")
		require.NotZero(t, res.Claim.CodeID)
	} else {
		require.ErrorIs(t, err, ErrPoolExhausted)
	}
	t.Logf("killed %d backends; paths %v, errors %v, stats %+v", killed, l.byPath, l.errCounts, st)
}
