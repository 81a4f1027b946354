// Package testdaemon runs a real dispenserd (dispenser.Run) for the tests of
// the command-line tools, on a loopback port, the test's own schema and
// Redis namespace.
package testdaemon

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/dispenserhq/dispenser/dispenser"
	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/prize"
)

// Daemon is a running dispenserd.
type Daemon struct {
	// Addr is its gRPC address.
	Addr string
	// DatabaseURL reaches its schema, for commands that read Postgres.
	DatabaseURL string
	// Namespace is its Redis namespace.
	Namespace string
}

// Start runs a dispenserd until the test ends; with auth false, calls need
// no API key. Jobs run only when a test asks (RunJob): a scheduled refill
// would move codes between states under its feet.
func Start(t *testing.T, auth bool) Daemon {
	t.Helper()
	db := testenv.Postgres(t)
	_, ns := testenv.Redis(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testdaemon: listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- dispenser.Run(ctx, dispenser.Config{
			DatabaseURL: db.URL, RedisURL: testenv.RedisURL(), RedisNamespace: ns,
			Listener: lis, ShutdownTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler),
			NoJobs:  true,
			NoAuth:  !auth,
			Deliver: prize.DeliverConfig{MaxAttempts: 2, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond},
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("testdaemon: dispenserd: %v", err)
		}
	})
	return Daemon{Addr: lis.Addr().String(), DatabaseURL: db.URL, Namespace: ns}
}
