package claim

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// grouper gathers concurrent requests into batches for one Postgres
// statement each: the first item of a batch waits maxWait for others (and
// longer while every flusher is busy), a batch holds at most maxBatch, and
// inFlight flusher goroutines (living as long as the grouper, so their
// stacks grow once) flush batches at once.
// The group commit of claims and the confirms of holds both use it.
type grouper[T any] struct {
	maxBatch, inFlight int
	maxWait            time.Duration
	flush              func([]T)
	in                 chan T
	batches            chan []T
	wg                 sync.WaitGroup
	stop               chan struct{}
	once               sync.Once
	done               chan struct{}
	started            atomic.Bool
}

func newGrouper[T any](maxBatch int, maxWait time.Duration, inFlight int, flush func([]T)) *grouper[T] {
	return &grouper[T]{maxBatch: maxBatch, maxWait: maxWait, inFlight: inFlight, flush: flush,
		in: make(chan T, maxBatch*inFlight), batches: make(chan []T), stop: make(chan struct{}), done: make(chan struct{})}
}

// await queues it and waits for the answer its flush sends on done. A
// queued item is flushed even if ctx ends first; the caller then just stops
// waiting.
func await[T, R any](ctx context.Context, g *grouper[T], it T, done <-chan R) (R, error) {
	var zero R
	if err := g.put(ctx, it); err != nil {
		return zero, err
	}
	select {
	case r := <-done:
		return r, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// start starts the batcher and the flushers.
func (g *grouper[T]) start() {
	if g.started.Swap(true) {
		return
	}
	for range g.inFlight {
		g.wg.Go(func() {
			for batch := range g.batches {
				g.flush(batch)
			}
		})
	}
	go g.loop()
}

// put queues an item, or answers why it could not: ErrStopped, or ctx's
// error. A queued item is flushed even if ctx ends later.
func (g *grouper[T]) put(ctx context.Context, it T) error {
	select {
	case <-g.stop:
		return ErrStopped
	default:
	}
	select {
	case g.in <- it:
		return nil
	case <-g.stop:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop stops taking items, flushes what was queued and waits for every batch.
func (g *grouper[T]) Stop() {
	g.once.Do(func() { close(g.stop) })
	if g.started.Load() {
		<-g.done
	}
}

// loop forms the batches. A batch starts with the first item to come and
// takes every item that comes until a flusher takes it, which it may once
// its first item has waited maxWait (or at once when the batch is full).
// Items that come while every flusher is busy join the batch waiting for
// the next free one, not a later batch: with a batch formed in a fixed
// window instead, whatever came after the window but during the flush
// waited a whole extra flush.
func (g *grouper[T]) loop() {
	defer close(g.done)
	for {
		var first T
		select {
		case first = <-g.in:
		case <-g.stop:
			close(g.batches)
			g.wg.Wait()
			g.drain()
			return
		}
		batch := []T{first}
		timer := time.NewTimer(g.maxWait)
		var out chan []T // g.batches once the batch may go
	fill:
		for {
			if len(batch) >= g.maxBatch {
				g.batches <- batch
				break
			}
			select {
			case it := <-g.in:
				batch = append(batch, it)
			case <-timer.C:
				out = g.batches
			case out <- batch:
				break fill
			}
		}
		timer.Stop()
	}
}

// drain flushes the items still queued at Stop.
func (g *grouper[T]) drain() {
	for {
		var batch []T
	collect:
		for len(batch) < g.maxBatch {
			select {
			case it := <-g.in:
				batch = append(batch, it)
			default:
				break collect
			}
		}
		if len(batch) == 0 {
			return
		}
		g.flush(batch)
	}
}
