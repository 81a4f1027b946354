package dispenser

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/internal/testenv"
)

// Health follows the stores: Postgres down is NOT_SERVING (nothing can be
// claimed durably); Redis down only marks its component, since the fallback
// serves.
func TestHealthFollowsStores(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.Postgres(t)
	rdb, _ := testenv.Redis(t)
	deadRedis := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { _ = deadRedis.Close() })
	deadPG, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:1/x?connect_timeout=1")
	require.NoError(t, err)
	t.Cleanup(deadPG.Close)

	status := func(hs *health.Server, name string) healthpb.HealthCheckResponse_ServingStatus {
		resp, err := hs.Check(ctx, &healthpb.HealthCheckRequest{Service: name})
		require.NoError(t, err)
		return resp.GetStatus()
	}
	for _, tt := range []struct {
		name         string
		db           *pgxpool.Pool
		rdb          redis.UniversalClient
		whole, redis healthpb.HealthCheckResponse_ServingStatus
	}{
		{"both up", db.Pool, rdb, healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_SERVING},
		{"redis down", db.Pool, deadRedis, healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_NOT_SERVING},
		{"postgres down", deadPG, rdb, healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVING},
	} {
		hs := health.NewServer()
		hc := &healthChecker{hs: hs, db: tt.db, redis: stock.New(tt.rdb, stock.NewKeys("health")), timeout: time.Second, log: slog.New(slog.DiscardHandler)}
		hc.check(ctx)
		for _, name := range servingNames {
			require.Equal(t, tt.whole, status(hs, name), "%s: %q", tt.name, name)
		}
		require.Equal(t, tt.redis, status(hs, HealthRedis), tt.name)
	}
}
