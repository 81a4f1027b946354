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
		s := &RedisServer{t: t, Port: clusterPort(t), dir: t.TempDir()}
		s.extra = []string{"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
			"--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0"}
		s.Start()
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

// KillMaster kills a live master once its replica has acknowledged its
// writes, so the failover loses none, and returns its address. Writes are
// paused first (CLIENT PAUSE WRITE), then WAIT: without the pause, a write
// landing between WAIT's answer and the kill would be lost under load.
func (c *RedisCluster) KillMaster() string {
	c.t.Helper()
	m := c.Master()
	ctx := context.Background()
	if err := m.client().Do(ctx, "CLIENT", "PAUSE", 10_000, "WRITE").Err(); err != nil {
		c.t.Fatalf("testenv: CLIENT PAUSE on %s: %v", m.Addr(), err)
	}
	if _, err := m.client().Do(ctx, "WAIT", 1, 2000).Result(); err != nil {
		c.t.Fatalf("testenv: WAIT on %s: %v", m.Addr(), err)
	}
	m.Kill()
	return m.String()
}
