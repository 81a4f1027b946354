package claim

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
)

// breakers holds one Redis breaker per pool shard (shard name, see
// stock.Shard): on a Redis Cluster, a master failing over only trips the
// breakers of the shards it served. A claim skips a shard whose breaker is
// open, as it skips an empty one; only when no shard can serve it does it go
// to Postgres. Only failures of Redis itself (*redisError) count.
type breakers struct {
	settings gobreaker.Settings
	m        sync.Map // shard name -> *gobreaker.TwoStepCircuitBreaker[struct{}]
}

func newBreakers(failures uint32, openFor time.Duration, log *slog.Logger) *breakers {
	return &breakers{settings: gobreaker.Settings{
		MaxRequests: 1,
		Timeout:     openFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsSuccessful: func(err error) bool {
			var re *redisError
			return !errors.As(err, &re)
		},
		OnStateChange: func(shard string, from, to gobreaker.State) {
			log.Warn("redis breaker changed state", "shard", shard, "from", from.String(), "to", to.String())
		},
	}}
}

// of returns the shard's breaker, making it on first use. Pools are few and
// long-lived, so breakers are never dropped.
func (b *breakers) of(shard string) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	if cb, ok := b.m.Load(shard); ok {
		return cb.(*gobreaker.TwoStepCircuitBreaker[struct{}])
	}
	st := b.settings
	st.Name = shard
	cb, _ := b.m.LoadOrStore(shard, gobreaker.NewTwoStepCircuitBreaker[struct{}](st))
	return cb.(*gobreaker.TwoStepCircuitBreaker[struct{}])
}

// state is "open" if any shard's breaker is, else "half-open" if any is,
// else "closed".
func (b *breakers) state() gobreaker.State {
	state := gobreaker.StateClosed
	b.m.Range(func(_, v any) bool {
		switch st := v.(*gobreaker.TwoStepCircuitBreaker[struct{}]).State(); st {
		case gobreaker.StateOpen:
			state = st
			return false
		case gobreaker.StateHalfOpen:
			state = st
		}
		return true
	})
	return state
}

// ShardBreaker is the state of one pool shard's Redis breaker.
type ShardBreaker struct {
	// Shard is the shard's name (its hash tag).
	Shard string
	// State is "closed", "open" or "half-open".
	State string
}

// states lists every shard's breaker, by shard name.
func (b *breakers) states() []ShardBreaker {
	var out []ShardBreaker
	b.m.Range(func(k, v any) bool {
		out = append(out, ShardBreaker{Shard: k.(string), State: v.(*gobreaker.TwoStepCircuitBreaker[struct{}]).State().String()})
		return true
	})
	slices.SortFunc(out, func(a, b ShardBreaker) int { return strings.Compare(a.Shard, b.Shard) })
	return out
}

// isOpen reports whether err is a breaker refusing a call.
func isOpen(err error) bool {
	return errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests)
}
