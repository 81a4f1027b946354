// Package cli is what the command-line tools share as clients of
// dispenserd: dialing it with a key and TLS, uploading an import, and
// formatting numbers for people.
package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/dispenserhq/dispenser/dispenser"
	"github.com/dispenserhq/dispenser/internal/cliflag"
	"github.com/dispenserhq/dispenser/internal/stock"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// Defaults of the store flags of the tools that read Postgres and Redis
// directly (audit, the benchmarks), as `make run` sets the stores up.
const (
	DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/dispenser?sslmode=disable"
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
)

// EnvOr returns the environment variable key, or def when it is empty.
func EnvOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// OpenStores connects straight to the server's Postgres and Redis, for the
// tools that read them (audit, the benchmarks); maxConns sizes the Postgres
// pool.
func OpenStores(ctx context.Context, databaseURL, redisURL string, maxConns int) (*pgxpool.Pool, redis.UniversalClient, error) {
	pcfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, nil, fmt.Errorf("--database-url: %w", err)
	}
	pcfg.MaxConns = int32(maxConns)
	db, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, nil, fmt.Errorf("database: %w", err)
	}
	rdb, err := stock.Open(redisURL)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("--redis-url: %w", err)
	}
	return db, rdb, nil
}

// Conn says how to reach dispenserd.
type Conn struct {
	// Addr is host:port.
	Addr string
	// Key is the API key, sent as a bearer token with every call.
	Key string
	// TLS connects with TLS; implied by CA or Cert.
	TLS bool
	// CA, if set, is trusted instead of the system's roots (PEM file).
	CA string
	// Cert and CertKey are a client certificate for mTLS (PEM files).
	Cert, CertKey string
}

// Dial returns a client connection; gRPC connects on the first call.
func Dial(c Conn) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if c.TLS || c.CA != "" || c.Cert != "" {
		tc, err := dispenser.ClientTLS(c.CA, c.Cert, c.CertKey)
		if err != nil {
			return nil, err
		}
		creds = tc
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if c.Key != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerKey(c.Key)))
	}
	target := c.Addr
	if addrs := strings.Split(c.Addr, ","); len(addrs) > 1 {
		// Several replicas: one channel balancing round-robin over them,
		// as the operations guide tells clients to.
		r := manual.NewBuilderWithScheme("dispenser-replicas")
		var state resolver.State
		for _, a := range addrs {
			state.Addresses = append(state.Addresses, resolver.Address{Addr: strings.TrimSpace(a)})
		}
		r.InitialState(state)
		target = r.Scheme() + ":///replicas"
		opts = append(opts, grpc.WithResolvers(r),
			grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.Addr, err)
	}
	return conn, nil
}

// Client is how a command-line tool reaches dispenserd: its connection
// flags, and one connection, dialed on first use.
type Client struct {
	Conn Conn
	// Timeout is the deadline of each unary call made with Call.
	Timeout time.Duration
	cc      *grpc.ClientConn
}

// Flags registers the connection flags: --addr, --key, --tls, --tls-ca,
// --tls-cert, --tls-key and --timeout, with their environment variables.
func (c *Client) Flags(f *pflag.FlagSet) {
	f.StringVar(&c.Conn.Addr, "addr", EnvOr("DISPENSER_ADDR", "localhost:50051"),
		"dispenserd gRPC address; several, comma-separated, are used round-robin [DISPENSER_ADDR]")
	f.DurationVar(&c.Timeout, "timeout", 30*time.Second, "deadline of each unary call")
	cliflag.Secret(f, &c.Conn.Key, "key", "DISPENSER_KEY", "", "API key, sent as a bearer token")
	f.BoolVar(&c.Conn.TLS, "tls", os.Getenv("DISPENSER_TLS") == "true", "connect with TLS (implied by --tls-ca or --tls-cert) [DISPENSER_TLS]")
	f.StringVar(&c.Conn.CA, "tls-ca", os.Getenv("DISPENSER_TLS_CA"), "trust this CA (PEM) instead of the system's [DISPENSER_TLS_CA]")
	f.StringVar(&c.Conn.Cert, "tls-cert", os.Getenv("DISPENSER_TLS_CERT"), "client certificate for mTLS (PEM) [DISPENSER_TLS_CERT]")
	f.StringVar(&c.Conn.CertKey, "tls-key", os.Getenv("DISPENSER_TLS_KEY"), "client certificate's key (PEM) [DISPENSER_TLS_KEY]")
}

// ClientConn returns the connection, dialing it the first time.
func (c *Client) ClientConn() (*grpc.ClientConn, error) {
	if c.cc != nil {
		return c.cc, nil
	}
	cc, err := Dial(c.Conn)
	if err != nil {
		return nil, err
	}
	c.cc = cc
	return cc, nil
}

// Admin returns an AdminService client on the connection.
func (c *Client) Admin() (dispenserv1.AdminServiceClient, error) {
	cc, err := c.ClientConn()
	if err != nil {
		return nil, err
	}
	return dispenserv1.NewAdminServiceClient(cc), nil
}

// Close releases the connection, if one was made.
func (c *Client) Close() {
	if c.cc != nil {
		_ = c.cc.Close()
		c.cc = nil
	}
}

// Call runs a unary call under the client's --timeout deadline.
func Call[Req, Resp any](ctx context.Context, c *Client, fn func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	return fn(ctx, req)
}

// Execute runs a tool's command line with a context that ends on SIGINT or
// SIGTERM.
func Execute(cmd *cobra.Command) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cmd.ExecuteContext(ctx)
}

// bearerKey sends the API key with every call. It is allowed over plaintext
// too, for local use; use TLS on any real network.
type bearerKey string

func (k bearerKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}

func (bearerKey) RequireTransportSecurity() bool { return false }

// FormatInt groups digits by thousands: 1234567 -> 1,234,567.
func FormatInt(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
