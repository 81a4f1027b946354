// Command dispenserd runs the dispenser gRPC server and its jobs.
//
//	dispenserd [serve]   serve the API (the default)
//	dispenserd migrate   apply pending database migrations and exit
//
// Configuration comes from flags, each with an environment variable default
// (see --help and docs/OPERATIONS.md).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // served only with --debug-listen
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // --deliver-timezone works without a system zoneinfo

	"github.com/spf13/cobra"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/dispenser"
	"github.com/dispenserhq/dispenser/internal/cli"
	"github.com/dispenserhq/dispenser/internal/cliflag"
	"github.com/dispenserhq/dispenser/internal/gcfloor"
	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/jobs"
	"github.com/dispenserhq/dispenser/prize"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "dispenserd:", err)
		os.Exit(1)
	}
}

// common holds the flags every subcommand shares.
type common struct {
	databaseURL string
	// directURL is the database without a transaction pooler ("": the same).
	directURL string
	logLevel  string
	logFormat string
}

func (c *common) register(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	cliflag.Secret(f, &c.databaseURL, "database-url", "DISPENSER_DATABASE_URL",
		"postgres://postgres@127.0.0.1:5432/dispenser?sslmode=disable", "Postgres URL (may be a transaction pooler such as PgBouncer; then set --database-direct-url)")
	cliflag.Secret(f, &c.directURL, "database-direct-url", "DISPENSER_DATABASE_DIRECT_URL", "",
		"Postgres without a transaction pooler, for migrations, imports and job locks (default: --database-url)")
	f.StringVar(&c.logLevel, "log-level", cli.EnvOr("DISPENSER_LOG_LEVEL", "info"), "debug, info, warn or error [DISPENSER_LOG_LEVEL]")
	f.StringVar(&c.logFormat, "log-format", cli.EnvOr("DISPENSER_LOG_FORMAT", "json"), "json or text [DISPENSER_LOG_FORMAT]")
}

// sessionURL is the database for one-off sessions (migrate, keys): the
// direct URL when a pooler fronts the database.
func (c *common) sessionURL() string {
	if c.directURL != "" {
		return c.directURL
	}
	return c.databaseURL
}

func (c *common) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(c.logFormat) {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be json or text, not %q", c.logFormat)
}

