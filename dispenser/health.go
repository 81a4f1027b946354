package dispenser

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/jobs"

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

// jobLog keeps the last run of each job on this replica, for GetHealth.
type jobLog struct {
	mu   sync.Mutex
	jobs map[jobs.Name]*jobRecord
}

type jobRecord struct {
	start    time.Time
	took     time.Duration
	result   string
	err      string
	runs     int64
	failures int64
	changes  map[string]int64
}

// observe records one run; errText turns an error into the text callers
// may see.
func (l *jobLog) observe(name jobs.Name, reports []jobs.PoolReport, err error, took time.Duration, errText func(error) string) {
	rec := jobRecord{start: time.Now().Add(-took), took: took, result: "ok", changes: map[string]int64{}}
	switch {
	case errors.Is(err, jobs.ErrBusy):
		rec.result = "busy"
	case err != nil:
		rec.result, rec.err = "error", errText(err)
	}
	for _, r := range reports {
		if r.Err != nil && rec.err == "" {
			rec.result, rec.err = "error", r.PoolID+": "+errText(r.Err)
		}
		for kind, n := range codeChanges(r) {
			if n > 0 {
				rec.changes[kind] += n
			}
		}
		for outcome, n := range prizeOutcomes(r) {
			if n > 0 {
				rec.changes["prizes_"+outcome] += n
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.jobs == nil {
		l.jobs = map[jobs.Name]*jobRecord{}
	}
	prev := l.jobs[name]
	if prev != nil {
		rec.runs, rec.failures = prev.runs, prev.failures
	}
	rec.runs++
	if rec.result == "error" {
		rec.failures++
	}
	l.jobs[name] = &rec
}

// statuses returns every job's last run, by job name; jobs that have not
// run here are listed without one.
func (l *jobLog) statuses() []*dispenserv1.JobStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*dispenserv1.JobStatus
	for _, name := range []jobs.Name{jobs.Deliver, jobs.ExpireHolds, jobs.Reconcile, jobs.Refill} {
		st := &dispenserv1.JobStatus{Job: string(name)}
		if rec := l.jobs[name]; rec != nil {
			st.LastStart, st.LastDuration = timestamppb.New(rec.start), durationpb.New(rec.took)
			st.LastResult, st.LastError, st.Runs, st.Failures = rec.result, rec.err, rec.runs, rec.failures
			st.LastChanges = maps.Clone(rec.changes)
		}
		out = append(out, st)
	}
	return out
}

// replicaName is this process's name in GetHealth: host name and pid.
var replicaName = func() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown-host"
	}
	return host + ":" + strconv.Itoa(os.Getpid())
}()

// GetHealth implements AdminService.GetHealth: what this replica sees now.
func (s *Server) GetHealth(ctx context.Context, _ *dispenserv1.GetHealthRequest) (*dispenserv1.GetHealthResponse, error) {
	out := &dispenserv1.GetHealthResponse{Replica: replicaName, CheckTime: timestamppb.Now()}
	pctx, cancel := context.WithTimeout(ctx, s.redisTimeout)
	out.PostgresUp = s.db.Ping(pctx) == nil
	cancel()
	rctx, cancel := context.WithTimeout(ctx, s.redisTimeout)
	out.RedisUp = s.stock.Ping(rctx) == nil
	cancel()
	for _, b := range s.claims.Breakers() {
		out.Breakers = append(out.Breakers, &dispenserv1.BreakerStatus{Shard: b.Shard, State: b.State})
	}
	out.Jobs = s.jobLog.statuses()
	out.ClaimPaths = s.metrics.claimPaths()
	return out, nil
}
