package dispenser

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/console"
	"github.com/dispenserhq/dispenser/internal/input"
	"github.com/dispenserhq/dispenser/internal/rpcerr"
	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/jobs"
	"github.com/dispenserhq/dispenser/migrations"
	"github.com/dispenserhq/dispenser/prize"
)

// Config configures a dispenserd process.
type Config struct {
	// DatabaseURL is the Postgres connection string (source of truth). It
	// may reach a pooler in transaction mode (PgBouncer) when
	// DatabaseDirectURL is set.
	DatabaseURL string
	// DatabaseDirectURL, if set, reaches the same database without a
	// transaction pooler, for the work that needs one session across
	// statements: migrations, imports (a temporary table) and the jobs'
	// advisory locks. DatabaseURL then carries the claim path, with pgx's
	// statements described and executed unnamed (no prepared statement
	// outlives its transaction).
	DatabaseDirectURL string
	// RedisURL is the Redis connection string (fast allocator).
	RedisURL string
	// RedisNamespace prefixes every Redis key; default "dispenser".
	RedisNamespace string
	// Listen is the gRPC listen address, e.g. "127.0.0.1:50051". Ignored
	// when Listener is set.
	Listen string
	// Listener, if set, is served instead of listening on Listen; tests use
	// it to learn the address of port 0.
	Listener net.Listener
	// Migrate applies pending migrations at start-up, under tern's advisory
	// lock so that replicas starting together do not race.
	Migrate bool
	// Reflection registers the gRPC reflection service (for grpcurl).
	Reflection bool
	// ShutdownTimeout bounds the graceful drain on shutdown before in-flight
	// calls are cut; default 30s.
	ShutdownTimeout time.Duration
	// Claims tunes the claim path (group commit, breaker, pool cache).
	Claims claim.Config
	// Jobs tunes refill, reconcile and the deliver schedule.
	Jobs jobs.Config
	// Deliver tunes prize delivery (attempts, backoff, webhook timeout).
	Deliver prize.DeliverConfig
	// NoJobs leaves the scheduled jobs off (RunJob still works).
	NoJobs bool
	// TLS turns on TLS, or mTLS, on the gRPC listener.
	TLS TLSConfig
	// MaxImportBytes bounds one import file; default 1 GiB.
	MaxImportBytes int64
	// AllowInsecureWebhooks accepts, and delivers to, plain-http webhook
	// URLs to any host (TLS terminated elsewhere on a trusted network).
	AllowInsecureWebhooks bool
	// NoAuth serves without API keys: anyone who reaches the port may do
	// anything. Only for a trusted network or behind mTLS.
	NoAuth bool
	// RateLimit and RateBurst are the default per-key request rate (per
	// second) and burst; keys may set their own. 0 rate: unlimited.
	RateLimit float64
	RateBurst int
	// MaxConnections bounds the connections each listener (gRPC, HTTP/JSON,
	// console) serves at once; more wait in the listen backlog. Defaults to
	// MaxConnectionsDefault.
	MaxConnections int
	// HTTPBodyTimeout bounds how long an HTTP/JSON request, or the
	// console's sign-in form, may take to send its body once its headers
	// are in (imports excepted: they stream files); defaults to
	// HTTPBodyTimeoutDefault.
	HTTPBodyTimeout time.Duration
	// MaxConcurrentStreams bounds the calls in flight on one connection;
	// defaults to MaxConcurrentStreamsDefault.
	MaxConcurrentStreams uint32
	// HTTPListen is the address of the HTTP/JSON API (gateway.go), beside
	// the gRPC one, with the same TLS; empty leaves it off.
	HTTPListen string
	// HTTPListener, if set, is served instead of listening on HTTPListen.
	HTTPListener net.Listener
	// ConsoleListen is the address of the web console (package console),
	// with the gRPC listener's TLS; empty leaves it off.
	ConsoleListen string
	// ConsoleListener, if set, is served instead of listening on
	// ConsoleListen.
	ConsoleListener net.Listener
	// MetricsListen is the address of the Prometheus /metrics listener,
	// separate from the API; empty leaves it off.
	MetricsListen string
	// Logger receives logs; default slog.Default().
	Logger *slog.Logger
}

