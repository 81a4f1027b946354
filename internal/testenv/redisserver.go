package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a redis-server of one test's own, for fault tests that stop,
// flush or restart Redis without touching the shared one.
type RedisServer struct {
	t    testing.TB
	Port int
	dir  string
	cmd  *exec.Cmd
	// exited is closed when cmd has exited.
	exited chan struct{}
	// extra are more redis-server arguments (cluster mode).
	extra []string
	plain *redis.Client
}

// StartRedisServer starts a private redis-server on a free loopback port. It
// is killed when the test ends.
func StartRedisServer(t testing.TB) *RedisServer {
	t.Helper()
	s := &RedisServer{t: t, dir: t.TempDir()}
	s.startOnFreePort(freePort)
	t.Cleanup(s.Kill)
	return s
}

// startOnFreePort starts the server on a port from newPort, and on another
// if it could not bind that one: a port found free may be taken before
// redis-server binds it (by any of the tests running in parallel, or, for a
// cluster node's bus port, by a connection's local port).
func (s *RedisServer) startOnFreePort(newPort func(testing.TB) int) {
	s.t.Helper()
	var err error
	for range 5 {
		s.Port = newPort(s.t)
		if err = s.start(); err == nil {
			return
		}
	}
	s.t.Fatalf("testenv: %v", err)
}

// freePort is a loopback port free when asked (a server started on it may
// still find it taken; see startOnFreePort).
func freePort(t testing.TB) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port
}

// Addr is host:port of the server.
func (s *RedisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// Start (re)starts the server on its port, without persistence, and waits
// until it answers.
func (s *RedisServer) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("testenv: %v", err)
	}
}

// start starts the server on its port and waits until it answers, as this
// process (not another server that took the port), or reports why not.
func (s *RedisServer) start() error {
	logFile := filepath.Join(s.dir, "redis.log")
	cmd := exec.Command("redis-server", append([]string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--logfile", logFile,
		// Replicas sync at once, not five seconds after they connect:
		// failover tests kill masters within seconds.
		"--repl-diskless-sync-delay", "0"}, s.extra...)...)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("testenv: start redis-server (make test installs it): %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	// Short timeouts: whatever else holds the port may never answer.
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), DialTimeout: 500 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			s.cmd = nil
			return fmt.Errorf("redis-server on %s exited: %s", s.Addr(), lastLines(logFile, 3))
		default:
		}
		if pid, err := serverPID(c); err == nil && pid == cmd.Process.Pid {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Kill()
	return fmt.Errorf("redis-server on %s did not answer in 20 s: %s", s.Addr(), lastLines(logFile, 3))
}

// serverPID is the process id of the server c reaches.
func serverPID(c *redis.Client) (int, error) {
	info, err := c.Info(context.Background(), "server").Result()
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("no process_id in INFO server")
}

// lastLines is the end of a log file, for a failure message.
func lastLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], " | ")
}

// Kill stops the server at once, like a crash: everything in it is lost.
func (s *RedisServer) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

func (s *RedisServer) String() string { return fmt.Sprintf("redis-server %s", s.Addr()) }

// WaitReplicaSynced waits until this server, a replica, has finished its
// sync with its master.
func (s *RedisServer) WaitReplicaSynced() {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		info, err := s.client().Info(context.Background(), "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("testenv: replica %s did not sync", s.Addr())
}
