package claim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/pool"
)

// Refill ahead of demand. The scheduled refill runs every few seconds; a
// flash sale drains a list faster than that. So claims watch the list: a
// pop that leaves it under the pool's mark starts one refill in the
// background (one per pool across replicas, by a Redis lock), sized by how
// fast the list drains; a claim that finds it empty stages a batch itself
// (one per pool per process; the others wait for it) and pops again, so the
// Postgres fallback serves only when Redis cannot, or Postgres has nothing
// left to stage. A pool spread over several Redis shards is watched shard by
// shard: each has its own drain rate, refill and lock.
type ahead struct {
	svc *Service
	// urgent coalesces the refills of claims that found the list empty.
	urgent singleflight.Group

	rates sync.Map // shard name -> *drain: pops per shard, for sizing; read on every pop

	mu      sync.Mutex
	running map[string]bool // shards with a background refill here
	ctx     context.Context // ends at Stop
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// Refill-ahead tuning.
const (
	// aheadHorizon is how much of the observed drain one refill stages.
	aheadHorizon = 2 * time.Second
	// aheadWarning is how long before it would run dry a list is refilled,
	// at the observed drain, even above the pool's low-water mark.
	aheadWarning = 500 * time.Millisecond
	// aheadTimeout bounds one refill, and the lock that marks it.
	aheadTimeout = 10 * time.Second
)

// drain counts a shard's pops, to estimate its drain rate.
type drain struct {
	pops atomic.Int64
	mu   sync.Mutex
	at   time.Time // when rate was last estimated
	seen int64     // pops counted then
	rate float64   // pops per second, smoothed
}

func newAhead(s *Service) *ahead {
	ctx, cancel := context.WithCancel(context.Background())
	return &ahead{svc: s, running: map[string]bool{}, ctx: ctx, cancel: cancel}
}

// stop cancels background refills and waits for them.
func (a *ahead) stop() {
	a.cancel()
	a.wg.Wait()
}

func (a *ahead) drainOf(shard string) *drain {
	if d, ok := a.rates.Load(shard); ok {
		return d.(*drain)
	}
	d, _ := a.rates.LoadOrStore(shard, &drain{at: time.Now()})
	return d.(*drain)
}

// perSecond updates and returns the shard's smoothed drain rate.
func (d *drain) perSecond() float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	now, n := time.Now(), d.pops.Load()
	if dt := now.Sub(d.at).Seconds(); dt >= 0.05 {
		r := float64(n-d.seen) / dt
		d.rate = 0.5*d.rate + 0.5*r
		d.at, d.seen = now, n
	}
	return d.rate
}

// popped is told of every pop from a shard and the entries left after it;
// it starts a background refill of the shard when its list runs low.
func (a *ahead) popped(p pool.Pool, shard int, name string, left int64) {
	d := a.drainOf(name)
	d.pops.Add(1)
	mark := max(int64(perShard(p.RefillLowWater, shardCount(p))), int64(d.perSecond()*aheadWarning.Seconds()))
	if left >= mark {
		return
	}
	a.start(p, shard, name, d)
}

// dry is told of a shard a claim found empty and left for another: it
// starts a background refill of the shard.
func (a *ahead) dry(p pool.Pool, shard int, name string) {
	a.start(p, shard, name, a.drainOf(name))
}

// start starts a background refill of the shard unless one is running here.
func (a *ahead) start(p pool.Pool, shard int, name string, d *drain) {
	a.mu.Lock()
	if a.running[name] || a.ctx.Err() != nil {
		a.mu.Unlock()
		return
	}
	a.running[name] = true
	a.wg.Add(1)
	a.mu.Unlock()
	go func() {
		defer a.wg.Done()
		defer func() { a.mu.Lock(); delete(a.running, name); a.mu.Unlock() }()
		a.background(p, shard, name, d)
	}()
}

// size is how many codes one refill of a shard of the pool stages: its share
// of the batch size, or what it drains over aheadHorizon if that is more.
func (a *ahead) size(p pool.Pool, d *drain) int {
	return min(max(perShard(p.RefillBatchSize, shardCount(p)), int(d.perSecond()*aheadHorizon.Seconds())), pool.MaxRefillBatchSize)
}

// background stages a batch into the shard unless another replica is
// already refilling it.
func (a *ahead) background(p pool.Pool, shard int, name string, d *drain) {
	ctx, cancel := context.WithTimeout(a.ctx, aheadTimeout)
	defer cancel()
	st := a.svc.redis.stock
	token := newToken()
	ok, err := st.TryLock(ctx, name, token, aheadTimeout)
	if err != nil || !ok {
		return // Redis failing (the claims fall back), or a refill running elsewhere
	}
	defer func() { _ = st.Unlock(context.WithoutCancel(ctx), name, token) }()
	if _, err := a.svc.stager.stageBatch(ctx, p, shard, a.size(p, d)); err != nil && ctx.Err() == nil {
		a.svc.log.WarnContext(ctx, "refill ahead of demand failed; the refill job will retry", "pool", p.ID, "shard", shard, "err", err)
	}
}

// empty stages a batch into a shard now, for a claim that found every shard
// of the pool empty, sharing one refill among the claims of this process
// that find it so meanwhile, and returns how many codes it staged.
func (a *ahead) empty(ctx context.Context, p pool.Pool, shard int) (int, error) {
	name := stock.Shard(p.ID, shard)
	d := a.drainOf(name)
	v, err, _ := a.urgent.Do(name, func() (any, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), aheadTimeout)
		defer cancel()
		// A refill under way (here or on another replica, into any shard)
		// holds the rows it stages: wait for it rather than race it for
		// them, which would find nothing and send the claim to the fallback.
		waited := false
		for _, sh := range stock.Shards(p.ID, shardCount(p)) {
			waited = a.awaitRefill(rctx, sh) || waited
		}
		if waited {
			return 1, nil // pop again
		}
		// One chunk, so the claims waiting here pop again soon; their pops
		// start the background refill of the rest.
		return a.svc.stager.stageBatch(rctx, p, shard, min(a.size(p, d), stageChunkMax))
	})
	if err != nil {
		return 0, err
	}
	return v.(int), nil
}

// awaitRefill waits while a refill holds the shard's lock and its list is
// still empty (a refill pushes its codes a chunk at a time, so the first
// chunk ends the wait), and reports whether it waited.
func (a *ahead) awaitRefill(ctx context.Context, shard string) bool {
	waited := false
	for {
		locked, staged, err := a.svc.redis.stock.Refilling(ctx, shard)
		if err != nil || !locked || staged > 0 {
			return waited || staged > 0
		}
		waited = true
		select {
		case <-ctx.Done():
			return waited
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func newToken() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
