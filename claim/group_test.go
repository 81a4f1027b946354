package claim

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Items that come while the flusher is busy all go in the next batch, not
// split between the next batch and the one after it: the batch waiting for
// the flusher keeps taking items after its first one has waited maxWait,
// up to maxBatch.
func TestGrouperBatchTakesItemsWhileFlusherBusy(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var mu sync.Mutex
	var batches [][]int
	g := newGrouper(3, time.Millisecond, 1, func(b []int) {
		mu.Lock()
		batches = append(batches, b)
		mu.Unlock()
		<-release // busy until the test lets it go
	})
	g.start()
	flushed := func(n int) bool { mu.Lock(); defer mu.Unlock(); return len(batches) == n }
	ctx := t.Context()

	require.NoError(t, g.put(ctx, 1))
	require.Eventually(t, func() bool { return flushed(1) }, 5*time.Second, time.Millisecond,
		"a lone item goes after maxWait")
	require.NoError(t, g.put(ctx, 2))
	time.Sleep(20 * time.Millisecond) // well past item 2's maxWait
	for i := 3; i <= 5; i++ {
		require.NoError(t, g.put(ctx, i))
	}
	// Items 2 to 4 fill the waiting batch; 5 waits for the next one.
	require.Eventually(t, func() bool { return len(g.in) == 1 }, 5*time.Second, time.Millisecond)
	release <- struct{}{}
	require.Eventually(t, func() bool { return flushed(2) }, 5*time.Second, time.Millisecond)
	release <- struct{}{}
	require.Eventually(t, func() bool { return flushed(3) }, 5*time.Second, time.Millisecond)
	close(release)
	g.Stop()
	require.Equal(t, [][]int{{1}, {2, 3, 4}, {5}}, batches)
}