// defaultMaxConns is the Postgres pool size unless the URL sets
// pool_max_conns.
const defaultMaxConns = 32

// maxRecvMsgBytes bounds one incoming message; import chunks are far smaller.
const maxRecvMsgBytes = 8 << 20

// maxHeaderListBytes bounds a call's headers (its metadata, method name and
// key), as the HTTP server's MaxHeaderBytes does; gRPC's own default is
// 16 MiB per call.
const maxHeaderListBytes = 64 << 10

// Connection limits: what one host may hold open, so that a flood of
// connections or streams costs a bounded amount of memory.
const (
	MaxConnectionsDefault       = 4096
	MaxConcurrentStreamsDefault = 1024
	// ShutdownTimeoutDefault is how long SIGTERM waits for in-flight calls.
	ShutdownTimeoutDefault = 30 * time.Second
	// MaxImportBytesDefault is the largest import file accepted.
	MaxImportBytesDefault = 1 << 30
	// HTTPBodyTimeoutDefault is how long an HTTP/JSON body (at most 1 MiB)
	// may take to arrive: a caller that trickles it holds a connection.
	HTTPBodyTimeoutDefault = 30 * time.Second
	// Clients may ping no more often than this (grpc-go clients never go
	// below 10s); a client that does is sent GOAWAY.
	minClientPingInterval = 5 * time.Second
	// Idle connections are closed after this; handshakes must finish
	// within handshakeTimeout.
	maxConnectionIdle = 15 * time.Minute
	handshakeTimeout  = 10 * time.Second
)