func newRootCmd() *cobra.Command {
	var c common
	var cfg dispenser.Config
	var debugListen, deliverTZ string
	var webhookTimeout time.Duration
	var gcPercent int
	var gcMinHeapMiB uint64
	serve := func(cmd *cobra.Command, _ []string) error {
		log, err := c.logger()
		if err != nil {
			return err
		}
		if gcPercent < -1 || gcPercent == 0 {
			return fmt.Errorf("--gc-percent must be positive, or -1 to turn the collector off")
		}
		if gcMinHeapMiB > maxGCMinHeapMiB {
			return fmt.Errorf("--gc-min-heap-mib must be at most %d (1 TiB)", maxGCMinHeapMiB)
		}
		debug.SetGCPercent(gcPercent)
		ctx, stopFloor := context.WithCancel(cmd.Context())
		floorDone := make(chan struct{})
		go func() {
			defer close(floorDone)
			gcfloor.Run(ctx, gcPercent, gcMinHeapMiB<<20, gcFloorEvery)
		}()
		defer func() { stopFloor(); <-floorDone }()
		if cfg.Jobs.DeliverLocation, err = time.LoadLocation(deliverTZ); err != nil {
			return fmt.Errorf("--deliver-timezone: %w", err)
		}
		cfg.Deliver.HTTP = &http.Client{Timeout: webhookTimeout}
		slog.SetDefault(log)
		// Before any Redis client exists: go-redis reads it unguarded.
		stock.RouteLogs(log)
		if debugListen != "" {
			go serveDebug(debugListen, log)
		}
		cfg.DatabaseURL, cfg.DatabaseDirectURL, cfg.Logger = c.databaseURL, c.directURL, log
		return dispenser.Run(ctx, cfg)
	}
	root := &cobra.Command{
		Use:           "dispenserd",
		Short:         "Hands out prefilled card codes over gRPC, exactly once each",
		Args:          cobra.NoArgs,
		RunE:          serve,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	c.register(root)
	f := root.Flags()
	cliflag.Secret(f, &cfg.RedisURL, "redis-url", "DISPENSER_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis URL")
	f.StringVar(&cfg.RedisNamespace, "redis-namespace", cli.EnvOr("DISPENSER_REDIS_NAMESPACE", "dispenser"), "prefix of every Redis key [DISPENSER_REDIS_NAMESPACE]")
	f.StringVar(&cfg.Listen, "listen", cli.EnvOr("DISPENSER_LISTEN", "127.0.0.1:50051"), "gRPC listen address [DISPENSER_LISTEN]")
	f.BoolVar(&cfg.Migrate, "migrate", cli.EnvOr("DISPENSER_MIGRATE", "true") == "true", "apply pending migrations at start-up [DISPENSER_MIGRATE]")
	f.BoolVar(&cfg.Reflection, "reflection", cli.EnvOr("DISPENSER_REFLECTION", "true") == "true", "serve gRPC reflection for grpcurl [DISPENSER_REFLECTION]")
	f.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", dispenser.ShutdownTimeoutDefault, "how long SIGTERM waits for in-flight calls")
	f.IntVar(&cfg.Claims.RedisAllocator.Commit.MaxBatch, "commit-max-batch", claim.CommitMaxBatchDefault, "most claims per group commit")
	f.DurationVar(&cfg.Claims.RedisAllocator.Commit.MaxWait, "commit-max-wait", claim.CommitMaxWaitDefault, "how long a group commit waits to fill")
	f.IntVar(&cfg.Claims.RedisAllocator.Commit.MaxInFlight, "commit-max-in-flight", claim.CommitMaxInFlightDefault, "group commits in flight at once")
	f.DurationVar(&cfg.Claims.RedisAllocator.ReplayTTL, "replay-ttl", claim.ReplayTTLDefault, "how long Redis keeps replay records (Postgres keeps claims forever)")
	f.DurationVar(&cfg.Claims.RefusalTTL, "refusal-ttl", claim.RefusalTTLDefault,
		"how long a USER_LIMIT_REACHED or POOL_EXHAUSTED answer is kept for copies of its request that started before it")
	f.DurationVar(&cfg.Claims.PoolCacheTTL, "pool-cache-ttl", claim.PoolCacheTTLDefault, "how long pool settings are cached (pausing takes effect within it)")
	f.DurationVar(&cfg.Jobs.RefillEvery, "refill-every", jobs.RefillEveryDefault, "refill period")
	f.DurationVar(&cfg.Jobs.ExpireHoldsEvery, "expire-holds-every", jobs.ExpireHoldsEveryDefault,
		"how often reservations whose hold ran out are ended (their codes go back to the pool)")
	f.DurationVar(&cfg.Jobs.ReconcileEvery, "reconcile-every", jobs.ReconcileEveryDefault, "reconcile period")
	f.DurationVar(&cfg.Jobs.ReconcileGrace, "reconcile-grace", jobs.ReconcileGraceDefault, "age before reconcile may return staged or in-flight codes")
	f.StringVar(&cfg.Jobs.DeliverSchedule, "deliver-schedule", cli.EnvOr("DISPENSER_DELIVER_SCHEDULE", jobs.DeliverScheduleDefault), "cron spec of the prize delivery run [DISPENSER_DELIVER_SCHEDULE]")
	f.StringVar(&deliverTZ, "deliver-timezone", cli.EnvOr("DISPENSER_DELIVER_TIMEZONE", "UTC"), "time zone of --deliver-schedule, e.g. Asia/Shanghai [DISPENSER_DELIVER_TIMEZONE]")
	f.IntVar(&cfg.Deliver.MaxAttempts, "deliver-max-attempts", prize.MaxAttemptsDefault, "webhook attempts before a prize is parked")
	f.DurationVar(&webhookTimeout, "webhook-timeout", 10*time.Second, "timeout of one webhook attempt")
	f.BoolVar(&cfg.AllowInsecureWebhooks, "webhook-allow-insecure", cli.EnvOr("DISPENSER_WEBHOOK_ALLOW_INSECURE", "") == "true",
		"accept and deliver to plain-http webhook URLs on any host (default: https, or http to loopback only) [DISPENSER_WEBHOOK_ALLOW_INSECURE]")
	f.IntVar(&cfg.Claims.FallbackConcurrency, "fallback-concurrency", claim.FallbackConcurrencyDefault, "fallback transactions in Postgres at once (each decides the fallback claims that queued meanwhile)")
	f.BoolVar(&cfg.Claims.FallbackOnly, "fallback-only", false, "serve every claim from Postgres (SKIP LOCKED), never from Redis")
	f.StringVar(&cfg.TLS.CertFile, "tls-cert", cli.EnvOr("DISPENSER_TLS_CERT", ""), "serve gRPC over TLS with this certificate (PEM) [DISPENSER_TLS_CERT]")
	f.StringVar(&cfg.TLS.KeyFile, "tls-key", cli.EnvOr("DISPENSER_TLS_KEY", ""), "the certificate's private key (PEM) [DISPENSER_TLS_KEY]")
	f.StringVar(&cfg.TLS.ClientCAFile, "tls-client-ca", cli.EnvOr("DISPENSER_TLS_CLIENT_CA", ""), "require client certificates signed by this CA (mTLS) [DISPENSER_TLS_CLIENT_CA]")
	f.BoolVar(&cfg.NoAuth, "insecure-no-auth", cli.EnvOr("DISPENSER_INSECURE_NO_AUTH", "") == "true", "serve without API keys: anyone who reaches the port may do anything [DISPENSER_INSECURE_NO_AUTH]")
	f.Int64Var(&cfg.MaxImportBytes, "max-import-bytes", dispenser.MaxImportBytesDefault, "largest import file accepted")
	f.IntVar(&cfg.MaxConnections, "max-connections", dispenser.MaxConnectionsDefault, "connections served at once on each listener (gRPC, HTTP/JSON, console)")
	f.DurationVar(&cfg.HTTPBodyTimeout, "http-body-timeout", dispenser.HTTPBodyTimeoutDefault, "how long an HTTP/JSON request or the console's sign-in form may take to send its body (imports excepted)")
	f.Uint32Var(&cfg.MaxConcurrentStreams, "max-concurrent-streams", dispenser.MaxConcurrentStreamsDefault, "calls in flight per gRPC connection")
	f.Float64Var(&cfg.RateLimit, "rate-limit", 0, "default requests per second per API key (0: unlimited)")
	f.IntVar(&cfg.RateBurst, "rate-burst", 100, "default burst per API key")
	f.StringVar(&cfg.HTTPListen, "http-listen", cli.EnvOr("DISPENSER_HTTP_LISTEN", "127.0.0.1:8080"), "HTTP/JSON API listen address, beside gRPC, with the same keys and TLS; empty turns it off [DISPENSER_HTTP_LISTEN]")
	f.StringVar(&cfg.ConsoleListen, "console-listen", cli.EnvOr("DISPENSER_CONSOLE_LISTEN", "127.0.0.1:8081"), "web console listen address (admin and auditor keys sign in), with the API's TLS; empty turns it off [DISPENSER_CONSOLE_LISTEN]")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", cli.EnvOr("DISPENSER_METRICS_LISTEN", "127.0.0.1:9464"), "Prometheus /metrics listener, separate from the API; empty turns it off [DISPENSER_METRICS_LISTEN]")
	f.StringVar(&debugListen, "debug-listen", cli.EnvOr("DISPENSER_DEBUG_LISTEN", ""), "serve Go pprof at this address (e.g. 127.0.0.1:6060); off when empty [DISPENSER_DEBUG_LISTEN]")
	f.IntVar(&gcPercent, "gc-percent", gcPercentDefault(),
		"Go garbage collector target, as GOGC: the heap may grow this many percent over live data before a collection; "+
			"GOMEMLIMIT still caps it [GOGC]")
	f.Uint64Var(&gcMinHeapMiB, "gc-min-heap-mib", gcMinHeapMiBDefault,
		"while the live heap is small, raise the collector target so the heap may reach this many MiB before a "+
			"collection; 0 leaves --gc-percent alone")
	f.BoolVar(&cfg.NoJobs, "no-jobs", cli.EnvOr("DISPENSER_NO_JOBS", "") == "true", "do not schedule refill, reconcile and delivery on this replica [DISPENSER_NO_JOBS]")

	serveCmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the gRPC API (the default command)",
		Args:  cobra.NoArgs,
		RunE:  serve,
	}
	serveCmd.Flags().AddFlagSet(f)
	root.AddCommand(serveCmd)
	root.AddCommand(&cobra.Command{
		Use:   "migrate",
		Short: "Apply pending database migrations and exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := c.logger()
			if err != nil {
				return err
			}
			db, err := dispenser.OpenDB(cmd.Context(), c.sessionURL(), false)
			if err != nil {
				return err
			}
			defer db.Close()
			if err := dispenser.MigrateDB(cmd.Context(), db, log); err != nil {
				return err
			}
			log.Info("schema is up to date")
			return nil
		},
	})
	root.AddCommand(keysCmd(&c))
	return root
}

