package testenv

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a Redis Cluster of one test's own: three masters and a
// replica each, on loopback, with a one-second node timeout so a failover
// takes about two seconds.
type RedisCluster struct {
	t     testing.TB
	Nodes []*RedisServer
}

// clusterPort finds a free port p whose cluster bus port (p + 10000) is free
// too.
func clusterPort(t testing.TB) int {
	t.Helper()
	for range 200 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testenv: free port: %v", err)
		}
		port := lis.Addr().(*net.TCPAddr).Port
		_ = lis.Close()
		if port+10000 > 65535 {
			continue
		}
		bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
		if err != nil {
			continue
		}
		_ = bus.Close()
		return port
	}
	t.Fatalf("testenv: no free port pair for a cluster node")
	return 0
}

// StartRedisCluster starts six cluster-enabled redis-servers, joins them into
// a cluster of three masters with one replica each and waits until every
// slot is served. Everything is killed when the test ends.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	c := &RedisCluster{t: t}
	var addrs []string
	for range 6 {
		s := &RedisServer{t: t, dir: t.TempDir()}
		s.extra = []string{"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
			"--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0",
			"--cluster-require-full-coverage", "no"}
		s.startOnFreePort(clusterPort)
		t.Cleanup(s.Kill)
		c.Nodes = append(c.Nodes, s)
		addrs = append(addrs, s.Addr())
	}
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, addrs...),
		"--cluster-replicas", "1", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("testenv: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy()
	for _, n := range c.Nodes {
		role, err := n.client().Do(context.Background(), "ROLE").Slice()
		if err == nil && len(role) > 0 && fmt.Sprint(role[0]) == "slave" {
			n.WaitReplicaSynced()
		}
	}
	return c
}

// URL is the cluster's redis+cluster:// URL (see stock.Open).
func (c *RedisCluster) URL() string {
	u := "redis+cluster://" + c.Nodes[0].Addr() + "?dial_timeout=200ms&max_redirects=8"
	for _, n := range c.Nodes[1:] {
		u += "&addr=" + n.Addr()
	}
	return u
}

// WaitHealthy waits until every live node reports cluster_state:ok.
func (c *RedisCluster) WaitHealthy() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ok := true
		for _, n := range c.Nodes {
			if n.cmd == nil {
				continue
			}
			info, err := n.client().ClusterInfo(context.Background()).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				ok = false
				break
			}
		}
		if ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("testenv: redis cluster did not become healthy")
}

// Master returns a live master node.
func (c *RedisCluster) Master() *RedisServer {
	c.t.Helper()
	for _, n := range c.Nodes {
		if n.cmd == nil {
			continue
		}
		role, err := n.client().Do(context.Background(), "ROLE").Slice()
		if err == nil && len(role) > 0 && fmt.Sprint(role[0]) == "master" {
			return n
		}
	}
	c.t.Fatalf("testenv: no live master")
	return nil
}

// client is a plain client of one node, closed when the test ends.
func (s *RedisServer) client() *redis.Client {
	if s.plain == nil {
		s.plain = redis.NewClient(&redis.Options{Addr: s.Addr()})
		s.t.Cleanup(func() { _ = s.plain.Close() })
	}
	return s.plain
}

// KillMaster kills a live master once its replica has every write, so the
// failover loses none (PauseWritesAndSync), and returns its address.
func (c *RedisCluster) KillMaster() string {
	c.t.Helper()
	m := c.Master()
	PauseWritesAndSync(c.t, m.client())
	m.Kill()
	return m.String()
}

// PauseWritesAndSync pauses the writes of the master c reaches (CLIENT PAUSE
// WRITE, for ten seconds, renewed while it waits) and waits until its replicas have acknowledged its
// whole replication stream: a master killed then loses no write. WAIT alone
// is not enough under load (a write may land between its answer and the
// kill), and WAIT is itself blocked while writes are paused, so the offsets
// are compared instead (replicas acknowledge every second).
func PauseWritesAndSync(t testing.TB, c redis.UniversalClient) {
	t.Helper()
	ctx := context.Background()
	// Under a loaded machine a replica may be reconnecting (a full resync
	// takes a while): wait up to 20 s, renewing the pause before it ends.
	var paused time.Time
	deadline := time.Now().Add(20 * time.Second)
	for {
		if time.Since(paused) > 5*time.Second {
			if err := c.Do(ctx, "CLIENT", "PAUSE", 10_000, "WRITE").Err(); err != nil {
				t.Fatalf("testenv: CLIENT PAUSE: %v", err)
			}
			paused = time.Now()
		}
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			t.Fatalf("testenv: INFO replication: %v", err)
		}
		if synced(info) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: replicas did not catch up with the master: %s", info)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// synced reports whether INFO replication shows at least one replica and
// every replica at the master's offset.
func synced(info string) bool {
	var master int64 = -1
	var replicas []int64
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "master_repl_offset:"); ok {
			master, _ = strconv.ParseInt(v, 10, 64)
		}
		if strings.HasPrefix(line, "slave") && strings.Contains(line, "offset=") {
			for _, kv := range strings.Split(line[strings.Index(line, ":")+1:], ",") {
				if v, ok := strings.CutPrefix(kv, "offset="); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					replicas = append(replicas, n)
				}
			}
		}
	}
	if master < 0 || len(replicas) == 0 {
		return false
	}
	for _, r := range replicas {
		if r < master {
			return false
		}
	}
	return true
}
