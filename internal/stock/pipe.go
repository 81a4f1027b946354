package stock

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"runtime"
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

// Pipe runs the claim script for concurrent requests together: the calls
// queued at that moment go in one Redis pipeline (one write and one read
// instead of a round trip each), and those of one pool shard in one script
// call (Redis runs one script, not one per request). One sender is enough:
// while its pipeline is out, the next calls queue and go together in the
// next one, with those of callers ready to run when it is about to send (see
// fill). It never waits on a timer, so a lone call goes out at once. Running
// the script twice is safe
// (see claimScript), so a pipeline that go-redis retries after a network
// error is too.
type Pipe struct {
	store   *Store
	timeout time.Duration
	log     *slog.Logger
	in      chan *scriptCall
	// kick wakes the sender for ledger entries to clear (Clear).
	kick chan struct{}
	mu   sync.Mutex
	// clears holds the committed entries to remove from each shard's
	// in-flight ledger with the next pipeline.
	clears map[string][]any
	stop   chan struct{}
	// stopped is closed once the sender has exited: a call still queued
	// then was never sent.
	stopped chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

// scriptCall is one request's part of a claim script run.
type scriptCall struct {
	staged, inFlight string // the shard's keys: calls with the same go together
	replay, count    string // the request's two keys
	args             [3]any // limit, TTL in seconds, an id
	done             chan scriptResult
}

type scriptResult struct {
	vals []string
	err  error
}

// pipeBatch is the most scripts one pipeline carries.
const pipeBatch = 128

// NewPipe returns a pipe whose pipelines each get timeout, logging to log
// (nil: slog's default) the ledger clears Redis failed; Start starts its
// sender.
func (s *Store) NewPipe(timeout time.Duration, log *slog.Logger) *Pipe {
	return &Pipe{store: s, timeout: timeout, log: cmp.Or(log, slog.Default()), in: make(chan *scriptCall, pipeBatch),
		kick: make(chan struct{}, 1), clears: map[string][]any{}, stop: make(chan struct{}), stopped: make(chan struct{})}
}

// Start starts the sender.
func (p *Pipe) Start() {
	p.wg.Go(func() {
		defer close(p.stopped)
		p.loop()
	})
}

// Clear removes committed entries from the in-flight ledgers of their shards
// (given by shard name): one ZREM per shard, sent with the next pipeline of
// claim scripts, or alone if none comes, instead of a round trip of its own
// per group commit. An entry left behind (Redis failing, the pipe stopped)
// is one the reconciler finds committed and drops.
func (p *Pipe) Clear(byShard map[string][]string) {
	p.mu.Lock()
	for shard, entries := range byShard {
		for _, e := range entries {
			p.clears[shard] = append(p.clears[shard], e)
		}
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// takeClears returns the pending ledger clears and forgets them.
func (p *Pipe) takeClears() map[string][]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.clears) == 0 {
		return nil
	}
	c := p.clears
	p.clears = map[string][]any{}
	return c
}

// Stop stops the sender, which first sends the ledger clears pending; calls
// not yet sent answer ErrPipeStopped. A pipe never started cannot be
// stopped.
func (p *Pipe) Stop() {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
}

// Claim runs the claim script for one request (see claimScript).
func (p *Pipe) Claim(ctx context.Context, a ClaimArgs) (Answer, error) {
	c := p.store.call(a)
	c.done = make(chan scriptResult, 1)
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

// call is the script part of one request (see claimScript for its keys and
// arguments).
func (s *Store) call(a ClaimArgs) *scriptCall {
	k := s.keys
	c := &scriptCall{staged: k.Staged(a.PoolID), inFlight: k.InFlight(a.PoolID)}
	if a.Limit == 1 {
		c.replay = k.OneClaim(a.PoolID, a.UserID)
		c.count = c.replay
		c.args = [3]any{a.Limit, int(a.TTL.Seconds()), a.RequestID}
		return c
	}
	c.replay, c.count = k.Replay(a.PoolID, a.RequestID), k.UserClaims(a.PoolID, a.UserID)
	c.args = [3]any{a.Limit, int(a.TTL.Seconds()), a.UserID}
	return c
}

// script is one run of claimScript: calls of one shard, in queue order.
type script struct {
	keys  []string
	args  []any
	calls []*scriptCall
}

// scripts groups calls by shard, keeping each shard's calls in order.
func scripts(batch []*scriptCall, now time.Time) []*script {
	var out []*script
	byShard := map[string]*script{}
	for _, c := range batch {
		sc := byShard[c.staged]
		if sc == nil {
			sc = &script{keys: []string{c.staged, c.inFlight}, args: []any{now.UnixMilli()}}
			byShard[c.staged] = sc
			out = append(out, sc)
		}
		sc.keys = append(sc.keys, c.replay, c.count)
		sc.args = append(sc.args, c.args[:]...)
		sc.calls = append(sc.calls, c)
	}
	return out
}

func (p *Pipe) loop() {
	for {
		var batch []*scriptCall
		select {
		case c := <-p.in:
			batch = append(batch, c)
		case <-p.kick:
		case <-p.stop:
			p.exec(nil, p.takeClears())
			return
		}
		batch = p.fill(batch)
		p.exec(batch, p.takeClears())
	}
}

// pipeYields is how many times in a row the sender yields while yielding
// brings more calls.
const pipeYields = 4

// fill adds the calls queued to batch, up to pipeBatch. The caller that
// woke the sender put it first in line on its processor, ahead of the
// goroutines already runnable there, which are often other callers about to
// queue their own calls (gRPC hands a burst of requests to its workers at
// once). So the sender yields, and takes what they queued, while that brings
// more: they go in one pipeline (one write and one read) and one script run
// instead of several. With nothing else runnable a yield returns at once, so
// a lone call is not held back.
func (p *Pipe) fill(batch []*scriptCall) []*scriptCall {
	for range pipeYields {
		n := len(batch)
		runtime.Gosched()
	drain:
		for len(batch) < pipeBatch {
			select {
			case c := <-p.in:
				batch = append(batch, c)
			default:
				break drain
			}
		}
		if len(batch) == n || len(batch) == pipeBatch {
			break
		}
	}
	return batch
}

// exec runs the batch's scripts and the ledger clears in one pipeline (a
// lone script without clears goes alone, which loads it if Redis lost it).
func (p *Pipe) exec(batch []*scriptCall, clears map[string][]any) {
	if len(batch) == 0 && len(clears) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	rdb := p.store.rdb
	runs := scripts(batch, time.Now())
	if len(runs) == 1 && len(clears) == 0 {
		sc := runs[0]
		vals, err := claimScript.Run(ctx, rdb, sc.keys, sc.args...).StringSlice()
		sc.answer(vals, err)
		return
	}
	pipe := rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(runs))
	for i, sc := range runs {
		cmds[i] = claimScript.EvalSha(ctx, pipe, sc.keys, sc.args...)
	}
	zrems := make([]*redis.IntCmd, 0, len(clears))
	for shard, members := range clears {
		zrems = append(zrems, pipe.ZRem(ctx, p.store.keys.InFlight(shard), members...))
	}
	_, _ = pipe.Exec(ctx)
	for _, z := range zrems {
		if err := z.Err(); err != nil {
			p.log.Warn("clearing the in-flight ledger failed; the reconciler will clear it", "err", err)
			break
		}
	}
	for i, sc := range runs {
		vals, err := cmds[i].StringSlice()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// Redis restarted or flushed its script cache: Run loads it.
			vals, err = claimScript.Run(ctx, rdb, sc.keys, sc.args...).StringSlice()
		}
		sc.answer(vals, err)
	}
}

