package console

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// The console's live figures come from samples it takes whenever a page
// polls (every few seconds while a pools page is open): each pool's claimed
// count (from Postgres, so every replica's claims) and the ClaimCode answers
// by path (this replica's counters). Claims per second are differences of
// the claimed count; the path mix, shares of this replica's answers.
// Samples are kept for sparkWindow, in memory: a console nobody watched has
// no history yet.

const (
	// sparkWindow is how far back the sparkline reaches.
	sparkWindow = 10 * time.Minute
	// minSampleGap keeps bursts of polls from filling the history.
	minSampleGap = time.Second
	// rateWindow is what the current rate is averaged over.
	rateWindow = 10 * time.Second
	// maxTrackedPools bounds the memory of the history.
	maxTrackedPools = 1000
)

type sample struct {
	at      time.Time
	claimed int64
	paths   map[string]int64 // answers that gave a code, by path
}

type tracker struct {
	mu    sync.Mutex
	pools map[string][]sample
}

func newTracker() *tracker { return &tracker{pools: map[string][]sample{}} }

// add records a sample of pool, unless the last one is too recent.
func (t *tracker) add(pool string, s sample) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.pools[pool]
	if n := len(h); n > 0 && s.at.Sub(h[n-1].at) < minSampleGap { // too soon, the same, or out of order
		return
	}
	if _, known := t.pools[pool]; !known && len(t.pools) >= maxTrackedPools {
		return
	}
	cut := 0
	for cut < len(h) && s.at.Sub(h[cut].at) > sparkWindow {
		cut++
	}
	t.pools[pool] = append(h[cut:], s)
}

// live is what a page shows of one pool's recent claims.
type live struct {
	// Known is false until two samples exist.
	Known bool
	// Rate is claims per second over the last rateWindow (all replicas).
	Rate float64
	// Mix is the share of this replica's answers by path, over the same
	// window; empty when it gave none.
	Mix []share
	// Spark is the polyline of claims per second since the first sample
	// kept (at most sparkWindow ago), in a 120 x 24 box; SparkMax the rate
	// at its top.
	Spark    string
	SparkMax float64
}

type share struct {
	Path    string
	Percent float64
}

// live computes the pool's figures from its samples.
func (t *tracker) live(pool string) live {
	t.mu.Lock()
	h := append([]sample(nil), t.pools[pool]...)
	t.mu.Unlock()
	if len(h) < 2 {
		return live{}
	}
	last := h[len(h)-1]
	from := h[len(h)-2]
	for i := len(h) - 2; i >= 0 && last.at.Sub(h[i].at) <= rateWindow; i-- {
		from = h[i]
	}
	out := live{Known: true}
	if dt := last.at.Sub(from.at).Seconds(); dt > 0 {
		out.Rate = float64(max(last.claimed-from.claimed, 0)) / dt
	}
	var total int64
	diffs := map[string]int64{}
	for _, p := range []string{"redis", "fallback", "replay"} {
		d := max(last.paths[p]-from.paths[p], 0)
		diffs[p] = d
		total += d
	}
	if total > 0 {
		for _, p := range []string{"redis", "fallback", "replay"} {
			out.Mix = append(out.Mix, share{Path: p, Percent: 100 * float64(diffs[p]) / float64(total)})
		}
	}
	rates := make([]float64, 0, len(h)-1)
	times := make([]time.Time, 0, len(h)-1)
	for i := 1; i < len(h); i++ {
		dt := h[i].at.Sub(h[i-1].at).Seconds()
		rates = append(rates, float64(max(h[i].claimed-h[i-1].claimed, 0))/dt)
		times = append(times, h[i].at)
	}
	out.Spark, out.SparkMax = polyline(rates, times, h[0].at, last.at)
	return out
}

// polyline draws rates at their times, from the first sample (or
// sparkWindow back) to end, in a 120 x 24 box (y grows downwards).
func polyline(rates []float64, times []time.Time, start, end time.Time) (string, float64) {
	top := 0.0
	for _, r := range rates {
		top = max(top, r)
	}
	span := max(end.Sub(start).Seconds(), 1)
	y := func(r float64) float64 {
		if top == 0 {
			return 23
		}
		return 23 - 22*r/top
	}
	var b strings.Builder
	if len(rates) == 1 {
		fmt.Fprintf(&b, "0,%.1f ", y(rates[0]))
	}
	for i, r := range rates {
		x := 120 * (1 - end.Sub(times[i]).Seconds()/span)
		fmt.Fprintf(&b, "%.1f,%.1f ", x, y(r))
	}
	return strings.TrimSpace(b.String()), top
}