// Run connects to Postgres and Redis, migrates if asked, and serves gRPC
// until ctx ends; then it stops taking calls, drains the ones in flight for
// up to ShutdownTimeout and returns.
func Run(ctx context.Context, cfg Config) error {
	log := cmp.Or(cfg.Logger, slog.Default())
	db, err := OpenDB(ctx, cfg.DatabaseURL, cfg.DatabaseDirectURL != "")
	if err != nil {
		return err
	}
	defer db.Close()
	session := db
	if cfg.DatabaseDirectURL != "" {
		if session, err = OpenDB(ctx, cfg.DatabaseDirectURL, false); err != nil {
			return err
		}
		defer session.Close()
		log.InfoContext(ctx, "database behind a transaction pooler: sessions (migrations, imports, job locks) go direct")
	}
	if cfg.Migrate {
		if err := MigrateDB(ctx, session, log); err != nil {
			return err
		}
	}
	warnIfNoAutovacuum(ctx, db, log)
	rdb, err := OpenRedis(cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()

	srv, err := NewServer(ServerConfig{DB: db, SessionDB: session, Redis: rdb, RedisNamespace: cfg.RedisNamespace, Logger: log,
		Claims: cfg.Claims, Jobs: cfg.Jobs, Deliver: cfg.Deliver, MaxImportBytes: cfg.MaxImportBytes,
		AllowInsecureWebhooks: cfg.AllowInsecureWebhooks})
	if err != nil {
		return err
	}
	lis := cfg.Listener
	if lis == nil {
		if lis, err = net.Listen("tcp", cmp.Or(cfg.Listen, "127.0.0.1:50051")); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	maxConns := cmp.Or(cfg.MaxConnections, MaxConnectionsDefault)
	lis = netutil.LimitListener(lis, maxConns)
	grpcOpts := []grpc.ServerOption{grpc.MaxConcurrentStreams(cmp.Or(cfg.MaxConcurrentStreams, MaxConcurrentStreamsDefault))}
	unary := baseUnary(log)    // what every call goes through; the gateway's direct claims too
	var authz *auth.Authorizer // nil when authentication is off
	if cfg.NoAuth {
		log.WarnContext(ctx, "authentication is OFF: anyone who reaches the port may claim and administer")
	} else {
		a := auth.New(auth.Config{Store: auth.NewStore(db), Rate: cfg.RateLimit, Burst: cfg.RateBurst, Logger: log})
		authz = a
		grpcOpts = append(grpcOpts, grpc.ChainUnaryInterceptor(a.Unary()), grpc.ChainStreamInterceptor(a.Stream()))
		unary = append(unary, a.Unary())
	}
	// The HTTP/JSON API calls an in-process gRPC server with the same
	// services and interceptors, without transport security (its
	// connection never leaves the process).
	var ip *inProcess
	if cfg.HTTPListen != "" || cfg.HTTPListener != nil || cfg.ConsoleListen != "" || cfg.ConsoleListener != nil {
		inner := NewGRPCServer(log, append(inProcessServerOptions(), grpcOpts...)...)
		srv.Register(inner)
		if ip, err = newInProcess(inner, log); err != nil {
			return err
		}
	}
	var gw *gateway
	if cfg.HTTPListen != "" || cfg.HTTPListener != nil {
		if gw, err = newGateway(ip.conn, srv, unary, cmp.Or(cfg.MaxImportBytes, MaxImportBytesDefault),
			cmp.Or(cfg.HTTPBodyTimeout, HTTPBodyTimeoutDefault)); err != nil {
			return err
		}
	}
	var con *console.Console
	if cfg.ConsoleListen != "" || cfg.ConsoleListener != nil {
		if con, err = newConsole(ip.conn, authz, cfg, log); err != nil {
			return err
		}
	}
	var serverTLS *tls.Config
	if cfg.TLS.Enabled() {
		if serverTLS, err = cfg.TLS.ServerTLS(); err != nil {
			return err
		}
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(serverTLS)))
	}
	g := NewGRPCServer(log, grpcOpts...)
	srv.Register(g)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	hc := &healthChecker{hs: hs, db: db, redis: stock.New(rdb, stock.NewKeys(cfg.RedisNamespace)), timeout: 2 * time.Second, log: log}
	hc.check(ctx)
	if cfg.Reflection {
		reflection.Register(g)
	}

	// The parts start in this order and stop in the reverse one: the API
	// last up and first down (health NOT_SERVING, then the calls in flight
	// drain), the claim service first up and last down (the last group
	// commit runs after every call has ended).
	serveErr := make(chan error, 2)
	parts := []part{
		{"claims", srv.Start, func(context.Context) { srv.StopClaims() }},
	}
	if !cfg.NoJobs {
		parts = append(parts, part{"jobs", srv.StartJobs, srv.StopJobs})
	}
	parts = append(parts, healthPart(hc), metricsPart(cfg.MetricsListen, srv, log, serveErr))
	parts = append(parts, part{"grpc",
		func(context.Context) error {
			go func() {
				if err := g.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
					serveErr <- fmt.Errorf("serve: %w", err)
				}
			}()
			log.InfoContext(ctx, "dispenserd serving", "addr", lis.Addr().String())
			return nil
		},
		func(deadline context.Context) {
			hs.Shutdown() // tell load balancers first
			log.Info("shutting down: draining in-flight calls")
			drained := make(chan struct{})
			go func() { g.GracefulStop(); close(drained) }()
			select {
			case <-drained:
			case <-deadline.Done():
				log.Warn("shutdown deadline passed: cutting remaining calls")
				g.Stop()
				<-drained
			}
		}})
	if ip != nil {
		parts = append(parts, ip.part())
	}
	if gw != nil {
		parts = append(parts, listenerPart("http api", cfg.HTTPListen, cfg.HTTPListener, maxConns, serverTLS, gw.handler, log, serveErr))
	}
	if con != nil {
		parts = append(parts, listenerPart("console", cfg.ConsoleListen, cfg.ConsoleListener, maxConns, serverTLS, con.Handler(), log, serveErr))
	}
	stopAll, err := startAll(ctx, parts)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		log.Error("shutting down after a failure", "err", err)
	}
	deadline, cancel := context.WithTimeout(context.WithoutCancel(ctx), cmp.Or(cfg.ShutdownTimeout, ShutdownTimeoutDefault))
	defer cancel()
	stopAll(deadline)
	log.Info("shut down")
	return err
}

