// Package testdaemon runs a real dispenserd (dispenser.Run) for tests, on a
// loopback port, the test's own schema and Redis namespace.
package testdaemon

import (
	"context"
	"log/slog"
	"net"
	"sync"
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
	// HTTP is the base URL of its HTTP/JSON API ("http://127.0.0.1:port").
	HTTP string
	// Console is the base URL of its web console.
	Console string
	// DB is its schema; DB.URL reaches it, for commands that read Postgres.
	DB *testenv.Schema
	// Namespace is its Redis namespace.
	Namespace string
	stop      func() error
}

// Stop ends the daemon and returns Run's error. It is also called when the
// test ends.
func (d Daemon) Stop() error { return d.stop() }

// Run runs a dispenserd until Stop or the end of the test. By default it
// runs no scheduled jobs (tests run them when they mean to: a scheduled
// refill would move codes between states under their feet), needs no API
// key, and retries webhooks quickly; edit changes the config before it
// starts.
func Run(t *testing.T, edit func(*dispenser.Config)) Daemon {
	t.Helper()
	db := testenv.Postgres(t)
	_, ns := testenv.Redis(t)
	return RunOn(t, db, ns, edit)
}

// Replicas runs n dispensers on one schema and one Redis namespace, as
// replicas of one deployment; edit(i, cfg) changes replica i's config.
func Replicas(t *testing.T, n int, edit func(i int, c *dispenser.Config)) []Daemon {
	t.Helper()
	db := testenv.Postgres(t)
	_, ns := testenv.Redis(t)
	out := make([]Daemon, n)
	for i := range n {
		out[i] = RunOn(t, db, ns, func(c *dispenser.Config) {
			if edit != nil {
				edit(i, c)
			}
		})
	}
	return out
}

// RunOn is Run on a given schema and Redis namespace.
func RunOn(t *testing.T, db *testenv.Schema, ns string, edit func(*dispenser.Config)) Daemon {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testdaemon: listen: %v", err)
	}
	hlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testdaemon: listen: %v", err)
	}
	clis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testdaemon: listen: %v", err)
	}
	cfg := dispenser.Config{
		DatabaseURL: db.URL, RedisURL: testenv.RedisURL(), RedisNamespace: ns,
		Listener: lis, HTTPListener: hlis, ConsoleListener: clis, NoJobs: true, NoAuth: true, ShutdownTimeout: 10 * time.Second,
		Logger:  slog.New(slog.DiscardHandler),
		Deliver: prize.DeliverConfig{MaxAttempts: 2, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond},
	}
	if edit != nil {
		edit(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dispenser.Run(ctx, cfg) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("testdaemon: dispenserd: %v", err)
		}
	})
	return Daemon{Addr: lis.Addr().String(), HTTP: "http://" + hlis.Addr().String(), Console: "http://" + clis.Addr().String(),
		DB: db, Namespace: ns, stop: stop}
}

// Start is Run with authentication on or off and nothing else changed.
func Start(t *testing.T, auth bool) Daemon {
	t.Helper()
	return Run(t, func(c *dispenser.Config) { c.NoAuth = !auth })
}
