package dispenser_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/dispenser"
	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/internal/testdaemon"
	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/internal/upload"
	"github.com/dispenserhq/dispenser/jobs"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// roundRobin dials the replicas the way the docs tell clients to: one
// channel, gRPC's round_robin balancer over every replica's address.
func roundRobin(t *testing.T, daemons []testdaemon.Daemon) *grpc.ClientConn {
	t.Helper()
	r := manual.NewBuilderWithScheme("replicas" + strings.ToLower(testenv.Unique("")))
	var addrs []resolver.Address
	for _, d := range daemons {
		addrs = append(addrs, resolver.Address{Addr: d.Addr})
	}
	r.InitialState(resolver.State{Addresses: addrs})
	conn, err := grpc.NewClient(r.Scheme()+":///dispenser", grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// replicaJobs runs every job often, on every replica: each must run once
// at a time across them.
func replicaJobs(c *dispenser.Config) {
	c.NoJobs = false
	c.Jobs = jobs.Config{RefillEvery: 100 * time.Millisecond, ReconcileEvery: 300 * time.Millisecond,
		ReconcileGrace: 2 * time.Second, ExpireHoldsEvery: 100 * time.Millisecond}
}

// storm sends calls claims and reservations (a third of them a reserve and
// its confirm) from many callers through conn, a quarter of them retries of
// earlier request ids (so copies of one request reach different replicas);
// calls failing Unavailable are retried with the same request id. during
// runs once, at the middle. It returns the code answered per request id
// and fails the test if one request got two.
func storm(t *testing.T, conn *grpc.ClientConn, poolID string, calls int, during func()) map[string]string {
	t.Helper()
	cc := dispenserv1.NewClaimServiceClient(conn)
	var mu sync.Mutex
	answered := map[string]string{}
	owner := map[string]string{}
	var issued []string
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	for w := range 32 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 11))
			for {
				i := next.Add(1)
				if i > int64(calls) {
					return
				}
				if i == int64(calls/2) && during != nil {
					once.Do(during)
				}
				mu.Lock()
				var rid string
				if len(issued) > 0 && rng.IntN(4) == 0 {
					rid = issued[rng.IntN(len(issued))]
				} else {
					rid = fmt.Sprintf("r%d-%d", w, i)
					issued = append(issued, rid)
				}
				mu.Unlock()
				user := "u-" + rid
				var code string
				err := retryUnavailable(func(ctx context.Context) error {
					if strings.HasSuffix(rid, "0") || strings.HasSuffix(rid, "3") || strings.HasSuffix(rid, "7") {
						if _, err := cc.ReserveCode(ctx, &dispenserv1.ReserveCodeRequest{PoolId: poolID, UserId: user, RequestId: rid}); err != nil {
							return err
						}
						r, err := cc.ConfirmReservation(ctx, &dispenserv1.ConfirmReservationRequest{PoolId: poolID, RequestId: rid, UserId: user})
						code = r.GetClaim().GetCode()
						return err
					}
					r, err := cc.ClaimCode(ctx, &dispenserv1.ClaimCodeRequest{PoolId: poolID, UserId: user, RequestId: rid})
					code = r.GetClaim().GetCode()
					return err
				})
				if status.Code(err) == codes.ResourceExhausted {
					continue
				}
				if err != nil {
					t.Errorf("request %s: %v", rid, err)
					return
				}
				mu.Lock()
				if prev, ok := answered[rid]; ok && prev != code {
					t.Errorf("request %s answered two codes", rid)
				}
				if o, ok := owner[code]; ok && o != rid {
					t.Errorf("a code answered to %s and %s", o, rid)
				}
				answered[rid], owner[code] = code, rid
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return answered
}

// retryUnavailable calls fn until it answers anything but Unavailable (a
// replica going away, a pool's codes in flight), for up to 20 seconds.
func retryUnavailable(fn func(ctx context.Context) error) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := fn(ctx)
		cancel()
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// createAndFill creates a pool through conn and imports n codes.
func createAndFill(t *testing.T, conn *grpc.ClientConn, poolID string, n int) {
	t.Helper()
	ctx := context.Background()
	admin := dispenserv1.NewAdminServiceClient(conn)
	_, err := admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: poolID, RefillBatchSize: 500}})
	require.NoError(t, err)
	var data strings.Builder
	for i := range n {
		fmt.Fprintf(&data, "%s-%06d\n", poolID, i)
	}
	_, err = upload.Import(ctx, admin, &dispenserv1.ImportOptions{PoolId: poolID, Format: dispenserv1.ImportFormat_IMPORT_FORMAT_LINES},
		strings.NewReader(data.String()), upload.NoProgress{})
	require.NoError(t, err)
}