// keysCmd makes keys straight in Postgres: the first admin key cannot come
// through the API, which needs a key.
func keysCmd(c *common) *cobra.Command {
	keys := &cobra.Command{Use: "keys", Short: "Make API keys directly in the database (the first admin key)"}
	var role, name, pools string
	create := &cobra.Command{
		Use:   "create --role admin|claimer|auditor",
		Short: "Create an API key and print it once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := auth.ParseRole(role)
			if err != nil {
				return err
			}
			db, err := dispenser.OpenDB(cmd.Context(), c.sessionURL(), false)
			if err != nil {
				return err
			}
			defer db.Close()
			k := auth.Key{Name: name, Role: r}
			if pools != "" {
				if r != auth.Claimer {
					return fmt.Errorf("--pools is for claimer keys")
				}
				k.Pools = strings.Split(pools, ",")
			}
			k, text, err := auth.NewStore(db).Create(cmd.Context(), k)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "created %s key %s; it is shown once:\n", k.Role, k.ID)
			fmt.Fprintln(cmd.OutOrStdout(), text)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "admin, claimer or auditor (required)")
	create.Flags().StringVar(&name, "name", "", "a label for people")
	create.Flags().StringVar(&pools, "pools", "", "claimer keys: comma-separated pools the key may claim from")
	_ = create.MarkFlagRequired("role")
	keys.AddCommand(create)
	return keys
}

