package gcfloor

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The goal a target gives, as the runtime computes it (live heap only).
func goal(p int, live uint64) uint64 {
	return max(live*uint64(100+p)/100, goHeapMinimum*uint64(p)/100)
}

// The target puts the goal at the floor while the live heap is small, and is
// the base once the base alone reaches it; the runtime's minimum heap, which
// grows with the target, never takes the goal past the floor.
func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		base        int
		floor, live uint64
		want        int
	}{
		{400, 64 * mib, 4 * mib, 1500},  // 4 MiB × 16 = 64 MiB
		{400, 64 * mib, 3 * mib, 1600},  // the runtime's minimum: 4 MiB × 16
		{400, 64 * mib, 0, 1600},        // nothing measured yet: the same
		{400, 64 * mib, 100, 1600},      // a tiny heap: the same
		{400, 64 * mib, 8 * mib, 700},   // 8 MiB × 8
		{400, 64 * mib, 16 * mib, 400},  // 16 × 5 = 80 MiB is over the floor already
		{400, 64 * mib, 64 * mib, 400},  // at the floor
		{400, 64 * mib, 200 * mib, 400}, // an import's heap: the base only
		{100, 64 * mib, 40 * mib, 100},  // 40 × 2 = 80
		{100, 64 * mib, 20 * mib, 220},  // 20 × 3.2 = 64
		{50, 64 * mib, 32*mib + 1, 100}, // just over half the floor
		{400, 0, 3 * mib, 400},          // no floor
		{400, 8 * mib, 1 * mib, 400},    // a floor under the base's own minimum (16 MiB)
	} {
		got := Percent(c.base, c.floor, c.live)
		require.Equal(t, c.want, got, "base %d floor %d live %d", c.base, c.floor, c.live)
		if got > c.base {
			g := goal(got, c.live)
			require.GreaterOrEqual(t, g, c.floor*99/100, "the goal reaches the floor: live %d", c.live)
			require.LessOrEqual(t, g, c.floor*101/100, "and goes no further: live %d", c.live)
		}
	}
}

// Run raises the target while the live heap is under the floor, and sets the
// base back when it stops; with the collector off it changes nothing.
func TestRunRaisesTheTargetAndGivesItBack(t *testing.T) {
	prev := debug.SetGCPercent(400)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	runtime.GC() // a live heap measured: this test's is a few MiB at most

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); Run(ctx, 400, 256<<20, time.Millisecond) }()
	require.Eventually(t, func() bool {
		p := debug.SetGCPercent(-1)
		debug.SetGCPercent(p)
		return p > 400
	}, 5*time.Second, 5*time.Millisecond)
	cancel()
	<-done
	require.Equal(t, 400, debug.SetGCPercent(400), "the base is set back")

	debug.SetGCPercent(-1)
	Run(context.Background(), -1, 256<<20, time.Millisecond) // returns at once
	require.Equal(t, -1, debug.SetGCPercent(400))
}
