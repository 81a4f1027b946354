package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PgBouncer is a pgbouncer of one test's own, in transaction pooling mode,
// in front of the test's schema.
type PgBouncer struct {
	// URL reaches the schema through the pooler (no search_path parameter:
	// the pooler sets it on every server connection).
	URL string
	cmd *exec.Cmd
}

// StartPgBouncer starts pgbouncer (Debian's package; make test installs it)
// on a free loopback port, pool_mode = transaction, in front of schema s.
// It is stopped when the test ends.
func StartPgBouncer(t testing.TB, s *Schema) *PgBouncer {
	t.Helper()
	if _, err := exec.LookPath("pgbouncer"); err != nil {
		t.Fatalf("testenv: pgbouncer is not installed (make test installs it): %v", err)
	}
	cfg, err := pgx.ParseConfig(DatabaseURL())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	_ = lis.Close()
	// pgbouncer will not run as root; it switches to postgres, which must
	// read its files.
	dir, err := os.MkdirTemp("", "pgbouncer-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	_ = os.Chmod(dir, 0o777)
	ini := fmt.Sprintf(`[databases]
dispenser = host=%s port=%d dbname=%s user=%s connect_query='SET search_path TO %s'

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
logfile = %s
pidfile = %s
`, cfg.Host, cfg.Port, cfg.Database, cfg.User, s.Name, port, filepath.Join(dir, "users.txt"),
		filepath.Join(dir, "pgbouncer.log"), filepath.Join(dir, "pgbouncer.pid"))
	for name, body := range map[string]string{"pgbouncer.ini": ini, "users.txt": fmt.Sprintf("%q \"\"\n", cfg.User)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	args := []string{filepath.Join(dir, "pgbouncer.ini")}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "postgres"}, args...)
	}
	cmd := exec.Command("pgbouncer", args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start pgbouncer: %v", err)
	}
	b := &PgBouncer{URL: fmt.Sprintf("postgres://%s@127.0.0.1:%d/dispenser?sslmode=disable", cfg.User, port), cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, b.URL)
		if err == nil {
			var schema string
			err = conn.QueryRow(ctx, "SELECT current_schema()", pgx.QueryExecModeSimpleProtocol).Scan(&schema)
			_ = conn.Close(ctx)
			cancel()
			if err == nil && schema == s.Name {
				return b
			}
		}
		cancel()
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
	t.Fatalf("testenv: pgbouncer on port %s did not serve the schema:\n%s", strconv.Itoa(port), log)
	return nil
}