// part is one piece of the daemon with a lifecycle: start must not block;
// stop ends what start began, within its context's deadline.
type part struct {
	name  string
	start func(context.Context) error
	stop  func(context.Context)
}

// startAll starts parts in order. If one fails, the ones already started
// are stopped, in reverse order, and its error is returned; otherwise
// stopAll stops them all in reverse order.
func startAll(ctx context.Context, parts []part) (stopAll func(context.Context), err error) {
	started := 0
	stopAll = func(ctx context.Context) {
		for i := started - 1; i >= 0; i-- {
			parts[i].stop(ctx)
		}
	}
	for _, p := range parts {
		if err := p.start(ctx); err != nil {
			stopAll(ctx)
			return nil, fmt.Errorf("start %s: %w", p.name, err)
		}
		started++
	}
	return stopAll, nil
}

// healthPart runs the health checker until stopped.
func healthPart(hc *healthChecker) part {
	var cancel context.CancelFunc
	done := make(chan struct{})
	return part{"health",
		func(ctx context.Context) error {
			var hctx context.Context
			hctx, cancel = context.WithCancel(context.WithoutCancel(ctx))
			go func() { defer close(done); hc.run(hctx, 2*time.Second) }()
			return nil
		},
		func(context.Context) { cancel(); <-done }}
}

// listenerPart serves h (the HTTP/JSON API, the console) on lis, or a
// listener on addr, at most maxConns connections at once, with TLS when
// tlsCfg is set; it stops before the gRPC part, draining its requests.
func listenerPart(name, addr string, lis net.Listener, maxConns int, tlsCfg *tls.Config, h http.Handler, log *slog.Logger,
	serveErr chan<- error,
) part {
	hs := httpServer(h)
	return part{name,
		func(ctx context.Context) error {
			if lis == nil {
				var err error
				if lis, err = net.Listen("tcp", addr); err != nil {
					return fmt.Errorf("%s listen: %w", name, err)
				}
			}
			lis = netutil.LimitListener(lis, maxConns)
			if tlsCfg != nil {
				lis = tls.NewListener(lis, tlsCfg.Clone())
			}
			log.InfoContext(ctx, name+" serving", "addr", lis.Addr().String(), "tls", tlsCfg != nil)
			go func() {
				if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
					serveErr <- fmt.Errorf("%s: %w", name, err)
				}
			}()
			return nil
		},
		func(ctx context.Context) {
			if err := hs.Shutdown(ctx); err != nil {
				_ = hs.Close()
			}
		}}
}

// metricsPart serves /metrics on addr (nothing when addr is empty); a
// failure of the server is sent to serveErr.
func metricsPart(addr string, srv *Server, log *slog.Logger, serveErr chan<- error) part {
	if addr == "" {
		return part{"metrics", func(context.Context) error { return nil }, func(context.Context) {}}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", srv.Metrics().Handler())
	ms := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return part{"metrics",
		func(ctx context.Context) error {
			mlis, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("metrics listen: %w", err)
			}
			log.InfoContext(ctx, "metrics serving", "addr", mlis.Addr().String())
			go func() {
				if err := ms.Serve(mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
					serveErr <- fmt.Errorf("metrics: %w", err)
				}
			}()
			return nil
		},
		func(ctx context.Context) { _ = ms.Shutdown(ctx) }}
}

