// Package dispenser is the gRPC service: the claim, admin and prize APIs on
// top of the pool store, Redis and the jobs.
package dispenser

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/jobs"
	"github.com/dispenserhq/dispenser/pool"
	"github.com/dispenserhq/dispenser/prize"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// ServerConfig holds what the gRPC handlers need.
type ServerConfig struct {
	// DB is the Postgres pool; its schema must be migrated. It may reach
	// the database through a transaction pooler if SessionDB does not.
	DB *pgxpool.Pool
	// SessionDB reaches the same database without a transaction pooler,
	// for imports (a temporary table across statements) and the jobs'
	// advisory locks; default DB.
	SessionDB *pgxpool.Pool
	// Redis is the fast allocator's store. Cluster or single node.
	Redis redis.UniversalClient
	// RedisNamespace prefixes every Redis key; default "dispenser".
	RedisNamespace string
	// RedisTimeout bounds each Redis call made for stats; default 500ms.
	RedisTimeout time.Duration
	// MaxImportBytes bounds one import file; default 1 GiB.
	MaxImportBytes int64
	// AllowInsecureWebhooks accepts, and delivers to, plain-http webhook
	// URLs to any host. Off, plain http is only for loopback hosts.
	AllowInsecureWebhooks bool
	// Claims tunes the claim service (its DB, Redis, keys and logger are
	// filled in from this config).
	Claims claim.Config
	// Jobs tunes the scheduled jobs (DB, claims, deliverer and logger are
	// filled in).
	Jobs jobs.Config
	// Deliver tunes prize delivery (DB, claims and logger are filled in).
	Deliver prize.DeliverConfig
	// Logger receives the service's logs; default slog.Default().
	Logger *slog.Logger
}

// Server implements the dispenser.v1 services.
type Server struct {
	dispenserv1.UnimplementedAdminServiceServer
	dispenserv1.UnimplementedClaimServiceServer
	dispenserv1.UnimplementedPrizeServiceServer

	pools        *pool.Store
	prizes       *prize.Store
	apiKeys      *auth.Store
	claims       *claim.Service
	claimReads   *claim.Reads
	jobs         *jobs.Runner
	stock        *stock.Store
	keys         stock.Keys
	metrics      *Metrics
	jobLog       jobLog
	db           *pgxpool.Pool
	redisTimeout time.Duration
	maxImport    int64
	log          *slog.Logger
	// insecureWebhooks allows plain-http webhook URLs to any host.
	insecureWebhooks bool
}

var (
	_ dispenserv1.AdminServiceServer = (*Server)(nil)
	_ dispenserv1.ClaimServiceServer = (*Server)(nil)
	_ dispenserv1.PrizeServiceServer = (*Server)(nil)
)

// NewServer validates cfg and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.DB == nil {
		return nil, errors.New("dispenser: ServerConfig.DB is required")
	}
	if cfg.Redis == nil {
		return nil, errors.New("dispenser: ServerConfig.Redis is required")
	}
	s := &Server{
		pools:        pool.NewStore(cfg.DB).WithSession(cfg.SessionDB),
		prizes:       prize.NewStore(cfg.DB),
		apiKeys:      auth.NewStore(cfg.DB),
		db:           cfg.DB,
		keys:         stock.NewKeys(cmp.Or(cfg.RedisNamespace, "dispenser")),
		redisTimeout: cmp.Or(cfg.RedisTimeout, 500*time.Millisecond),
		maxImport:    cmp.Or(cfg.MaxImportBytes, MaxImportBytesDefault),
		log:          cmp.Or(cfg.Logger, slog.Default()),

		insecureWebhooks: cfg.AllowInsecureWebhooks,
	}
	s.stock = stock.New(cfg.Redis, s.keys)
	s.metrics = NewMetrics(func() string { return s.claims.BreakerState() })
	cc := cfg.Claims
	cc.Logger = cmp.Or(cc.Logger, s.log)
	cc.RedisAllocator.Commit.OnBatch = func(n int, took time.Duration) {
		s.metrics.batchSize.Observe(float64(n))
		s.metrics.commitSeconds.Observe(took.Seconds())
	}
	claims, err := claim.NewService(cfg.DB, cfg.Redis, s.keys, cc)
	if err != nil {
		return nil, err
	}
	s.claims = claims
	s.claimReads = claim.NewReads(cfg.DB)
	stager := claim.NewStager(cfg.DB, cfg.Redis, s.keys, cc.FallbackOnly)
	dc := cfg.Deliver
	dc.Logger = cmp.Or(dc.Logger, s.log)
	dc.AllowInsecureWebhooks = dc.AllowInsecureWebhooks || cfg.AllowInsecureWebhooks
	deliverer := prize.NewDeliverer(cfg.DB, s.claims, stager, dc)
	jc := cfg.Jobs
	jc.Logger = cmp.Or(jc.Logger, s.log)
	jc.Observe = func(name jobs.Name, reports []jobs.PoolReport, err error, took time.Duration) {
		s.metrics.observeJob(name, reports, err, took)
		s.jobLog.observe(name, reports, err, took, func(err error) string {
			return status.Convert(statusError(context.Background(), s.log, err)).Message()
		})
	}
	jc.SessionDB = cmp.Or(jc.SessionDB, cfg.SessionDB)
	s.jobs = jobs.New(cfg.DB, stager, claim.NewReconciler(cfg.DB, cfg.Redis, s.keys), deliverer, jc)
	return s, nil
}

// Metrics are the server's Prometheus metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Start starts the claim service (its Redis sender and group committer);
// Stop ends it.
func (s *Server) Start(ctx context.Context) error { return s.claims.Start(ctx) }

// StartJobs schedules refill and reconcile with ctx until Stop.
func (s *Server) StartJobs(ctx context.Context) error { return s.jobs.Start(ctx) }

// StopJobs stops scheduling jobs and waits for the running ones, up to
// ctx.
func (s *Server) StopJobs(ctx context.Context) { s.jobs.Stop(ctx) }

// StopClaims commits the claims still in the group committer and stops
// the claim service. Call it after the gRPC server has drained.
func (s *Server) StopClaims() { s.claims.Stop() }

// Stop is StopJobs, then StopClaims.
func (s *Server) Stop(ctx context.Context) {
	s.StopJobs(ctx)
	s.StopClaims()
}

// Register adds the dispenser.v1 services to a gRPC server.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	dispenserv1.RegisterAdminServiceServer(g, s)
	dispenserv1.RegisterClaimServiceServer(g, s)
	dispenserv1.RegisterPrizeServiceServer(g, s)
}
