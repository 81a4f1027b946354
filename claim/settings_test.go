package claim

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/pool"
)

// Pool settings are read again in the background while claims keep a pool
// busy (internal/fresh), yet a pause still takes effect within
// PoolCacheTTL: no claim that starts more than PoolCacheTTL after the pause
// committed is served.
func TestPauseTakesEffectWithinCacheTTLUnderLoad(t *testing.T) {
	ctx, e := start(t)
	const ttl = 20 * time.Millisecond // newEnv's PoolCacheTTL
	e.fillStaged("busy", 3000, pool.Pool{PerUserLimit: 1})

	type outcome struct {
		started time.Time
		err     error
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		stop     atomic.Bool
		n        atomic.Int64
		wg       sync.WaitGroup
	)
	for w := range 8 {
		wg.Go(func() {
			for !stop.Load() {
				i := n.Add(1)
				started := time.Now()
				_, err := e.svc.Claim(ctx, Request{PoolID: "busy", UserID: fmt.Sprint("u", w, "-", i), RequestID: fmt.Sprint("r", i)})
				mu.Lock()
				outcomes = append(outcomes, outcome{started, err})
				mu.Unlock()
				if err != nil && !errors.Is(err, ErrPoolPaused) {
					t.Errorf("claim %d: %v", i, err)
					return
				}
			}
		})
	}
	time.Sleep(150 * time.Millisecond) // several TTLs of claims: refreshes ahead of expiry
	_, err := e.store.UpdatePool(ctx, "busy", func(p *pool.Pool) error { p.Paused = true; return nil })
	require.NoError(t, err)
	paused := time.Now()
	// Claims on for a while after the pause has taken effect: until some
	// have started past it and ended (a loaded machine, -race and parallel
	// tests can make claims slow), at most a few seconds.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		late := 0
		for _, o := range outcomes {
			if o.started.After(paused.Add(ttl)) {
				late++
			}
		}
		mu.Unlock()
		if late >= 8 && time.Since(paused) >= 100*time.Millisecond {
			break
		}
	}
	stop.Store(true)
	wg.Wait()

	var before, after, refusedAfter int
	for _, o := range outcomes {
		switch {
		case o.started.Before(paused.Add(-ttl)):
			if o.err == nil {
				before++
			}
		case o.started.After(paused.Add(ttl)):
			after++
			require.ErrorIs(t, o.err, ErrPoolPaused, "a claim that started %s after the pause was served", o.started.Sub(paused))
			refusedAfter++
		}
	}
	require.Positive(t, before, "no claim was served before the pause")
	require.Positive(t, after, "no claim started after the pause had taken effect")
	require.Equal(t, after, refusedAfter)
	e.audit("busy")
}
