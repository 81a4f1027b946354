package testenv

import (
	"context"
	"fmt"
	"net"
	"os/exec"
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
	// extra are more redis-server arguments (cluster mode).
	extra []string
	plain *redis.Client
}

// StartRedisServer starts a private redis-server on a free loopback port. It
// is killed when the test ends.
func StartRedisServer(t testing.TB) *RedisServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	_ = lis.Close()
	s := &RedisServer{t: t, Port: port, dir: t.TempDir()}
	s.Start()
	t.Cleanup(s.Kill)
	return s
}

// Addr is host:port of the server.
func (s *RedisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// Start (re)starts the server on its port, without persistence, and waits
// until it answers.
func (s *RedisServer) Start() {
	s.t.Helper()
	s.cmd = exec.Command("redis-server", append([]string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		// Replicas sync at once, not five seconds after they connect:
		// failover tests kill masters within seconds.
		"--repl-diskless-sync-delay", "0"}, s.extra...)...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("testenv: start redis-server (make test installs it): %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c.Ping(context.Background()).Err() == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("testenv: redis-server on %s did not answer", s.Addr())
}

// Kill stops the server at once, like a crash: everything in it is lost.
func (s *RedisServer) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
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
