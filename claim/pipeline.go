package claim

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// scriptPipe runs claim scripts of concurrent requests in one Redis pipeline:
// one write and one read for all the calls queued at that moment, instead of
// one round trip each. It never waits to fill a batch, so a lone call goes
// out at once. Running a script twice is safe (see claimScript), so a
// pipeline that go-redis retries after a network error is too.
type scriptPipe struct {
	rdb     redis.UniversalClient
	timeout time.Duration
	in      chan *scriptCall
	stop    chan struct{}
	wg      sync.WaitGroup
}

type scriptCall struct {
	keys []string
	args []any
	done chan scriptResult
}

type scriptResult struct {
	vals []string
	err  error
}

// pipeBatch is the most scripts one pipeline carries.
const pipeBatch = 128

func newScriptPipe(rdb redis.UniversalClient, timeout time.Duration, workers int) *scriptPipe {
	p := &scriptPipe{rdb: rdb, timeout: timeout, in: make(chan *scriptCall, pipeBatch*workers), stop: make(chan struct{})}
	for range workers {
		p.wg.Go(p.loop)
	}
	return p
}

// run queues one claim script and waits for its answer.
func (p *scriptPipe) run(ctx context.Context, keys []string, args ...any) ([]string, error) {
	c := &scriptCall{keys: keys, args: args, done: make(chan scriptResult, 1)}
	select {
	case p.in <- c:
	case <-p.stop:
		return nil, ErrStopped
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-c.done:
		return r.vals, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *scriptPipe) close() {
	close(p.stop)
	p.wg.Wait()
}

func (p *scriptPipe) loop() {
	for {
		var first *scriptCall
		select {
		case first = <-p.in:
		case <-p.stop:
			return
		}
		batch := []*scriptCall{first}
	fill:
		for len(batch) < pipeBatch {
			select {
			case c := <-p.in:
				batch = append(batch, c)
			default:
				break fill
			}
		}
		p.exec(batch)
	}
}

func (p *scriptPipe) exec(batch []*scriptCall) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	if len(batch) == 1 {
		c := batch[0]
		vals, err := claimScript.Run(ctx, p.rdb, c.keys, c.args...).StringSlice()
		c.done <- scriptResult{vals, err}
		return
	}
	pipe := p.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, c := range batch {
		cmds[i] = claimScript.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range batch {
		vals, err := cmds[i].StringSlice()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// Redis restarted or flushed its script cache: Run loads it.
			vals, err = claimScript.Run(ctx, p.rdb, c.keys, c.args...).StringSlice()
		}
		c.done <- scriptResult{vals, err}
	}
}
