package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// --rate spaces the requests' starts: 50 requests at 100 a second cannot
// all start in less than 49 intervals of 10 ms, however fast the server
// answers (here at once), and every one of them is still made. Only a lower
// bound is checked: a slow machine makes the run longer, never shorter.
func TestClaimLoadRateSpacesRequests(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	claimFn := func(context.Context, claimReq) (string, bool, error) {
		n := calls.Add(1)
		return fmt.Sprint("code-", n), false, nil
	}
	o := benchOpts{claims: 50, concurrency: 8, users: 1000, rate: 100, callTimeout: time.Second, retryFor: time.Second}
	start := time.Now()
	l := runClaimLoad(context.Background(), o, claimFn)
	require.GreaterOrEqual(t, time.Since(start), 490*time.Millisecond)
	require.EqualValues(t, 50, calls.Load())
	require.Equal(t, 50, l.ok)

	// Cancelling the run stops the callers waiting for their turn.
	ctx, cancel := context.WithCancel(context.Background())
	o.claims, o.rate = 1000, 10
	time.AfterFunc(200*time.Millisecond, cancel)
	calls.Store(0)
	runClaimLoad(ctx, o, claimFn)
	require.Less(t, calls.Load(), int64(1000))
}
