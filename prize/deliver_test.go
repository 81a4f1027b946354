package prize_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
	"github.com/dispenserhq/dispenser/prize"
	"github.com/dispenserhq/dispenser/webhook"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const secret = "test-secret-0123456789"

// receiver is a webhook endpoint that checks every signature and records
// what it received.
type receiver struct {
	t      *testing.T
	mu     sync.Mutex
	byID   map[string][]string // delivery id -> codes received (one per attempt)
	prizes map[string]string   // prize id -> delivery id
	calls  int
	// answer decides the reply to the n-th call of a delivery (1-based).
	answer func(w http.ResponseWriter, n int)
	srv    *httptest.Server
}

func newReceiver(t *testing.T, answer func(w http.ResponseWriter, n int)) *receiver {
	r := &receiver{t: t, byID: map[string][]string{}, prizes: map[string]string{}, answer: answer}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if err := webhook.Verify([]byte(secret), req.Header, body, time.Now(), time.Minute); err != nil {
			t.Errorf("receiver: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var p struct {
			DeliveryID string `json:"delivery_id"`
			PrizeID    string `json:"prize_id"`
			Code       string `json:"code"`
		}
		require.NoError(t, json.Unmarshal(body, &p))
		require.Equal(t, p.DeliveryID, req.Header.Get(webhook.HeaderDeliveryID))
		r.mu.Lock()
		r.calls++
		r.byID[p.DeliveryID] = append(r.byID[p.DeliveryID], p.Code)
		if prev, ok := r.prizes[p.PrizeID]; ok && prev != p.DeliveryID {
			t.Errorf("prize %s came with two delivery ids", p.PrizeID)
		}
		r.prizes[p.PrizeID] = p.DeliveryID
		n := len(r.byID[p.DeliveryID])
		r.mu.Unlock()
		r.answer(w, n)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// distinctCodes checks that each delivery carried one code on every attempt
// and that no two deliveries carried the same code.
func (r *receiver) distinctCodes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]string{}
	for id, codes := range r.byID {
		for _, c := range codes {
			require.Equal(r.t, codes[0], c, "delivery %s carried two codes", id)
		}
		if other, ok := seen[codes[0]]; ok {
			r.t.Fatalf("code sent in deliveries %s and %s", other, id)
		}
		seen[codes[0]] = id
	}
	return len(seen)
}

type env struct {
	db     *testenv.Schema
	store  *prize.Store
	pools  *pool.Store
	claims *claim.Service
	keys   stock.Keys
	clock  *testClock
	stager *claim.Stager
}

// start begins a parallel test with an env of its own.
func start(t *testing.T) (context.Context, *env) {
	t.Helper()
	t.Parallel()
	return context.Background(), newEnv(t)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, testenv.Postgres(t))
}

// newEnvOn is newEnv on a given schema.
func newEnvOn(t *testing.T, db *testenv.Schema) *env {
	t.Helper()
	rdb, ns := testenv.Redis(t)
	keys := stock.NewKeys(ns)
	clock := &testClock{now: time.Now()}
	svc := testenv.Must(claim.NewService(db.Pool, rdb, keys, claim.Config{Now: clock.Now, Logger: slog.New(slog.DiscardHandler)}))
	require.NoError(t, svc.Start(context.Background()))
	t.Cleanup(svc.Stop)
	return &env{db: db, store: prize.NewStore(db.Pool), pools: pool.NewStore(db.Pool), claims: svc, keys: keys, clock: clock,
		stager: claim.NewStager(db.Pool, rdb, keys, false)}
}

// testClock is the claim service's clock in these tests: it moves only
// when a test moves it.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// setupPool creates a pool with codes and a webhook, and n ready prizes.
func (e *env) setupPool(t *testing.T, id, url string, codes, prizes int) {
	t.Helper()
	ctx := context.Background()
	_, err := e.pools.CreatePool(ctx, pool.Pool{ID: id, WebhookURL: url, WebhookSecret: secret,
		ClaimEndsAt: e.clock.Now().Add(time.Minute)})
	require.NoError(t, err)
	var b strings.Builder
	for i := range codes {
		fmt.Fprintf(&b, "%s-PRIZECODE-%05d\n", id, i)
	}
	_, err = e.pools.Import(ctx, pool.ImportOptions{PoolID: id, Format: pool.FormatLines}, strings.NewReader(b.String()))
	require.NoError(t, err)
	for i := range prizes {
		p, _, err := e.store.Record(ctx, prize.RecordRequest{PoolID: id, UserID: fmt.Sprint("winner-", i), ExternalID: fmt.Sprint("win-", i)})
		require.NoError(t, err)
		_, err = e.store.MarkReady(ctx, p.ID, `{"phone": "+1555"}`)
		require.NoError(t, err)
	}
	e.clock.Add(time.Hour) // the claim window is closed now: delivery ignores it
}

