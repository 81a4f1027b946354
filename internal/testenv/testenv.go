// Package testenv gives each test its own slice of the real Postgres and
// Redis: a freshly migrated schema and a private Redis key namespace, both
// removed when the test ends. Tests run in parallel and rerun clean. A
// missing service fails the test; nothing here ever skips.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	neturl "net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/dispenserhq/dispenser/migrations"
)

// Defaults match the services that `make test` brings up.
const (
	defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/dispenser_test?sslmode=disable"
	defaultRedisURL    = "redis://127.0.0.1:6379/0"
)

// DatabaseURL is the test database, from DISPENSER_TEST_DATABASE_URL.
func DatabaseURL() string { return envOr("DISPENSER_TEST_DATABASE_URL", defaultDatabaseURL) }

// RedisURL is the test Redis, from DISPENSER_TEST_REDIS_URL.
func RedisURL() string { return envOr("DISPENSER_TEST_REDIS_URL", defaultRedisURL) }

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// Unique returns a short random name with the given prefix, safe as a schema
// name, pool id or key namespace.
func Unique(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

var ensureDB = sync.OnceValue(func() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(DatabaseURL())
	if err != nil {
		return err
	}
	name := cfg.Database
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") {
		return nil // exists, or another test process created it just now
	}
	return err
})

// Must returns v, and panics if err is not nil: for test set-up calls that
// cannot fail unless the environment is broken.
func Must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Schema is a migrated schema of its own for one test.
type Schema struct {
	// Name is the schema's name.
	Name string
	// URL connects with the schema first on the search path, for code under
	// test that opens its own connections.
	URL string
	// Pool is connected with the schema on the search path.
	Pool *pgxpool.Pool
	// admin reaches the schema's database without it on the path.
	admin string
}

// Postgres creates a schema, migrates it and returns a pool bound to it. The
// schema is dropped when the test ends.
func Postgres(t testing.TB) *Schema {
	t.Helper()
	requireDB(t)
	return schemaOn(t, DatabaseURL())
}

// PostgresOn is Postgres on a test's own cluster (StartPostgresServer), for
// tests that crash or restart it.
func PostgresOn(t testing.TB, s *PostgresServer) *Schema {
	t.Helper()
	return schemaOn(t, s.URL())
}

// schemaOn creates a migrated schema of its own in the database adminURL
// reaches.
func schemaOn(t testing.TB, adminURL string) *Schema {
	t.Helper()
	name := Unique("t_")
	return provision(t, adminURL, name, "CREATE SCHEMA "+name, "DROP SCHEMA "+name+" CASCADE",
		withParams(adminURL, "search_path="+name+"&application_name="+name))
}

// requireDB fails the test when the shared test database cannot be had.
func requireDB(t testing.TB) {
	t.Helper()
	if err := ensureDB(); err != nil {
		t.Fatalf("testenv: Postgres at %s is required (make test starts it): %v", DatabaseURL(), err)
	}
}

// PostgresOwnDatabase is Postgres on a database of the test's own, dropped
// when the test ends, for a test that needs what other tests' transactions
// would hold back: PostgreSQL prunes the dead row versions of a table only
// once no transaction in its database may still see them.
func PostgresOwnDatabase(t testing.TB) *Schema {
	t.Helper()
	name := Unique("tdb_")
	u, err := neturl.Parse(DatabaseURL())
	if err != nil {
		t.Fatalf("testenv: database url: %v", err)
	}
	u.Path = "/" + name
	requireDB(t)
	return provision(t, DatabaseURL(), name, "CREATE DATABASE "+name, "DROP DATABASE "+name+" WITH (FORCE)",
		withParams(u.String(), "application_name="+name))
}

// provision runs create on the database adminURL reaches, drop when the
// test ends, and migrates what url reaches and returns a pool on it.
func provision(t testing.TB, adminURL, name, create, drop, url string) *Schema {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatalf("testenv: connect: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, create); err != nil {
		t.Fatalf("testenv: %s: %v", create, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			t.Errorf("testenv: %s: %v", drop, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, drop); err != nil {
			t.Errorf("testenv: %s: %v", drop, err)
		}
	})

	mconn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("testenv: connect: %v", err)
	}
	defer mconn.Close(ctx)
	if _, _, err := migrations.Migrate(ctx, mconn); err != nil {
		t.Fatalf("testenv: migrate: %v", err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatalf("testenv: pool: %v", err)
	}
	// Closed before the drop (cleanups run last first).
	t.Cleanup(pool.Close)
	return &Schema{Name: name, URL: url, Pool: pool, admin: adminURL}
}

func withParams(url, params string) string {
	sep := "?"
	for i := 0; i < len(url); i++ {
		if url[i] == '?' {
			sep = "&"
		}
	}
	return url + sep + params
}

// TerminateBackends kills every server connection of this schema's pools (as
// a Postgres restart or failover would) and returns how many it killed.
func (s *Schema) TerminateBackends(ctx context.Context) (int, error) {
	conn, err := pgx.Connect(ctx, s.admin)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM (
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) t`, s.Name).Scan(&n)
	return n, err
}

// Redis returns a client and a key namespace of the test's own; every key in
// the namespace is deleted when the test ends.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	opts, err := redis.ParseURL(RedisURL())
	if err != nil {
		t.Fatalf("testenv: redis url: %v", err)
	}
	rdb := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("testenv: Redis at %s is required (make test starts it): %v", RedisURL(), err)
	}
	ns := Unique("test:")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := deleteNamespace(ctx, rdb, ns); err != nil {
			t.Errorf("testenv: clean redis namespace: %v", err)
		}
		_ = rdb.Close()
	})
	return rdb, ns
}

// deleteNamespace unlinks every key of ns, scanning in large pages so that a
// busy shared Redis costs few round trips.
func deleteNamespace(ctx context.Context, rdb *redis.Client, ns string) error {
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, ns+":*", 10_000).Result()
		if err != nil {
			return fmt.Errorf("scan: %w", err)
		}
		if len(keys) > 0 {
			if err := rdb.Unlink(ctx, keys...).Err(); err != nil {
				return fmt.Errorf("unlink: %w", err)
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}
