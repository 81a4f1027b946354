// Package gcfloor keeps the Go collector's heap goal from falling under a
// floor. The collector's target is a percentage over the live heap
// (GOGC); dispenserd's live heap is a few megabytes under claim load while
// each claim allocates a few kilobytes, so at any fixed percentage small
// enough for the heap of an import the collector runs several times a
// second during a sale. Raising the percentage while the live heap is small,
// so that the goal is at least the floor, and giving it back as the live heap
// grows, makes the sale's collections rare without letting an import's heap
// grow by more than the base percentage.
package gcfloor

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// liveMetric is the heap the last collection found live.
const liveMetric = "/gc/heap/live:bytes"

// goHeapMinimum is the Go runtime's smallest heap goal at a target of 100
// (defaultHeapMinimum in runtime/mgcpacer.go). It scales with the target, so
// a target of floor/goHeapMinimum × 100 alone makes the goal at least the
// floor, and a higher one would make it more.
const goHeapMinimum = 4 << 20

// Percent is the collector target that gives a heap goal of about floor
// bytes over live bytes of live heap (0: none measured yet), and never less
// than base: the goal is the larger of live × (1 + target/100) and the
// runtime's minimum, goHeapMinimum × target/100.
func Percent(base int, floor, live uint64) int {
	if floor == 0 || live >= floor {
		return base
	}
	p := floor * 100 / goHeapMinimum
	if live > 0 {
		// live × (1 + p/100) reaches the floor: p = floor/live × 100 − 100,
		// rounded up.
		p = min(p, (floor*100+live-1)/live-100)
	}
	return max(base, int(p))
}

// Run keeps the target at Percent(base, floor, live) until ctx ends, reading
// the live heap every interval, and then sets it back to base. A base of -1
// (the collector off) or a floor of 0 leaves the target alone.
func Run(ctx context.Context, base int, floor uint64, every time.Duration) {
	if base < 0 || floor == 0 {
		return
	}
	sample := []metrics.Sample{{Name: liveMetric}}
	current := base
	t := time.NewTicker(every)
	defer t.Stop()
	defer debug.SetGCPercent(base)
	for {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			if p := Percent(base, floor, sample[0].Value.Uint64()); p != current {
				debug.SetGCPercent(p)
				current = p
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
