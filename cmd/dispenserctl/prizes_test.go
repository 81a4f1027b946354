package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func TestPrizesAndDeliverCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	addr := startServer(t)
	var failing atomic.Bool
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(recv.Close)

	_, _, err := ctl(t, addr, "pools", "create", "p1", "--webhook-url", recv.URL, "--webhook-secret", "0123456789abcdef-secret")
	require.NoError(t, err)
	file := t.TempDir() + "/codes.txt"
	require.NoError(t, os.WriteFile(file, []byte("PRIZE-CODE-0001\nPRIZE-CODE-0002\nPRIZE-CODE-0003\n"), 0o600))
	_, _, err = ctl(t, addr, "import", "--pool", "p1", file)
	require.NoError(t, err)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	pc := dispenserv1.NewPrizeServiceClient(conn)
	var ids []string
	for i := range 2 {
		r, err := pc.RecordPrize(ctx, &dispenserv1.RecordPrizeRequest{PoolId: "p1", UserId: fmt.Sprint("w", i), ExternalId: fmt.Sprint("e", i)})
		require.NoError(t, err)
		_, err = pc.MarkPrizeReady(ctx, &dispenserv1.MarkPrizeReadyRequest{PrizeId: r.GetPrize().GetId()})
		require.NoError(t, err)
		ids = append(ids, r.GetPrize().GetId())
	}

	out, _, err := ctl(t, addr, "jobs", "run", "deliver")
	require.NoError(t, err)
	require.Regexp(t, `p1\s+2\s+2\s+0\s+0`, out)
	out, _, err = ctl(t, addr, "prizes", "list", "--pool", "p1", "--state", "delivered")
	require.NoError(t, err)
	require.Equal(t, 3, strings.Count(out, "\n"), out)
	out, _, err = ctl(t, addr, "prizes", "get", ids[0])
	require.NoError(t, err)
	require.Contains(t, out, "(assigned; --show-code prints it)")
	require.NotContains(t, out, "PRIZE-CODE-")
	out, _, err = ctl(t, addr, "prizes", "get", ids[0], "--show-code")
	require.NoError(t, err)
	require.Contains(t, out, "PRIZE-CODE-")

	// A receiver that fails: the prize is parked, then retried once it works.
	failing.Store(true)
	r, err := pc.RecordPrize(ctx, &dispenserv1.RecordPrizeRequest{PoolId: "p1", UserId: "w9", ExternalId: "e9"})
	require.NoError(t, err)
	_, err = pc.MarkPrizeReady(ctx, &dispenserv1.MarkPrizeReadyRequest{PrizeId: r.GetPrize().GetId()})
	require.NoError(t, err)
	out, _, err = ctl(t, addr, "jobs", "run", "deliver", "--pool", "p1")
	require.NoError(t, err)
	require.Regexp(t, `p1\s+1\s+0\s+1\s+1`, out)
	out, _, err = ctl(t, addr, "prizes", "list", "--pool", "p1", "--state", "failed")
	require.NoError(t, err)
	require.Contains(t, out, "WEBHOOK_FAILED")
	require.Contains(t, out, "HTTP 502")
	failing.Store(false)
	out, _, err = ctl(t, addr, "prizes", "retry", r.GetPrize().GetId())
	require.NoError(t, err)
	require.Contains(t, out, "assigned")
	out, _, err = ctl(t, addr, "jobs", "run", "deliver")
	require.NoError(t, err)
	require.Regexp(t, `p1\s+0\s+1\s+0\s+0`, out)
	_, errOut, err := ctl(t, addr, "prizes", "list", "--pool", "p1", "--state", "lost")
	require.Error(t, err)
	require.Contains(t, errOut, "--state must be")
}
