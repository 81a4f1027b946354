package fresh

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// source counts fetches; each answers "<key>#<fetch number>", or fails
// while fail is set, and waits for gate when it is not nil.
type source struct {
	fetches atomic.Int64
	fail    atomic.Bool
	gate    chan struct{}
	started chan struct{}
}

func (s *source) fetch(ctx context.Context, k string) (string, time.Duration, error) {
	n := s.fetches.Add(1)
	if s.started != nil {
		s.started <- struct{}{}
	}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return "", 0, ctx.Err()
		}
	}
	if s.fail.Load() {
		return "", 0, errors.New("store down")
	}
	return k + "#" + strconv.FormatInt(n, 10), time.Second, nil
}

func newCache(src *source, max int) (*Cache[string], *clock) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	c := New(src.fetch, time.Second, max)
	c.now = clk.now
	return c, clk
}

func TestConcurrentMissesShareOneFetch(t *testing.T) {
	src := &source{gate: make(chan struct{}), started: make(chan struct{}, 64)}
	c, _ := newCache(src, 0)
	const callers = 64
	var wg sync.WaitGroup
	got := make([]string, callers)
	for i := range callers {
		wg.Go(func() {
			v, err := c.Get(t.Context(), "pool-a")
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		})
	}
	// Let the callers pile up behind the first fetch, then release it.
	<-src.started
	time.Sleep(20 * time.Millisecond)
	close(src.gate)
	wg.Wait()
	if n := src.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for %d concurrent callers, want 1", n, callers)
	}
	for i, v := range got {
		if v != "pool-a#1" {
			t.Fatalf("caller %d got %q", i, v)
		}
	}
}

func TestRefreshesBeforeExpiryAndNeverServesStale(t *testing.T) {
	src := &source{}
	c, clk := newCache(src, 0)
	ctx := t.Context()
	if v, _ := c.Get(ctx, "k"); v != "k#1" {
		t.Fatalf("first get: %q", v)
	}
	clk.add(400 * time.Millisecond)
	if v, _ := c.Get(ctx, "k"); v != "k#1" || src.fetches.Load() != 1 {
		t.Fatalf("young entry: %q after %d fetches, want k#1 after 1", v, src.fetches.Load())
	}
	// Past half its TTL: served at once, refreshed in the background.
	clk.add(200 * time.Millisecond)
	if v, _ := c.Get(ctx, "k"); v != "k#1" {
		t.Fatalf("aging entry: %q", v)
	}
	waitFor(t, func() bool { v, ok := c.Fresh("k"); return ok && v == "k#2" })
	// 1.05 s after the first read, the refreshed entry (read at 0.6 s) serves.
	clk.add(450 * time.Millisecond)
	if v, _ := c.Get(ctx, "k"); v != "k#2" || src.fetches.Load() != 2 {
		t.Fatalf("refreshed entry: %q after %d fetches, want k#2 after 2", v, src.fetches.Load())
	}
	// A refresh that fails leaves the entry until its TTL, then Get fetches
	// and reports the failure: nothing older than the TTL is served.
	src.fail.Store(true)
	clk.add(100 * time.Millisecond) // k#2 is 0.55 s old
	if v, _ := c.Get(ctx, "k"); v != "k#2" {
		t.Fatalf("entry within its TTL while the store fails: %q", v)
	}
	waitFor(t, func() bool { return src.fetches.Load() == 3 && !c.isRefreshing("k") })
	clk.add(450 * time.Millisecond) // k#2 is now exactly 1 s old
	if v, err := c.Get(ctx, "k"); err == nil {
		t.Fatalf("expired entry with the store failing: got %q, want the error", v)
	}
	if _, ok := c.Fresh("k"); ok {
		t.Fatal("an expired entry is still fresh")
	}
	src.fail.Store(false)
	if v, err := c.Get(ctx, "k"); err != nil || v != "k#5" {
		t.Fatalf("after the store recovered: %q, %v", v, err)
	}
}

func (c *Cache[V]) isRefreshing(k string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refreshing[k]
}

func TestOneBackgroundRefreshAtATime(t *testing.T) {
	src := &source{}
	c, clk := newCache(src, 0)
	if _, err := c.Get(t.Context(), "k"); err != nil {
		t.Fatal(err)
	}
	src.gate = make(chan struct{})
	src.started = make(chan struct{}, 100)
	clk.add(700 * time.Millisecond)
	for range 50 {
		if v, ok := c.Fresh("k"); !ok || v != "k#1" {
			t.Fatalf("aging entry: %q, %v", v, ok)
		}
	}
	<-src.started
	close(src.gate)
	waitFor(t, func() bool { return !c.isRefreshing("k") })
	if n := src.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (one refresh for 50 calls)", n)
	}
}

func TestCallerGivingUpDoesNotFailTheOthers(t *testing.T) {
	src := &source{gate: make(chan struct{}), started: make(chan struct{}, 1)}
	c, _ := newCache(src, 0)
	ctx, cancel := context.WithCancel(t.Context())
	first := make(chan error, 1)
	go func() { _, err := c.Get(ctx, "k"); first <- err }()
	<-src.started
	second := make(chan string, 1)
	go func() { v, _ := c.Get(t.Context(), "k"); second <- v }()
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller that gave up: %v", err)
	}
	close(src.gate)
	if v := <-second; v != "k#1" {
		t.Fatalf("the caller that waited: %q", v)
	}
}

func TestBoundedEntries(t *testing.T) {
	src := &source{}
	c, _ := newCache(src, 3)
	for i := range 10 {
		if _, err := c.Get(t.Context(), strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		c.mu.Lock()
		n := len(c.entries)
		c.mu.Unlock()
		if n > 3 {
			t.Fatalf("%d entries, bound 3", n)
		}
	}
	if !c.Known("9") {
		t.Fatal("the last key read is not cached")
	}
	if c.Known("0") {
		t.Fatal("an entry from before the cache started over is still known")
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}

// A caller that joins a fetch begun more than the TTL before it asked does
// not take that fetch's value: it may predate a change the caller must see
// (a pause committed while the fetch was under way). It fetches again.
func TestJoinedFetchTooOldIsNotEnough(t *testing.T) {
	src := &source{gate: make(chan struct{}), started: make(chan struct{}, 4)}
	c, clk := newCache(src, 0)
	first := make(chan string, 1)
	go func() { v, _ := c.Get(t.Context(), "k"); first <- v }()
	<-src.started
	clk.add(1500 * time.Millisecond) // the fetch under way began 1.5 s ago
	late := make(chan string, 1)
	go func() { v, _ := c.Get(t.Context(), "k"); late <- v }()
	time.Sleep(20 * time.Millisecond) // the late caller joins the fetch under way
	close(src.gate)
	if v := <-first; v != "k#1" {
		t.Fatalf("the caller that started the fetch: %q", v)
	}
	if v := <-late; v != "k#2" {
		t.Fatalf("the late caller got %q, read before its TTL window; want a fetch of its own (k#2)", v)
	}
}
