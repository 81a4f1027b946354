package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisSentinel is a master, its replica and one Sentinel watching them
// (quorum 1, the master deemed down after half a second), of one test's own.
type RedisSentinel struct {
	t               testing.TB
	Master, Replica *RedisServer
	sentinelPort    int
	sentinel        *exec.Cmd
	// MasterName is the name the Sentinel knows the master by.
	MasterName string
}

// StartRedisSentinel starts the three and waits until the Sentinel knows the
// replica. Everything is killed when the test ends.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	s := &RedisSentinel{t: t, MasterName: "dispenser"}
	s.Master = StartRedisServer(t)
	s.Replica = &RedisServer{t: t, dir: t.TempDir(),
		extra: []string{"--replicaof", "127.0.0.1", strconv.Itoa(s.Master.Port)}}
	s.Replica.startOnFreePort(freePort)
	t.Cleanup(s.Replica.Kill)
	s.Replica.WaitReplicaSynced()
	s.sentinelPort = freePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
sentinel monitor %s 127.0.0.1 %d 1
sentinel down-after-milliseconds %s 2000
sentinel failover-timeout %s 3000
sentinel parallel-syncs %s 1
`, s.sentinelPort, dir, s.MasterName, s.Master.Port, s.MasterName, s.MasterName, s.MasterName)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	s.sentinel = exec.Command("redis-server", conf, "--sentinel")
	if err := s.sentinel.Start(); err != nil {
		t.Fatalf("testenv: start sentinel: %v", err)
	}
	t.Cleanup(func() {
		_ = s.sentinel.Process.Kill()
		_ = s.sentinel.Wait()
	})
	c := redis.NewSentinelClient(&redis.Options{Addr: s.SentinelAddr()})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		replicas, err := c.Replicas(context.Background(), s.MasterName).Result()
		if err == nil && len(replicas) > 0 {
			return s
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("testenv: the sentinel did not find the replica")
	return nil
}

// SentinelAddr is host:port of the Sentinel.
func (s *RedisSentinel) SentinelAddr() string { return "127.0.0.1:" + strconv.Itoa(s.sentinelPort) }

// URL is the redis+sentinel:// URL of the master (see stock.Open).
func (s *RedisSentinel) URL() string {
	return "redis+sentinel://" + s.SentinelAddr() + "?master_name=" + s.MasterName + "&dial_timeout=200ms"
}

// WaitFailover waits until the Sentinel names the replica as the master.
func (s *RedisSentinel) WaitFailover() {
	s.t.Helper()
	c := redis.NewSentinelClient(&redis.Options{Addr: s.SentinelAddr()})
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		addr, err := c.GetMasterAddrByName(context.Background(), s.MasterName).Result()
		if err == nil && len(addr) == 2 && addr[1] == strconv.Itoa(s.Replica.Port) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("testenv: no failover to the replica")
}