// answer hands each call its three values of the script's answer.
func (sc *script) answer(vals []string, err error) {
	if err == nil && len(vals) != 3*len(sc.calls) {
		err = errors.New("claim script answered " + strconv.Itoa(len(vals)) + " values for " +
			strconv.Itoa(len(sc.calls)) + " requests")
	}
	for i, c := range sc.calls {
		if err != nil {
			c.done <- scriptResult{err: err}
			continue
		}
		c.done <- scriptResult{vals: vals[3*i : 3*i+3]}
	}
}

// ClaimOnce runs the claim script once, outside any pipe, as if at now: for
// tests and tools that need a pop with a given time (an old ledger entry).
func (s *Store) ClaimOnce(ctx context.Context, a ClaimArgs, now time.Time) (Answer, error) {
	sc := scripts([]*scriptCall{s.call(a)}, now)[0]
	vals, err := claimScript.Run(ctx, s.rdb, sc.keys, sc.args...).StringSlice()
	if err != nil {
		return Answer{}, err
	}
	return answerOf(vals)
}

// answerOf reads one request's answer: outcome, value, left.
func answerOf(v []string) (Answer, error) {
	if len(v) != 3 {
		return Answer{}, errors.New("claim script answered " + strconv.Itoa(len(v)) + " values for a request")
	}
	ans := Answer{Outcome: v[0], Entry: v[1], Left: -1}
	if v[2] != "" {
		if n, err := strconv.ParseInt(v[2], 10, 64); err == nil {
			ans.Left = n
		}
	}
	return ans, nil
}
