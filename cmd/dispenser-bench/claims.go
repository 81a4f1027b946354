package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/internal/cli"
	"github.com/dispenserhq/dispenser/internal/cliflag"
	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/internal/upload"
	"github.com/dispenserhq/dispenser/pool"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// benchOpts are the flags of dispenser-bench claims.
type benchOpts struct {
	claims, concurrency, users, codes int
	// shards spreads the fresh pool over that many Redis shards.
	shards                           int
	replayRatio                      float64
	poolID                           string
	databaseURL, redisURL, namespace string
	// httpURL, if set, sends the claims over the HTTP/JSON API at this base
	// URL instead of gRPC (pools are still made over gRPC).
	httpURL string
	// defaultPool creates the fresh pool with default settings and stages
	// nothing: refill has to keep up with the load.
	defaultPool bool
	// reserve makes every request a ReserveCode and then a
	// ConfirmReservation (a checkout that pays at once), not a ClaimCode.
	reserve               bool
	callTimeout, retryFor time.Duration
	// rate caps new requests per second over all callers; 0: none.
	rate float64
}

// benchResult is the JSON line bench ends with.
type benchResult struct {
	Pool             string  `json:"pool"`
	Calls            int     `json:"calls"`
	Claims           int     `json:"claims"`
	ClaimsPerS       float64 `json:"claims_per_s"`
	P50ms            float64 `json:"p50_ms"`
	P99ms            float64 `json:"p99_ms"`
	Duplicates       int64   `json:"duplicates"`
	Lost             int64   `json:"lost"`
	LimitViolations  int64   `json:"limit_violations"`
	ReplayMismatches int64   `json:"replay_mismatches"`
}

func (a *app) benchClaimsFlags(cmd *cobra.Command, o *benchOpts) {
	f := cmd.Flags()
	f.IntVar(&o.claims, "claims", 20_000, "ClaimCode calls to make")
	f.IntVar(&o.concurrency, "concurrency", 64, "concurrent callers")
	f.IntVar(&o.users, "users", 0, "users to draw from (default: ten times the calls, so the limit rarely bites)")
	f.Float64Var(&o.replayRatio, "replay-ratio", 0.1, "share of calls that retry an earlier request_id")
	f.StringVar(&o.poolID, "pool", "", "claim from this pool (default: a fresh pool filled with enough codes)")
	f.IntVar(&o.codes, "codes", 0, "codes in the fresh pool (default: enough for every new request)")
	f.IntVar(&o.shards, "redis-shards", 1, "Redis shards the fresh pool spreads over (its redis_shards setting)")
	f.StringVar(&o.httpURL, "http", "", "claim over the HTTP/JSON API at this base URL (e.g. http://127.0.0.1:8080), HTTP/1.1 keep-alive, instead of gRPC")
	f.BoolVar(&o.defaultPool, "default-pool", false, "create the fresh pool with default settings and stage nothing (refill must keep up)")
	f.BoolVar(&o.reserve, "reserve", false, "each request reserves a code, then confirms the reservation (two calls) instead of claiming")
	cliflag.Secret(f, &o.databaseURL, "database-url", "DISPENSER_DATABASE_URL", cli.DefaultDatabaseURL,
		"the server's Postgres, for the audit")
	cliflag.Secret(f, &o.redisURL, "redis-url", "DISPENSER_REDIS_URL", cli.DefaultRedisURL, "the server's Redis, for the audit")
	f.StringVar(&o.namespace, "redis-namespace", cli.EnvOr("DISPENSER_REDIS_NAMESPACE", "dispenser"), "the server's Redis namespace [DISPENSER_REDIS_NAMESPACE]")
	f.DurationVar(&o.callTimeout, "call-timeout", 10*time.Second, "deadline of one ClaimCode call")
	f.DurationVar(&o.retryFor, "retry-for", 60*time.Second, "keep retrying a call that fails Unavailable (same request_id) this long")
	f.Float64Var(&o.rate, "rate", 0, "start at most this many requests per second over all callers (0: as fast as the server answers); "+
		"a drill uses it so that its load outlasts its faults however fast the machine is")
}