// auditClean reconciles and audits a pool straight from the stores.
func auditClean(t *testing.T, d testdaemon.Daemon, poolID string, answered map[string]string) {
	t.Helper()
	ctx := context.Background()
	rdb, _ := testenv.Redis(t)
	st := stock.New(rdb, stock.NewKeys(d.Namespace))
	var rep claim.AuditReport
	require.Eventually(t, func() bool {
		var err error
		rep, err = claim.Audit(ctx, d.DB.Pool, st, poolID)
		require.NoError(t, err)
		return rep.RedisInFlight == 0 && rep.Held == 0
	}, 20*time.Second, 100*time.Millisecond, "in flight or held left: %+v", rep)
	require.Zero(t, rep.Duplicates(), "%+v", rep)
	require.Zero(t, rep.Lost(), "%+v", rep)
	require.Zero(t, rep.UsersOverLimit)
	require.Zero(t, rep.RedisDuplicates)
	require.EqualValues(t, len(answered), rep.Claimed, "every claim answered, every answer a claim")
}

// Three replicas on one Postgres and one Redis, every job scheduled on each,
// a client balancing round-robin over them; one replica stops mid-storm.
// Copies of a request reach different replicas and get one answer; the jobs
// run once at a time (no code staged twice); every promise holds.
func TestReplicasBehindRoundRobin(t *testing.T) {
	t.Parallel()
	daemons := testdaemon.Replicas(t, 3, func(_ int, c *dispenser.Config) { replicaJobs(c) })
	conn := roundRobin(t, daemons)
	createAndFill(t, conn, "storm", 2500)
	answered := storm(t, conn, "storm", 3000, func() { require.NoError(t, daemons[2].Stop()) })
	auditClean(t, daemons[0], "storm", answered)
}

// Two replicas whose claim path goes through PgBouncer in transaction
// pooling mode (their sessions, for imports and job locks, go direct):
// imports, generation, claims, reservations and every job work, and every
// promise holds.
func TestReplicasThroughPgBouncer(t *testing.T) {
	t.Parallel()
	db := testenv.Postgres(t)
	_, ns := testenv.Redis(t)
	bouncer := testenv.StartPgBouncer(t, db)
	var daemons []testdaemon.Daemon
	for range 2 {
		daemons = append(daemons, testdaemon.RunOn(t, db, ns, func(c *dispenser.Config) {
			replicaJobs(c)
			c.DatabaseURL, c.DatabaseDirectURL = bouncer.URL, db.URL
		}))
	}
	conn := roundRobin(t, daemons)
	createAndFill(t, conn, "bounced", 2000)
	s, err := dispenserv1.NewAdminServiceClient(conn).GenerateCodes(context.Background(),
		&dispenserv1.GenerateCodesRequest{PoolId: "bounced", Count: 500, Pattern: "GEN-####-####-####"})
	require.NoError(t, err)
	for {
		m, err := s.Recv()
		require.NoError(t, err)
		if m.GetSummary() != nil {
			require.EqualValues(t, 500, m.GetSummary().GetInserted())
			break
		}
	}
	answered := storm(t, conn, "bounced", 2500, nil)
	auditClean(t, daemons[0], "bounced", answered)
}
