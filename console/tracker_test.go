package console

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// Rates are differences of the claimed count over time; the path mix is
// shares of the answers in the same window; the sparkline spans the samples.
func TestTrackerLive(t *testing.T) {
	t.Parallel()
	tr := newTracker()
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	require.False(t, tr.live("p").Known)
	tr.add("p", sample{at: t0, claimed: 100, paths: map[string]int64{"redis": 100}})
	tr.add("p", sample{at: t0.Add(500 * time.Millisecond), claimed: 900}) // too soon: dropped
	require.False(t, tr.live("p").Known)
	tr.add("p", sample{at: t0.Add(2 * time.Second), claimed: 300, paths: map[string]int64{"redis": 250, "fallback": 50}})
	tr.add("p", sample{at: t0.Add(4 * time.Second), claimed: 300, paths: map[string]int64{"redis": 250, "fallback": 50}})
	l := tr.live("p")
	require.True(t, l.Known)
	require.InDelta(t, 50.0, l.Rate, 0.01) // 200 claims over 4 s
	require.Equal(t, []share{{"redis", 75}, {"fallback", 25}, {"replay", 0}}, l.Mix)
	require.InDelta(t, 100.0, l.SparkMax, 0.01)
	points := strings.Fields(l.Spark)
	require.Len(t, points, 2)
	require.Equal(t, "60.0,1.0", points[0])
	require.Equal(t, "120.0,23.0", points[1])

	// Samples older than the window are dropped.
	tr.add("p", sample{at: t0.Add(sparkWindow + 3*time.Second), claimed: 400})
	tr.mu.Lock()
	require.Len(t, tr.pools["p"], 2)
	tr.mu.Unlock()
}

// One stats answer serves every page for statsTTL; concurrent pages share
// one call; errors are not kept.
func TestStatsCache(t *testing.T) {
	t.Parallel()
	var c statsCache
	calls := 0
	fetch := func(context.Context) (*dispenserv1.PoolStats, error) {
		calls++
		return &dispenserv1.PoolStats{PoolId: "p", Claimed: int64(calls)}, nil
	}
	for range 5 {
		st, err := c.get(context.Background(), "p", fetch)
		require.NoError(t, err)
		require.Equal(t, int64(1), st.GetClaimed())
	}
	require.Equal(t, 1, calls)
	_, err := c.get(context.Background(), "q", func(context.Context) (*dispenserv1.PoolStats, error) {
		return nil, errors.New("down")
	})
	require.Error(t, err)
	st, err := c.get(context.Background(), "q", fetch)
	require.NoError(t, err)
	require.Equal(t, int64(2), st.GetClaimed())
	c.mu.Lock()
	e := c.entries["p"]
	require.Equal(t, statsTTL, e.ttl, "a quick answer is kept statsTTL")
	e.at = e.at.Add(-statsTTL)
	c.entries["p"] = e
	c.mu.Unlock()
	st, err = c.get(context.Background(), "p", fetch)
	require.NoError(t, err)
	require.Equal(t, int64(3), st.GetClaimed())

	// A slow answer is kept longer, in proportion.
	_, err = c.get(context.Background(), "slow", func(ctx context.Context) (*dispenserv1.PoolStats, error) {
		time.Sleep(100 * time.Millisecond)
		return fetch(ctx)
	})
	require.NoError(t, err)
	c.mu.Lock()
	require.GreaterOrEqual(t, c.entries["slow"].ttl, 5*time.Second)
	c.mu.Unlock()
}