func (a *app) runBenchClaims(ctx context.Context, o benchOpts) error {
	if o.claims <= 0 || o.concurrency <= 0 || o.replayRatio < 0 || o.replayRatio >= 1 || o.rate < 0 {
		return fmt.Errorf("--claims and --concurrency must be positive, --replay-ratio in [0, 1) and --rate not negative")
	}
	if o.users == 0 {
		o.users = 10 * o.claims
	}
	db, rdb, err := cli.OpenStores(ctx, o.databaseURL, o.redisURL, 4)
	if err != nil {
		return err
	}
	defer db.Close()
	defer rdb.Close()

	conn, err := a.client.ClientConn()
	if err != nil {
		return err
	}
	admin := dispenserv1.NewAdminServiceClient(conn)
	if o.poolID == "" {
		n := o.codes
		if n == 0 {
			n = int(float64(o.claims)*(1-o.replayRatio)) + 100
		}
		o.poolID = fmt.Sprintf("bench-%d", time.Now().UnixNano())
		fmt.Fprintf(a.stderr, "bench: creating pool %s with %s codes\n", o.poolID, cli.FormatInt(int64(n)))
		if err := a.createBenchPool(ctx, admin, o.poolID, n, o.shards, !o.defaultPool); err != nil {
			return err
		}
	}

	fmt.Fprintf(a.stderr, "bench: %s calls, %d callers, %s users, %.0f%% replays on pool %s\n",
		cli.FormatInt(int64(o.claims)), o.concurrency, cli.FormatInt(int64(o.users)), 100*o.replayRatio, o.poolID)
	cc := dispenserv1.NewClaimServiceClient(conn)
	claimFn := func(ctx context.Context, req claimReq) (string, bool, error) {
		resp, err := cc.ClaimCode(ctx, &dispenserv1.ClaimCodeRequest{PoolId: o.poolID, UserId: req.user, RequestId: req.id})
		return resp.GetClaim().GetCode(), resp.GetReplayed(), err
	}
	if o.httpURL != "" {
		if o.reserve {
			return fmt.Errorf("--reserve is gRPC only")
		}
		fmt.Fprintf(a.stderr, "bench: claims over HTTP/JSON at %s\n", o.httpURL)
		hc := newHTTPClaimer(o.httpURL, o.poolID, a.client.Conn.Key, o.concurrency)
		claimFn = func(ctx context.Context, req claimReq) (string, bool, error) { return hc.claim(ctx, req.user, req.id) }
	}
	if o.reserve {
		fmt.Fprintf(a.stderr, "bench: every request reserves, then confirms\n")
		claimFn = func(ctx context.Context, req claimReq) (string, bool, error) {
			r, err := cc.ReserveCode(ctx, &dispenserv1.ReserveCodeRequest{PoolId: o.poolID, UserId: req.user, RequestId: req.id})
			if err != nil {
				return "", false, err
			}
			resp, err := cc.ConfirmReservation(ctx, &dispenserv1.ConfirmReservationRequest{PoolId: o.poolID,
				UserId: req.user, RequestId: req.id})
			return resp.GetClaim().GetCode(), r.GetReplayed(), err
		}
	}
	led := runClaimLoad(ctx, o, claimFn)

	audit, err := claim.Audit(ctx, db, stock.New(rdb, stock.NewKeys(o.namespace)), o.poolID)
	if err != nil {
		return err
	}
	notCommitted, committedMismatch, err := checkCommitted(ctx, db, o.poolID, led)
	if err != nil {
		return err
	}
	res := benchResult{
		Pool:             o.poolID,
		Calls:            o.claims,
		Claims:           led.ok,
		ClaimsPerS:       float64(led.ok) / led.elapsed.Seconds(),
		P50ms:            led.percentile(0.50),
		P99ms:            led.percentile(0.99),
		Duplicates:       audit.Duplicates() + int64(led.codeTwice),
		Lost:             audit.Lost() + notCommitted,
		LimitViolations:  audit.UsersOverLimit,
		ReplayMismatches: int64(led.mismatch) + committedMismatch,
	}
	a.printBench(res, led, audit)

	line, err := json.Marshal(res)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, string(line))
	if res.Duplicates+res.Lost+res.LimitViolations+res.ReplayMismatches > 0 {
		return exitError{}
	}
	return nil
}

