package dispenser

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/dispenserhq/dispenser/internal/stock"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// HealthRedis is the health service name of the Redis component. It turns
// NOT_SERVING while Redis is down; the service as a whole keeps serving
// (claims fall back to Postgres), so load balancers should watch "".
const HealthRedis = "dispenser.redis"

// servingNames are the health names that follow Postgres: without it nothing
// can be claimed durably, so the whole service is NOT_SERVING.
var servingNames = []string{"", dispenserv1.ClaimService_ServiceDesc.ServiceName,
	dispenserv1.AdminService_ServiceDesc.ServiceName, dispenserv1.PrizeService_ServiceDesc.ServiceName}

// healthChecker pings Postgres and Redis and publishes what it finds.
type healthChecker struct {
	hs      *health.Server
	db      *pgxpool.Pool
	redis   *stock.Store
	timeout time.Duration
	log     *slog.Logger
	pgUp    *bool
	redisUp *bool
}

// check pings both stores once and sets the health statuses.
func (h *healthChecker) check(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, h.timeout)
	pgUp := h.db.Ping(pctx) == nil
	cancel()
	rctx, cancel := context.WithTimeout(ctx, h.timeout)
	redisUp := h.redis.Ping(rctx) == nil
	cancel()

	status := healthpb.HealthCheckResponse_SERVING
	if !pgUp {
		status = healthpb.HealthCheckResponse_NOT_SERVING
	}
	for _, name := range servingNames {
		h.hs.SetServingStatus(name, status)
	}
	rstatus := healthpb.HealthCheckResponse_SERVING
	if !redisUp {
		rstatus = healthpb.HealthCheckResponse_NOT_SERVING
	}
	h.hs.SetServingStatus(HealthRedis, rstatus)

	if h.pgUp == nil || *h.pgUp != pgUp {
		h.log.Log(ctx, levelFor(pgUp), "postgres health", "up", pgUp)
	}
	if h.redisUp == nil || *h.redisUp != redisUp {
		h.log.Log(ctx, levelFor(redisUp), "redis health", "up", redisUp, "note", "claims fall back to Postgres while Redis is down")
	}
	h.pgUp, h.redisUp = &pgUp, &redisUp
}

func levelFor(up bool) slog.Level {
	if up {
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

// run checks every period until ctx ends.
func (h *healthChecker) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.check(ctx)
		}
	}
}
