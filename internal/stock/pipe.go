package stock

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrPipeStopped means the pipe was stopped before the claim script ran.
var ErrPipeStopped = errors.New("claim pipe stopped")

// ClaimArgs is one run of the claim script.
type ClaimArgs struct {
	PoolID, RequestID, UserID string
	// Limit is the pool's per-user limit.
	Limit int
	// TTL is how long the replay record and the user's count live.
	TTL time.Duration
}

// Answer is what the claim script said: Outcome is one of the claim
// package's outcome words ("popped", "replay", "reused", "limit",
// "exhausted"); Entry the popped or replayed entry; Left how many entries
// stay staged after a pop (-1 when the answer does not say).
type Answer struct {
	Outcome string
	Entry   string
	Left    int64
}

// Pipe runs the claim scripts of concurrent requests in one Redis pipeline:
// one write and one read for all the calls queued at that moment, instead of
// one round trip each. One sender is enough: while its pipeline is out, the
// next calls queue and go together in the next one. It never waits to fill a
// batch, so a lone call goes out at once. Running the script twice is safe
// (see claimScript), so a pipeline that go-redis retries after a network
// error is too.
type Pipe struct {
	store   *Store
	timeout time.Duration
	in      chan *scriptCall
	stop    chan struct{}
	// stopped is closed once the sender has exited: a call still queued
	// then was never sent.
	stopped chan struct{}
	once    sync.Once
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

// NewPipe returns a pipe whose pipelines each get timeout; Start starts
// its sender.
func (s *Store) NewPipe(timeout time.Duration) *Pipe {
	return &Pipe{store: s, timeout: timeout, in: make(chan *scriptCall, pipeBatch),
		stop: make(chan struct{}), stopped: make(chan struct{})}
}

// Start starts the sender.
func (p *Pipe) Start() {
	p.wg.Go(func() {
		defer close(p.stopped)
		p.loop()
	})
}

// Stop stops the sender; calls not yet sent answer ErrPipeStopped. A pipe
// never started cannot be stopped.
func (p *Pipe) Stop() {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
}

// Claim runs the claim script for one request (see claimScript).
func (p *Pipe) Claim(ctx context.Context, a ClaimArgs) (Answer, error) {
	k := p.store.keys
	c := &scriptCall{
		keys: []string{k.Staged(a.PoolID), k.InFlight(a.PoolID), k.Replay(a.PoolID, a.RequestID), k.UserClaims(a.PoolID, a.UserID)},
		args: []any{a.Limit, time.Now().UnixMilli(), int(a.TTL.Seconds()), a.UserID},
		done: make(chan scriptResult, 1),
	}
	select {
	case <-p.stop:
		return Answer{}, ErrPipeStopped
	default:
	}
	select {
	case p.in <- c:
	case <-p.stop:
		return Answer{}, ErrPipeStopped
	case <-ctx.Done():
		return Answer{}, ctx.Err()
	}
	var r scriptResult
	select {
	case r = <-c.done:
	case <-p.stopped:
		// The sender has exited: the call was answered before it did, or
		// never sent.
		select {
		case r = <-c.done:
		default:
			return Answer{}, ErrPipeStopped
		}
	case <-ctx.Done():
		return Answer{}, ctx.Err()
	}
	if r.err != nil {
		return Answer{}, r.err
	}
	return answerOf(r.vals)
}

func (p *Pipe) loop() {
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

func (p *Pipe) exec(batch []*scriptCall) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	rdb := p.store.rdb
	if len(batch) == 1 {
		c := batch[0]
		vals, err := claimScript.Run(ctx, rdb, c.keys, c.args...).StringSlice()
		c.done <- scriptResult{vals, err}
		return
	}
	pipe := rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, c := range batch {
		cmds[i] = claimScript.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range batch {
		vals, err := cmds[i].StringSlice()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// Redis restarted or flushed its script cache: Run loads it.
			vals, err = claimScript.Run(ctx, rdb, c.keys, c.args...).StringSlice()
		}
		c.done <- scriptResult{vals, err}
	}
}

// ClaimOnce runs the claim script once, outside any pipe, as if at now: for
// tests and tools that need a pop with a given time (an old ledger entry).
func (s *Store) ClaimOnce(ctx context.Context, a ClaimArgs, now time.Time) (Answer, error) {
	k := s.keys
	vals, err := claimScript.Run(ctx, s.rdb,
		[]string{k.Staged(a.PoolID), k.InFlight(a.PoolID), k.Replay(a.PoolID, a.RequestID), k.UserClaims(a.PoolID, a.UserID)},
		a.Limit, now.UnixMilli(), int(a.TTL.Seconds()), a.UserID).StringSlice()
	if err != nil {
		return Answer{}, err
	}
	return answerOf(vals)
}

func answerOf(vals []string) (Answer, error) {
	if len(vals) < 2 {
		return Answer{}, errors.New("claim script answered " + strconv.Itoa(len(vals)) + " values")
	}
	ans := Answer{Outcome: vals[0], Entry: vals[1], Left: -1}
	if len(vals) > 2 {
		if n, err := strconv.ParseInt(vals[2], 10, 64); err == nil {
			ans.Left = n
		}
	}
	return ans, nil
}