// createBenchPool creates pool id with n random codes, spread over shards
// Redis shards. With stage, its refill settings let one batch per shard
// stage them all, and they are staged before the load; without, it has the
// default settings and nothing is staged.
func (a *app) createBenchPool(ctx context.Context, admin dispenserv1.AdminServiceClient, id string, n, shards int, stage bool) error {
	p := &dispenserv1.Pool{Id: id, DisplayName: "benchmark", RedisShards: int32(shards)}
	if stage {
		p.RefillLowWater, p.RefillBatchSize = int32(min(n, pool.MaxRefillLowWater)), int32(min(n, pool.MaxRefillBatchSize))
	}
	if _, err := cli.Call(ctx, &a.client, admin.CreatePool, &dispenserv1.CreatePoolRequest{Pool: p}); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() {
		code := make([]byte, 16)
		var b strings.Builder
		for i := range n {
			b.Write(randomCode(code))
			b.WriteByte('\n')
			if b.Len() > 1<<20 || i == n-1 {
				if _, err := io.WriteString(pw, b.String()); err != nil {
					return
				}
				b.Reset()
			}
		}
		_ = pw.Close()
	}()
	resp, err := upload.Import(ctx, admin, &dispenserv1.ImportOptions{PoolId: id, Format: dispenserv1.ImportFormat_IMPORT_FORMAT_LINES, SourceName: "bench"}, pr, upload.NoProgress{})
	_ = pr.Close()
	if err != nil {
		return err
	}
	if resp.GetInserted() != int64(n) {
		return fmt.Errorf("bench pool %s: inserted %d of %d codes", id, resp.GetInserted(), n)
	}
	for staged := int64(0); stage && staged < int64(n); {
		r, err := cli.Call(ctx, &a.client, admin.RunJob, &dispenserv1.RunJobRequest{Job: dispenserv1.Job_JOB_REFILL, PoolId: id})
		if err != nil {
			return err
		}
		if len(r.GetPools()) == 0 || r.GetPools()[0].GetStaged() == 0 {
			break
		}
		staged += r.GetPools()[0].GetStaged()
	}
	return nil
}

type claimReq struct{ id, user string }

// loadLedger records what the callers saw.
type loadLedger struct {
	mu        sync.Mutex
	latencies []time.Duration
	answered  map[string]string // request id -> code
	owner     map[string]string // code -> request id
	ok        int
	replays   int
	mismatch  int
	codeTwice int
	refused   map[string]int // reason -> count
	elapsed   time.Duration
}

func (l *loadLedger) percentile(p float64) float64 {
	if len(l.latencies) == 0 {
		return 0
	}
	i := min(int(p*float64(len(l.latencies))), len(l.latencies)-1)
	return float64(l.latencies[i].Microseconds()) / 1000
}

// runClaimLoad drives claim from o.concurrency goroutines for o.claims calls.
// A share o.replayRatio of calls retries an earlier request id. Calls that
// fail Unavailable or DeadlineExceeded are retried with the same request id,
// as a lottery backend would, for up to o.retryFor. With o.rate set, requests
// start at most that many a second (their retries are not counted).
func runClaimLoad(ctx context.Context, o benchOpts, claimFn func(context.Context, claimReq) (string, bool, error)) *loadLedger {
	l := &loadLedger{answered: map[string]string{}, owner: map[string]string{}, refused: map[string]int{}}
	var pace *rate.Limiter
	if o.rate > 0 {
		pace = rate.NewLimiter(rate.Limit(o.rate), 1)
	}
	var issuedMu sync.Mutex
	var issued []claimReq
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for w := range o.concurrency {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w)+1, uint64(time.Now().UnixNano())))
			for next.Add(1) <= int64(o.claims) && ctx.Err() == nil {
				if pace != nil && pace.Wait(ctx) != nil {
					return
				}
				var req claimReq
				issuedMu.Lock()
				if len(issued) > 0 && rng.Float64() < o.replayRatio {
					req = issued[rng.IntN(len(issued))]
				} else {
					req = claimReq{id: fmt.Sprintf("b%d-%x", w, rng.Uint64()), user: fmt.Sprint("user-", rng.IntN(o.users))}
					issued = append(issued, req)
				}
				issuedMu.Unlock()

				t0 := time.Now()
				code, replayed, err := claimWithRetry(ctx, o, claimFn, req)
				took := time.Since(t0)

				l.mu.Lock()
				if err == nil {
					l.ok++
					l.latencies = append(l.latencies, took)
					if replayed {
						l.replays++
					}
					if prev, ok := l.answered[req.id]; ok {
						if prev != code {
							l.mismatch++
						}
					} else {
						l.answered[req.id] = code
						if other, taken := l.owner[code]; taken && other != req.id {
							l.codeTwice++
						}
						l.owner[code] = req.id
					}
				} else {
					l.refused[reasonOf(err)]++
				}
				l.mu.Unlock()
			}
		})
	}
	wg.Wait()
	l.elapsed = time.Since(start)
	slices.Sort(l.latencies)
	return l
}

