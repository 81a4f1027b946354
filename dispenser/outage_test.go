package dispenser_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/dispenser"
	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/internal/testdaemon"
	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// Postgres crashes under a running dispenserd and comes back. While it is
// down, every call that needs it is refused Unavailable with reason
// STORE_UNAVAILABLE, over gRPC and over HTTP (503), and the health service
// says NOT_SERVING; nothing is answered that Postgres did not commit. Once
// it is back, without a restart of dispenserd, the same request ids are
// answered, the claim made before the crash is still its request's, a hold
// taken before it can be confirmed, and the audit is clean.
func TestPostgresCrashUnderTheDaemon(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg := testenv.StartPostgresServer(t)
	db := testenv.PostgresOn(t, pg)
	rdb, ns := testenv.Redis(t)
	d := testdaemon.RunOn(t, db, ns, nil)
	conn, err := grpc.NewClient(d.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	admin, claims, health := dispenserv1.NewAdminServiceClient(conn), dispenserv1.NewClaimServiceClient(conn), healthpb.NewHealthClient(conn)

	_, err = admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "p"}})
	require.NoError(t, err)
	var file strings.Builder
	for i := range 50 {
		fmt.Fprintf(&file, "CRASH-%04d\n", i)
	}
	_, err = pool.NewStore(db.Pool).Import(ctx, pool.ImportOptions{PoolID: "p", Format: pool.FormatLines}, strings.NewReader(file.String()))
	require.NoError(t, err)
	claimCode := func(rid string) (*dispenserv1.Claim, error) {
		resp, err := claims.ClaimCode(ctx, &dispenserv1.ClaimCodeRequest{PoolId: "p", UserId: "user-" + rid, RequestId: rid})
		return resp.GetClaim(), err
	}
	claimHTTP := func(rid string) (int, http.Header, map[string]any) {
		body := fmt.Sprintf(`{"user_id":"user-%s","request_id":"%s"}`, rid, rid)
		resp, err := http.Post(d.HTTP+"/v1/pools/p/claims", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		out := map[string]any{}
		require.NoError(t, json.Unmarshal(raw, &out), "body %s", raw)
		return resp.StatusCode, resp.Header, out
	}
	// Every STORE_UNAVAILABLE refusal says how long to wait (RetryInfo).
	requireRetryAfter := func(err error) {
		t.Helper()
		var wait *durationpb.Duration
		for _, d := range status.Convert(err).Details() {
			if info, ok := d.(*errdetails.RetryInfo); ok {
				wait = info.GetRetryDelay()
			}
		}
		require.NotNil(t, wait, "no RetryInfo in %v", err)
		require.Equal(t, dispenser.StoreRetryDelay, wait.AsDuration())
	}
	serving := func() healthpb.HealthCheckResponse_ServingStatus {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		require.NoError(t, err)
		return resp.GetStatus()
	}
	before, err := claimCode("before")
	require.NoError(t, err)
	// A checkout holds a code before the crash and pays during it.
	_, err = claims.ReserveCode(ctx, &dispenserv1.ReserveCodeRequest{PoolId: "p", UserId: "user-hold", RequestId: "hold",
		HoldFor: durationpb.New(time.Minute)})
	require.NoError(t, err)
	confirm := func() (*dispenserv1.Claim, error) {
		resp, err := claims.ConfirmReservation(ctx, &dispenserv1.ConfirmReservationRequest{PoolId: "p", UserId: "user-hold", RequestId: "hold"})
		return resp.GetClaim(), err
	}

	pg.Crash()
	_, err = claimCode("during")
	requireStatus(t, err, codes.Unavailable, dispenser.ReasonStoreUnavailable, "")
	requireRetryAfter(err)
	require.NotContains(t, status.Convert(err).Message(), "CRASH-", "a refusal names no code")
	st, header, body := claimHTTP("during-http")
	require.Equal(t, http.StatusServiceUnavailable, st, "body %v", body)
	require.Equal(t, dispenser.ReasonStoreUnavailable, body["reason"], "body %v", body)
	require.Equal(t, "1", header.Get("Retry-After"))
	_, err = admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: "p"})
	requireStatus(t, err, codes.Unavailable, dispenser.ReasonStoreUnavailable, "")
	requireRetryAfter(err)
	_, err = confirm()
	requireStatus(t, err, codes.Unavailable, dispenser.ReasonStoreUnavailable, "")
	requireRetryAfter(err)
	h, err := admin.GetHealth(ctx, &dispenserv1.GetHealthRequest{})
	require.NoError(t, err, "GetHealth answers while Postgres is down")
	require.False(t, h.GetPostgresUp())
	require.True(t, h.GetRedisUp())
	require.Eventually(t, func() bool { return serving() == healthpb.HealthCheckResponse_NOT_SERVING }, 10*time.Second, 50*time.Millisecond)
	// A replay needs Postgres too: it may be answered (the claim is
	// committed) or refused, never with another code.
	if again, err := claimCode("before"); err == nil {
		require.Equal(t, before.GetCode(), again.GetCode())
		t.Log("the replay was answered while Postgres was down")
	} else {
		requireStatus(t, err, codes.Unavailable, dispenser.ReasonStoreUnavailable, "")
		t.Log("the replay was refused while Postgres was down")
	}

	pg.Start()
	restarted := time.Now()
	var during *dispenserv1.Claim
	require.Eventually(t, func() bool {
		during, err = claimCode("during")
		if status.Code(err) == codes.Unavailable {
			return false
		}
		require.NoError(t, err)
		return true
	}, 20*time.Second, 50*time.Millisecond, "claims resume once Postgres is back")
	t.Logf("claims resumed %v after Postgres accepted connections again", time.Since(restarted).Round(time.Millisecond))
	st, _, body = claimHTTP("during-http")
	require.Equal(t, http.StatusOK, st, "body %v", body)
	again, err := claimCode("before")
	require.NoError(t, err)
	require.Equal(t, before.GetCode(), again.GetCode(), "the claim made before the crash")
	require.NotEqual(t, before.GetCode(), during.GetCode())
	held, err := confirm()
	require.NoError(t, err, "the hold outlived the crash")
	require.NotContains(t, []string{before.GetCode(), during.GetCode()}, held.GetCode())
	again, err = confirm()
	require.NoError(t, err)
	require.Equal(t, held.GetCode(), again.GetCode())
	require.Eventually(t, func() bool { return serving() == healthpb.HealthCheckResponse_SERVING }, 10*time.Second, 50*time.Millisecond)

	_, err = admin.RunJob(ctx, &dispenserv1.RunJobRequest{Job: dispenserv1.Job_JOB_RECONCILE})
	require.NoError(t, err)
	rep, err := claim.Audit(ctx, db.Pool, stock.New(rdb, stock.NewKeys(ns)), "p")
	require.NoError(t, err)
	require.Zero(t, rep.Unbalanced(), "%+v", rep)
	require.Zero(t, rep.Duplicates(), "%+v", rep)
	require.Zero(t, rep.Lost(), "%+v", rep)
	require.EqualValues(t, 4, rep.Claimed, "%+v", rep)
}