// NewGRPCServer returns a gRPC server with the service's interceptors:
// panic recovery (a panic becomes Internal, never a crash) and one log line
// per finished call, and its limits: message size, concurrent streams per
// connection, header size, keepalive enforcement (pings too frequent get
// GOAWAY), idle connections closed, handshakes bounded. A method the API
// does not have answers Unimplemented with reason NO_SUCH_ROUTE, as a path
// it does not have does over HTTP (after authentication, like any call),
// and a request that is not valid protobuf InvalidArgument naming "body",
// as a body that is not JSON does (before authentication, as there).
// Payloads are never logged: they carry codes. ClaimCode, ReserveCode and
// ConfirmReservation, the flash-sale path, are logged only at debug level
// (its answers are counted in metrics, and failures log themselves): a line
// and a write(2) per claim would cost a seventh of the server's CPU.
func NewGRPCServer(log *slog.Logger, opts ...grpc.ServerOption) *grpc.Server {
	logger, logOpts, recoverOpts := callLogging(log)
	opts = append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxRecvMsgBytes),
		grpc.MaxHeaderListSize(maxHeaderListBytes),
		grpc.UnknownServiceHandler(noSuchMethod),
		grpc.ForceServerCodecV2(newLenientCodec()), // bad bytes are InvalidArgument (codec.go)
		grpc.MaxConcurrentStreams(MaxConcurrentStreamsDefault),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: minClientPingInterval, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: maxConnectionIdle}),
		grpc.ConnectionTimeout(handshakeTimeout),
		// Calls run on reused workers, whose stacks have already grown,
		// instead of a new goroutine each (whose stack the claim path
		// grows, copying it, on every call). A worker is busy for the whole
		// call, and claims wait for their group commit, so there are as
		// many as the calls usually in flight; beyond that gRPC starts a
		// goroutine per call.
		grpc.NumStreamWorkers(streamWorkers),
		// Only a gRPC server decodes protobuf: the refusal of what did not
		// decode follows the base chain here, not on the gateway's direct
		// claims, whose requests are built from JSON.
		grpc.ChainUnaryInterceptor(append(baseUnary(log), refuseUndecodedUnary)...),
		grpc.ChainStreamInterceptor(
			logging.StreamServerInterceptor(logger, logOpts...),
			recovery.StreamServerInterceptor(recoverOpts...),
			refuseUndecodedStream,
		),
	}, opts...)
	return grpc.NewServer(opts...)
}

// noSuchMethod answers a call of a service or method the server does not
// have. The name is not echoed: the caller chose it.
func noSuchMethod(any, grpc.ServerStream) error {
	return rpcerr.Info(codes.Unimplemented, "no such method: the API has no such service or method", ReasonNoSuchRoute)
}

// callLogging is the access log and panic recovery setup of every server.
func callLogging(log *slog.Logger) (logging.Logger, []logging.Option, []recovery.Option) {
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall),
		logging.WithFieldsFromContextAndCallMeta(requestFields)}
	recoverOpts := []recovery.Option{recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in handler", "panic", fmt.Sprint(p))
		return status.Error(codes.Internal, "internal error")
	})}
	return logger, logOpts, recoverOpts
}

// baseUnary is the access log (hot methods at debug level only) and panic
// recovery, the first unary interceptors of every server: the gRPC ones and
// the HTTP gateway's direct claim path.
func baseUnary(log *slog.Logger) []grpc.UnaryServerInterceptor {
	logger, logOpts, recoverOpts := callLogging(log)
	accessLog := logging.UnaryServerInterceptor(logger, logOpts...)
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		// The hot methods skip the access log by their full name, which gRPC
		// hands over as it is (selector's CallMeta would build the name
		// again, an allocation per claim).
		logged := accessLog
		accessLog = func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if hotMethods[info.FullMethod] {
				return h(ctx, req)
			}
			return logged(ctx, req, info, h)
		}
	}
	return []grpc.UnaryServerInterceptor{accessLog, recovery.UnaryServerInterceptor(recoverOpts...)}
}

// streamWorkers is how many gRPC workers serve calls: idle ones cost only
// their stacks.
const streamWorkers = 256

// hotMethods are the flash-sale calls, logged only at debug level.
var hotMethods = map[string]bool{
	"/dispenser.v1.ClaimService/ClaimCode":          true,
	"/dispenser.v1.ClaimService/ReserveCode":        true,
	"/dispenser.v1.ClaimService/ConfirmReservation": true,
}

