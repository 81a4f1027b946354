package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
)

// PostgresServer is a PostgreSQL cluster of one test's own (initdb into a
// temporary directory, stock settings, on a free loopback port), for fault
// tests that crash or restart Postgres without touching the shared one.
type PostgresServer struct {
	t    testing.TB
	Port int
	bin  string
	dir  string // holds data/ and the socket; readable by the server's user
	data string
}

// StartPostgresServer initialises a cluster with the machine's PostgreSQL
// (Debian's package, which make test installs) and starts it. It is
// stopped, and its files removed, when the test ends.
func StartPostgresServer(t testing.TB) *PostgresServer {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		t.Fatalf("testenv: PostgreSQL's initdb is not installed (make test installs it)")
	}
	sort.Strings(bins)
	// PostgreSQL will not run as root: the cluster is the postgres user's,
	// in a directory that user can reach.
	dir, err := os.MkdirTemp("", "pgserver-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	_ = os.Chmod(dir, 0o777)
	s := &PostgresServer{t: t, bin: filepath.Dir(bins[len(bins)-1]), dir: dir, data: filepath.Join(dir, "data")}
	t.Cleanup(func() {
		_ = s.pgctl("stop", "-m", "immediate")
		_ = os.RemoveAll(dir)
	})
	// --no-sync: the cluster dies with the test; the server itself runs
	// with fsync on, as in production, so a crash keeps what it committed.
	if out, err := s.command("initdb", "-D", s.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
		"--locale=C.UTF-8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("testenv: initdb: %v: %s", err, out)
	}
	for range 5 {
		s.Port = freePort(t)
		if err = s.start(); err == nil {
			return s
		}
	}
	t.Fatalf("testenv: %v", err)
	return nil
}

// URL reaches the cluster's postgres database.
func (s *PostgresServer) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.Port)
}

// Start starts the stopped cluster on its port and waits until it accepts
// connections (after crash recovery, if it crashed).
func (s *PostgresServer) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("testenv: %v", err)
	}
}

// Crash stops the cluster as a power cut or a kill -9 of the postmaster
// would (pg_ctl stop -m immediate): every connection drops, nothing is
// flushed, and the next start runs crash recovery.
func (s *PostgresServer) Crash() {
	s.t.Helper()
	if err := s.pgctl("stop", "-m", "immediate"); err != nil {
		s.t.Fatalf("testenv: crash postgres: %v", err)
	}
}

// Stop shuts the cluster down cleanly (pg_ctl stop -m fast): sessions are
// ended and a shutdown checkpoint written, as in a planned restart.
func (s *PostgresServer) Stop() {
	s.t.Helper()
	if err := s.pgctl("stop", "-m", "fast"); err != nil {
		s.t.Fatalf("testenv: stop postgres: %v", err)
	}
}

func (s *PostgresServer) start() error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", s.Port, s.dir)
	return s.pgctl("start", "-t", "60", "-l", filepath.Join(s.dir, "server.log"), "-o", opts)
}

// pgctl runs pg_ctl on the cluster and waits for it to finish its action.
func (s *PostgresServer) pgctl(args ...string) error {
	out, err := s.command("pg_ctl", append([]string{"-D", s.data, "-w"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %s on port %d: %w: %s (server log: %s)", args[0], s.Port, err, out,
			lastLines(filepath.Join(s.dir, "server.log"), 3))
	}
	return nil
}

// command runs one of PostgreSQL's programs, as the postgres user when this
// process is root.
func (s *PostgresServer) command(name string, args ...string) *exec.Cmd {
	path := filepath.Join(s.bin, name)
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}