// gcPercentDefaultValue is the collector target when GOGC is not set. The
// claim path allocates a few kilobytes per call over a small live heap, so
// at Go's default (100) the collector runs many times a second under load and
// takes about a seventh of the server's CPU; 400 takes that to a few percent
// for a heap a few times larger (docs/BENCHMARKS.md).
const gcPercentDefaultValue = 400

// gcMinHeapMiBDefault is the heap the collector may let grow to before a
// collection whatever the live heap (internal/gcfloor). Under claim load the
// live heap is about 3 MB, so --gc-percent alone collected about 45 times
// in a 60,000-claim sale, at about 6 µs of CPU per claim; with a 64 MiB
// floor about 10 times, at about 1.3 µs, while an import's larger heap
// still grows by --gc-percent only: its peak RSS went from 92 to 100 MB
// (docs/BENCHMARKS.md, round twenty).
const gcMinHeapMiBDefault = 64

// maxGCMinHeapMiB bounds --gc-min-heap-mib (1 TiB), far above any heap this
// server keeps and far below where the floor's arithmetic would overflow.
const maxGCMinHeapMiB = 1 << 20

// gcFloorEvery is how often the live heap is read for the floor.
const gcFloorEvery = 100 * time.Millisecond

// gcPercentDefault is GOGC when it is set (so the usual Go setting works),
// else gcPercentDefaultValue.
func gcPercentDefault() int {
	v := os.Getenv("GOGC")
	if v == "" {
		return gcPercentDefaultValue
	}
	if strings.EqualFold(v, "off") {
		return -1
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return gcPercentDefaultValue
	}
	return n
}

// serveDebug serves net/http/pprof on its own listener, never on the API's.
func serveDebug(addr string, log *slog.Logger) {
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second}
	log.Info("pprof listening", "addr", addr)
	if err := srv.ListenAndServe(); err != nil {
		log.Error("pprof listener stopped", "err", err)
	}
}