// requestFields adds the pool, request id and prize id of a call to its log
// line, each only when it is well formed (a hostile 8 MiB id is logged as
// "(invalid)"). User ids and codes are never logged.
func requestFields(_ context.Context, c interceptors.CallMeta) logging.Fields {
	var f logging.Fields
	add := func(name, v string, check func(string, string) error) {
		if v == "" {
			return
		}
		if check(name, v) != nil {
			v = "(invalid)"
		}
		f = append(f, name, v)
	}
	if r, ok := c.ReqOrNil.(interface{ GetPoolId() string }); ok {
		add("pool", r.GetPoolId(), input.PoolID)
	}
	if r, ok := c.ReqOrNil.(interface{ GetRequestId() string }); ok {
		add("request_id", r.GetRequestId(), input.RequestID)
	}
	if r, ok := c.ReqOrNil.(interface{ GetPrizeId() string }); ok {
		add("prize", r.GetPrizeId(), func(field, v string) error { _, err := prize.ParseID(field, v); return err })
	}
	return f
}

// warmConn readies each new connection of the pool for the group commit
// (claim.WarmConn) before anything uses it. A database not migrated yet has
// nothing to warm; only a connection the warm-up broke is refused, so that
// the pool dials another.
func warmConn(ctx context.Context, conn *pgx.Conn) error {
	wctx, cancel := context.WithTimeout(ctx, warmTimeout)
	defer cancel()
	if err := claim.WarmConn(wctx, conn); err != nil && conn.IsClosed() {
		return err
	}
	return nil
}

// warmTimeout bounds one connection's warm-up.
const warmTimeout = 5 * time.Second

// OpenDB opens a Postgres pool and checks that it answers.
func OpenDB(ctx context.Context, url string, pooler bool) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	if pooler && !strings.Contains(url, "default_query_exec_mode") {
		// Behind a transaction pooler a named prepared statement lives on
		// whichever server connection prepared it: describe once, then
		// parse, bind and execute unnamed in every round trip.
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	}
	if !strings.Contains(url, "pool_max_conns") {
		// pgxpool's default (4 on this machine) queues concurrent claims
		// behind each other; the group commit, the fallback and the jobs each
		// want connections of their own.
		cfg.MaxConns = defaultMaxConns
	}
	cfg.AfterConnect = warmConn
	db, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.Ping(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("database at %s does not answer: %w", redactURL(url), err)
	}
	return db, nil
}

// MigrateDB applies pending migrations on one connection of db.
func MigrateDB(ctx context.Context, db *pgxpool.Pool, log *slog.Logger) error {
	conn, err := db.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	from, to, err := migrations.Migrate(ctx, conn.Conn())
	if err != nil {
		return err
	}
	if from != to {
		log.InfoContext(ctx, "schema migrated", "from", from, "to", to)
	}
	return nil
}

// OpenRedis returns a client for url: one node, Sentinel or Cluster (see
// stock.Open). It does not wait for Redis to answer: the service starts and
// serves without it (claims fall back to Postgres).
func OpenRedis(url string) (redis.UniversalClient, error) { return stock.Open(url) }

// redactURL drops the password from a connection string for messages.
func redactURL(raw string) string {
	cfg, err := pgxpool.ParseConfig(raw)
	if err != nil {
		return "(unparsable url)"
	}
	c := cfg.ConnConfig
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// warnIfNoAutovacuum says so when the server's autovacuum is off: claimed rows
// then pile up as dead tuples, and SKIP LOCKED scans slow down as they grow.
// The schema's per-table settings cannot turn it back on.
func warnIfNoAutovacuum(ctx context.Context, db *pgxpool.Pool, log *slog.Logger) {
	var on string
	if err := db.QueryRow(ctx, "SHOW autovacuum").Scan(&on); err == nil && on != "on" {
		log.WarnContext(ctx, "Postgres autovacuum is off: dead rows of claimed codes will pile up until a manual VACUUM; "+
			"turn it on (ALTER SYSTEM SET autovacuum = on) or schedule VACUUM ANALYZE codes")
	}
}