func claimWithRetry(ctx context.Context, o benchOpts, claimFn func(context.Context, claimReq) (string, bool, error), req claimReq) (string, bool, error) {
	deadline := time.Now().Add(o.retryFor)
	backoff := 20 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, o.callTimeout)
		code, replayed, err := claimFn(cctx, req)
		cancel()
		c := status.Code(err)
		if err == nil || (c != codes.Unavailable && c != codes.DeadlineExceeded) || time.Now().After(deadline) || ctx.Err() != nil {
			return code, replayed, err
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
}

// reasonOf names a refusal by its ErrorInfo reason, else its code.
func reasonOf(err error) string {
	st := status.Convert(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return st.Code().String()
}

// checkCommitted compares every answer with Postgres: an answered request
// must have a committed claim (promise 3) with the answered code (promise 4).
func checkCommitted(ctx context.Context, db *pgxpool.Pool, poolID string, l *loadLedger) (notCommitted, mismatched int64, err error) {
	rows, err := db.Query(ctx, `SELECT c.request_id, k.code FROM claims c JOIN codes k ON k.id = c.code_id WHERE c.pool_id = $1`, poolID)
	if err != nil {
		return 0, 0, err
	}
	committed := map[string]string{}
	var rid, code string
	_, err = pgx.ForEachRow(rows, []any{&rid, &code}, func() error {
		committed[rid] = code
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	for id, c := range l.answered {
		got, ok := committed[id]
		switch {
		case !ok:
			notCommitted++
		case got != c:
			mismatched++
		}
	}
	return notCommitted, mismatched, nil
}

func (a *app) printBench(r benchResult, l *loadLedger, au claim.AuditReport) {
	w := a.stdout
	fmt.Fprintf(w, "pool %s: %s calls in %s\n", r.Pool, cli.FormatInt(int64(r.Calls)), l.elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "  answered   %s calls for %s requests (%s answered as replays): %s claims/s\n", cli.FormatInt(int64(l.ok)),
		cli.FormatInt(int64(len(l.answered))), cli.FormatInt(int64(l.replays)), cli.FormatInt(int64(r.ClaimsPerS)))
	fmt.Fprintf(w, "  latency    p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms\n",
		l.percentile(0.5), l.percentile(0.9), l.percentile(0.99), l.percentile(1))
	var refused []string
	for reason, n := range l.refused {
		refused = append(refused, fmt.Sprintf("%s %s", reason, cli.FormatInt(int64(n))))
	}
	slices.Sort(refused)
	if len(refused) > 0 {
		fmt.Fprintf(w, "  refused    %s\n", strings.Join(refused, ", "))
	}
	fmt.Fprintf(w, "audit: imported %s, available %s + staged %s + held %s + claimed %s + void %s (off by %d)\n",
		cli.FormatInt(au.Imported), cli.FormatInt(au.Available), cli.FormatInt(au.Staged), cli.FormatInt(au.Held),
		cli.FormatInt(au.Claimed), cli.FormatInt(au.Void), au.Unbalanced())
	fmt.Fprintf(w, "audit: redis list: %d entries staged twice, %d stale; %s in flight\n",
		au.RedisDuplicates, au.RedisStale, cli.FormatInt(au.RedisInFlight))
	if au.RedisError != "" {
		fmt.Fprintf(w, "audit: redis not audited: %s\n", au.RedisError)
	}
	fmt.Fprintf(w, "audit: duplicates %d, lost %d, limit violations %d, replay mismatches %d\n",
		r.Duplicates, r.Lost, r.LimitViolations, r.ReplayMismatches)
}
