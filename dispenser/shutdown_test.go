package dispenser_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/dispenserhq/dispenser/internal/testdaemon"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// Stopping the server (SIGTERM cancels Run's context) while claims are in
// flight: Run returns cleanly, and every claim a caller saw succeed is
// committed (durable before visible, also at shutdown).
func TestShutdownDrainsClaims(t *testing.T) {
	t.Parallel()
	d := testdaemon.Run(t, nil)
	addr, db, stop := d.Addr, d.DB, d.Stop
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	admin, cc := dispenserv1.NewAdminServiceClient(conn), dispenserv1.NewClaimServiceClient(conn)
	bg := context.Background()
	_, err = admin.CreatePool(bg, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "p1", RefillBatchSize: 20000}})
	require.NoError(t, err)
	s, err := admin.ImportCodes(bg)
	require.NoError(t, err)
	require.NoError(t, s.Send(&dispenserv1.ImportCodesRequest{Payload: &dispenserv1.ImportCodesRequest_Options{
		Options: &dispenserv1.ImportOptions{PoolId: "p1", Format: dispenserv1.ImportFormat_IMPORT_FORMAT_LINES}}}))
	var data strings.Builder
	for i := range 20000 {
		fmt.Fprintf(&data, "DRAIN-%06d\n", i)
	}
	require.NoError(t, s.Send(&dispenserv1.ImportCodesRequest{Payload: &dispenserv1.ImportCodesRequest_Data{Data: []byte(data.String())}}))
	_, err = s.CloseAndRecv()
	require.NoError(t, err)
	_, err = admin.RunJob(bg, &dispenserv1.RunJobRequest{Job: dispenserv1.Job_JOB_REFILL, PoolId: "p1"})
	require.NoError(t, err)

	var mu sync.Mutex
	answered := map[string]string{}
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := 0; ; i++ {
				rid := fmt.Sprintf("w%d-%d", w, i)
				resp, err := cc.ClaimCode(bg, &dispenserv1.ClaimCodeRequest{PoolId: "p1", UserId: rid, RequestId: rid})
				if err != nil {
					return // the server is going away
				}
				mu.Lock()
				answered[rid] = resp.GetClaim().GetCode()
				mu.Unlock()
			}
		})
	}
	// Stop once the load is well under way.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(answered) >= 50
	}, 30*time.Second, time.Millisecond)
	require.NoError(t, stop())
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, answered)
	rows, err := db.Pool.Query(bg, `SELECT c.request_id, k.code FROM claims c JOIN codes k ON k.id = c.code_id`)
	require.NoError(t, err)
	committed := map[string]string{}
	for rows.Next() {
		var rid, code string
		require.NoError(t, rows.Scan(&rid, &code))
		committed[rid] = code
	}
	require.NoError(t, rows.Err())
	for rid, code := range answered {
		require.Equal(t, code, committed[rid], "answered claim %s is not committed", rid)
	}
}