func (e *env) deliverer(timeout time.Duration) *prize.Deliverer {
	return prize.NewDeliverer(e.db.Pool, e.claims, e.stager, prize.DeliverConfig{
		HTTP: &http.Client{Timeout: timeout}, BatchSize: 50, MaxAttempts: 3,
		BaseBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
}

func (e *env) states(t *testing.T, poolID string) map[prize.State]int {
	t.Helper()
	all, err := e.store.List(context.Background(), poolID, "", 0, 10_000)
	require.NoError(t, err)
	out := map[prize.State]int{}
	for _, p := range all {
		out[p.State]++
	}
	return out
}

// audit checks that each prize got at most one code and that the pool's
// promises hold.
func (e *env) audit(t *testing.T, poolID string) {
	t.Helper()
	ctx := context.Background()
	var prizesWithClaims, claimsOfPrizes int
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT count(DISTINCT p.id), count(c.id) FROM prizes p
		JOIN claims c ON c.pool_id = p.pool_id AND c.request_id = E'\x01prize:' || p.id WHERE p.pool_id = $1`, poolID).
		Scan(&prizesWithClaims, &claimsOfPrizes))
	require.Equal(t, prizesWithClaims, claimsOfPrizes, "a prize with two claims")
	rep, err := claim.Audit(ctx, e.db.Pool, nil, poolID)
	require.NoError(t, err)
	require.Zero(t, rep.Duplicates()+rep.Lost()+rep.UsersOverLimit, "%+v", rep)
}

func ok(w http.ResponseWriter, _ int) { w.WriteHeader(http.StatusOK) }

func TestDeliverSuccess(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newReceiver(t, ok)
	e.setupPool(t, "p1", r.srv.URL, 60, 40)
	reports, err := e.deliverer(2*time.Second).Run(context.Background(), "")
	require.NoError(t, err)
	require.Equal(t, prize.DeliverReport{Assigned: 40, Delivered: 40}, reports["p1"])
	require.Equal(t, map[prize.State]int{prize.Delivered: 40}, e.states(t, "p1"))
	require.Equal(t, 40, r.distinctCodes())
	e.audit(t, "p1")
	// Nothing left: a second run does nothing.
	reports, err = e.deliverer(2*time.Second).Run(context.Background(), "")
	require.NoError(t, err)
	require.Empty(t, reports)
}

// Failing, timing-out and slow receivers: every prize ends delivered or
// parked, with the same delivery id and code on every attempt.
func TestDeliverFailuresRetriesAndParking(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	failing := newReceiver(t, func(w http.ResponseWriter, _ int) { w.WriteHeader(http.StatusServiceUnavailable) })
	hanging := newReceiver(t, func(w http.ResponseWriter, _ int) { time.Sleep(300 * time.Millisecond); w.WriteHeader(http.StatusOK) })
	slow := newReceiver(t, func(w http.ResponseWriter, _ int) { time.Sleep(50 * time.Millisecond); w.WriteHeader(http.StatusOK) })
	// Answers twice: the first attempt is processed but its answer lost
	// (500); the retry, same delivery id, succeeds.
	twice := newReceiver(t, func(w http.ResponseWriter, n int) {
		if n == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	e.setupPool(t, "failing", failing.srv.URL, 10, 5)
	e.setupPool(t, "hanging", hanging.srv.URL, 10, 5)
	e.setupPool(t, "slow", slow.srv.URL, 10, 5)
	e.setupPool(t, "twice", twice.srv.URL, 10, 5)
	reports, err := e.deliverer(150*time.Millisecond).Run(context.Background(), "")
	require.NoError(t, err)

	require.Equal(t, map[prize.State]int{prize.Failed: 5}, e.states(t, "failing"))
	require.Equal(t, map[prize.State]int{prize.Failed: 5}, e.states(t, "hanging"))
	require.Equal(t, map[prize.State]int{prize.Delivered: 5}, e.states(t, "slow"))
	require.Equal(t, map[prize.State]int{prize.Delivered: 5}, e.states(t, "twice"))
	require.Equal(t, prize.DeliverReport{Assigned: 5, Retried: 10, Parked: 5}, reports["failing"])
	require.Equal(t, prize.DeliverReport{Assigned: 5, Delivered: 5, Retried: 5}, reports["twice"])
	for _, r := range []*receiver{failing, hanging} {
		r.mu.Lock()
		for id, codes := range r.byID {
			require.Len(t, codes, 3, "delivery %s: every attempt, same id", id)
		}
		r.mu.Unlock()
	}
	require.Equal(t, 5, twice.distinctCodes())

	parked, err := e.store.List(context.Background(), "failing", prize.Failed, 0, 10)
	require.NoError(t, err)
	for _, p := range parked {
		require.Equal(t, prize.ParkWebhookFailed, p.ParkReason)
		require.Equal(t, "HTTP 503", p.LastError)
		require.Equal(t, 3, p.Attempts)
		require.NotEmpty(t, p.Code, "a parked delivery keeps its code")
	}
	hung, err := e.store.List(context.Background(), "hanging", prize.Failed, 0, 1)
	require.NoError(t, err)
	require.Equal(t, "timeout", hung[0].LastError)
	for _, id := range []string{"failing", "hanging", "slow", "twice"} {
		e.audit(t, id)
	}

	// RetryDelivery sends a parked prize again, same code and delivery id.
	before := parked[0]
	_, err = e.store.Retry(context.Background(), before.ID)
	require.NoError(t, err)
	_, err = e.deliverer(150*time.Millisecond).Run(context.Background(), "failing")
	require.NoError(t, err)
	after, err := e.store.Get(context.Background(), before.ID)
	require.NoError(t, err)
	require.Equal(t, prize.Failed, after.State)
	require.Equal(t, before.Code, after.Code)
	require.Equal(t, before.DeliveryID, after.DeliveryID)
	failing.mu.Lock()
	require.Len(t, failing.byID[before.DeliveryID], 6)
	failing.mu.Unlock()
}

// Two overlapping runs, and a run killed mid-batch then rerun: no prize gets
// two codes, and every prize ends delivered.
func TestDeliverOverlappingAndKilledRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var cancelled sync.Once
	ctx, cancel := context.WithCancel(context.Background())
	r := newReceiver(t, ok)
	e.setupPool(t, "p1", r.srv.URL, 400, 300)

	// The first run dies after its first batch of assignments.
	go func() {
		for {
			var assigned int
			_ = e.db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM prizes WHERE state <> 'ready'").Scan(&assigned)
			if assigned > 0 {
				cancelled.Do(cancel)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err := e.deliverer(2*time.Second).Run(ctx, "")
	require.Error(t, err)

	// Then two runs at once finish the job.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { _, errs[i] = e.deliverer(2*time.Second).Run(context.Background(), "") })
	}
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.Equal(t, map[prize.State]int{prize.Delivered: 300}, e.states(t, "p1"))
	require.Equal(t, 300, r.distinctCodes())
	e.audit(t, "p1")
}

// Postgres crashes in the middle of a delivery run (pg_ctl stop -m
// immediate on a cluster of the test's own) and comes back: the run fails,
// and the runs after it finish the job. No prize gets two codes, no code
// goes to two prizes, a delivery that was sent but not yet recorded is sent
// again with the same delivery id and code, and every prize ends delivered.
func TestDeliverAcrossAPostgresCrash(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgresServer(t)
	e := newEnvOn(t, testenv.PostgresOn(t, pg))
	r := newReceiver(t, func(w http.ResponseWriter, _ int) { time.Sleep(2 * time.Millisecond); w.WriteHeader(http.StatusOK) })
	const prizes = 300
	e.setupPool(t, "p1", r.srv.URL, 400, prizes)
	received := func() int {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.calls
	}

	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		for received() < prizes/10 {
			time.Sleep(time.Millisecond)
		}
		pg.Crash()
		time.Sleep(300 * time.Millisecond)
		pg.Start()
	}()
	// A short HTTP timeout: an attempt cut by the crash is leased again
	// after twice it plus 5 s.
	_, err := e.deliverer(200*time.Millisecond).Run(context.Background(), "")
	require.Error(t, err, "the run met the crash")
	<-restarted
	sentBefore := received()
	require.Less(t, sentBefore, prizes, "the crash came before the run ended")

	// The pool's connections from before the crash fail once each, the
	// test's reads as much as the runs'.
	undelivered := func() int {
		var n int
		if err := e.db.Pool.QueryRow(context.Background(),
			"SELECT count(*) FROM prizes WHERE pool_id = 'p1' AND state <> 'delivered'").Scan(&n); err != nil {
			return -1
		}
		return n
	}
	deadline := time.Now().Add(60 * time.Second)
	for undelivered() != 0 {
		require.True(t, time.Now().Before(deadline), "every prize delivered after the restart")
		if _, err := e.deliverer(200*time.Millisecond).Run(context.Background(), ""); err != nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	require.Equal(t, map[prize.State]int{prize.Delivered: prizes}, e.states(t, "p1"))
	require.Equal(t, prizes, r.distinctCodes())
	e.audit(t, "p1")
	t.Logf("%d webhook calls before the restart, %d in all", sentBefore, received())
}

func TestDeliverPoolExhaustedAndNoWebhook(t *testing.T) {
	ctx, e := start(t)
	r := newReceiver(t, ok)
	e.setupPool(t, "small", r.srv.URL, 6, 10)
	e.setupPool(t, "nohook", "", 5, 3)
	reports, err := e.deliverer(2*time.Second).Run(ctx, "")
	require.NoError(t, err)
	require.Equal(t, prize.DeliverReport{Assigned: 6, Delivered: 6, Parked: 4}, reports["small"])
	require.Equal(t, map[prize.State]int{prize.Delivered: 6, prize.Failed: 4}, e.states(t, "small"))
	parked, err := e.store.List(ctx, "small", prize.Failed, 0, 10)
	require.NoError(t, err)
	for _, p := range parked {
		require.Equal(t, prize.ParkPoolExhausted, p.ParkReason)
		require.Empty(t, p.Code)
	}
	require.Equal(t, map[prize.State]int{prize.Failed: 3}, e.states(t, "nohook"))
	nohook, err := e.store.List(ctx, "nohook", prize.Failed, 0, 1)
	require.NoError(t, err)
	require.Equal(t, prize.ParkNoWebhook, nohook[0].ParkReason)
	e.audit(t, "small")
	e.audit(t, "nohook")
}
