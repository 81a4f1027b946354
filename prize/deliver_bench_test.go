package prize_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
	"github.com/dispenserhq/dispenser/prize"
	"github.com/dispenserhq/dispenser/webhook"
)

// BenchmarkDeliver10k times one delivery run of 10,000 ready prizes to a
// local receiver that verifies every signature:
//
//	go test -run '^$' -bench Deliver10k -benchtime 1x ./prize
func BenchmarkDeliver10k(b *testing.B) {
	const n = 10_000
	ctx := context.Background()
	b.StopTimer()
	for range b.N {
		db := testenv.Postgres(b)
		rdb, ns := testenv.Redis(b)
		keys := stock.NewKeys(ns)
		svc := testenv.Must(claim.NewService(db.Pool, rdb, keys, claim.Config{Logger: slog.New(slog.DiscardHandler)}))
		if err := svc.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		var received atomic.Int64
		recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if webhook.Verify([]byte(secret), r.Header, body, time.Now(), time.Minute) != nil {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			received.Add(1)
		}))
		pools := pool.NewStore(db.Pool)
		_, err := pools.CreatePool(ctx, pool.Pool{ID: "bench", WebhookURL: recv.URL, WebhookSecret: secret})
		require.NoError(b, err)
		var codes strings.Builder
		for i := range n {
			fmt.Fprintf(&codes, "BENCH-PRIZE-%06d\n", i)
		}
		_, err = pools.Import(ctx, pool.ImportOptions{PoolID: "bench", Format: pool.FormatLines}, strings.NewReader(codes.String()))
		require.NoError(b, err)
		_, err = db.Pool.Exec(ctx, `INSERT INTO prizes (pool_id, user_id, external_id, state, details, ready_at)
			SELECT 'bench', 'winner-' || g, 'win-' || g, 'ready', '{}', now() FROM generate_series(1, $1) g`, n)
		require.NoError(b, err)
		d := prize.NewDeliverer(db.Pool, svc, claim.NewStager(db.Pool, rdb, keys, false), prize.DeliverConfig{
			Logger: slog.New(slog.NewTextHandler(b.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))})

		b.StartTimer()
		start := time.Now()
		reports, err := d.Run(ctx, "")
		took := time.Since(start)
		b.StopTimer()
		b.Logf("setup done; the run took %s", took)

		require.NoError(b, err)
		require.Equal(b, prize.DeliverReport{Assigned: n, Delivered: n}, reports["bench"])
		require.EqualValues(b, n, received.Load())
		b.ReportMetric(float64(n)/took.Seconds(), "prizes/s")
		b.ReportMetric(took.Seconds(), "s/run")
		recv.Close()
		svc.Stop()
	}
}
