package auth

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/dispenserhq/dispenser/internal/testenv"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// call runs the unary interceptor for ClaimCode as host sends it with key,
// and returns the gRPC code and ErrorInfo reason it answers.
func call(a *Authorizer, host, key string) (codes.Code, string) {
	code, reason, _ := callRetry(a, host, key)
	return code, reason
}

// callRetry is call, with the wait the refusal's RetryInfo asks for (0
// without one).
func callRetry(a *Authorizer, host, key string) (codes.Code, string, time.Duration) {
	return callIn(context.Background(), a, host, key)
}

// callIn is callRetry within ctx.
func callIn(ctx context.Context, a *Authorizer, host, key string) (codes.Code, string, time.Duration) {
	ctx = peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(host), Port: 40000}})
	if key != "" {
		ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+key))
	}
	_, err := a.Unary()(ctx, &dispenserv1.ClaimCodeRequest{PoolId: "p1"},
		&grpc.UnaryServerInfo{FullMethod: "/dispenser.v1.ClaimService/ClaimCode"},
		func(context.Context, any) (any, error) { return "ok", nil })
	st := status.Convert(err)
	reason, wait := "", time.Duration(0)
	for _, d := range st.Details() {
		switch info := d.(type) {
		case *errdetails.ErrorInfo:
			reason = info.GetReason()
		case *errdetails.RetryInfo:
			wait = info.GetRetryDelay().AsDuration()
		}
	}
	return st.Code(), reason, wait
}

// Each RATE_LIMITED refusal says when a call would pass again (RetryInfo):
// a key past its rate, a peer past its failures, lookups past theirs.
func TestRateLimitedSaysWhenToRetry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, slow, err := b.store.Create(context.Background(), Key{Role: Claimer, Rate: 4, Burst: 1})
	require.NoError(t, err)
	a := New(Config{Store: b.store, FailureRate: 0.01, FailureBurst: 1, LookupRate: 0.1, LookupBurst: 2})

	code, _, _ := callRetry(a, "10.0.0.1", slow)
	require.Equal(t, codes.OK, code)
	code, reason, wait := callRetry(a, "10.0.0.1", slow)
	require.Equal(t, codes.ResourceExhausted, code)
	require.Equal(t, ReasonRateLimited, reason)
	require.Greater(t, wait, 200*time.Millisecond, "a quarter second, less what has passed")
	require.LessOrEqual(t, wait, 250*time.Millisecond)
	time.Sleep(wait)
	code, _, _ = callRetry(a, "10.0.0.1", slow)
	require.Equal(t, codes.OK, code, "the wait it named was enough")

	code, _, wait = callRetry(a, "10.0.0.2", unknownKey(1))
	require.Equal(t, codes.Unauthenticated, code)
	require.Zero(t, wait, "a refusal that waiting cannot cure says no wait")
	code, reason, wait = callRetry(a, "10.0.0.2", unknownKey(2))
	require.Equal(t, codes.ResourceExhausted, code)
	require.Equal(t, ReasonRateLimited, reason)
	require.Greater(t, wait, 90*time.Second, "one failure per 100 s")
	require.LessOrEqual(t, wait, 100*time.Second)

	code, reason, wait = callRetry(a, "10.0.0.3", unknownKey(3))
	require.Equal(t, codes.Unavailable, code, "the lookups' budget: two were spent above")
	require.Equal(t, ReasonRateLimited, reason)
	require.Greater(t, wait, 5*time.Second, "one lookup per 10 s")
	require.LessOrEqual(t, wait, 10*time.Second)
}

// bundle is a store on the test's schema, a key in it, and a way to cut the
// store off: a lookup made after cut fails (Unavailable), so a call that
// still answers Unauthenticated made none.
type bundle struct {
	store *Store
	key   string
	cut   func()
}

func setup(t *testing.T) bundle {
	t.Helper()
	s := testenv.Postgres(t)
	db, err := pgxpool.New(context.Background(), s.URL)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	store := NewStore(db)
	_, key, err := store.Create(context.Background(), Key{Role: Claimer})
	require.NoError(t, err)
	return bundle{store: store, key: key, cut: db.Close}
}

func unknownKey(i int) string {
	return "dk_" + strings.Repeat(string(rune('a'+i%26)), 12) + "_" + strings.Repeat("A", secretLen)
}

// A key of the wrong shape is refused without a lookup.
func TestMalformedKeysCostNoLookup(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.cut()
	a := New(Config{Store: b.store})
	for _, key := range []string{"", "nope", "dk_", "dk_abcdefabcdef", "dk_abcdefabcdef_short",
		"dk_ABCDEFABCDEF_" + strings.Repeat("A", secretLen), "dk_abcdefabcdef_" + strings.Repeat("!", secretLen),
		"dk_abcdefabcdef_" + strings.Repeat("A", secretLen+1), "dk_abcdefabcdef_" + strings.Repeat("A", 1<<20)} {
		code, reason := call(a, "10.0.0.1", key)
		require.Equal(t, codes.Unauthenticated, code, "key %.40q", key)
		require.Equal(t, ReasonUnauthenticated, reason)
	}
}

// An unknown key id is remembered: asking again costs no lookup.
func TestUnknownKeyIDsRemembered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := New(Config{Store: b.store})
	code, _ := call(a, "10.0.0.1", unknownKey(0))
	require.Equal(t, codes.Unauthenticated, code)
	code, _ = call(a, "10.0.0.1", b.key)
	require.Equal(t, codes.OK, code)
	b.cut()
	for range 50 {
		code, _ = call(a, "10.0.0.1", unknownKey(0))
		require.Equal(t, codes.Unauthenticated, code, "the unknown id was looked up again")
		code, _ = call(a, "10.0.0.1", b.key)
		require.Equal(t, codes.OK, code, "the verified key was looked up again")
	}
	// A wrong secret for a known id costs no lookup either.
	wrong := b.key[:len(b.key)-4] + "AAAA"
	code, _ = call(a, "10.0.0.1", wrong)
	require.Equal(t, codes.Unauthenticated, code)
	// A new id does need one (and the store is gone): the cache is what
	// spared the calls above.
	code, _ = call(a, "10.0.0.1", unknownKey(1))
	require.Equal(t, codes.Unavailable, code)
}

// A call that ends (its deadline passed, or it was cancelled) before its
// key is read is answered as such, not as a store that is down: the store
// is well, and a caller that retries on STORE_UNAVAILABLE would retry a
// deadline it set itself.
func TestCallEndedBeforeItsKeyIsRead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := New(Config{Store: b.store})
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	code, reason, _ := callIn(expired, a, "10.0.0.1", b.key)
	require.Equal(t, codes.DeadlineExceeded, code)
	require.Empty(t, reason)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	code, reason, _ = callIn(cancelled, a, "10.0.0.1", b.key)
	require.Equal(t, codes.Canceled, code)
	require.Empty(t, reason)
	// The same key in a live call: it was never refused, and nothing was
	// counted against the peer.
	code, _ = call(a, "10.0.0.1", b.key)
	require.Equal(t, codes.OK, code)
	// With the store gone, a live call that needs a lookup is the store's.
	b.cut()
	code, reason, wait := callRetry(a, "10.0.0.1", unknownKey(2))
	require.Equal(t, codes.Unavailable, code)
	require.Equal(t, ReasonStoreUnavailable, reason)
	require.Equal(t, StoreRetryDelay, wait, "the refusal says how long to wait (RetryInfo)")
}

// A peer that keeps failing is answered RATE_LIMITED, without lookups, for
// any key it has not already proven; other peers and proven keys go on.
func TestFailedAuthenticationsLimitedPerPeer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := New(Config{Store: b.store, FailureRate: 0.001, FailureBurst: 5})
	code, _ := call(a, "10.0.0.1", b.key)
	require.Equal(t, codes.OK, code)
	for i := range 5 {
		code, reason := call(a, "10.0.0.1", unknownKey(i))
		require.Equal(t, codes.Unauthenticated, code, "failure %d", i)
		require.Equal(t, ReasonUnauthenticated, reason)
	}
	b.cut() // from here, any lookup would answer Unavailable
	for i := range 20 {
		code, reason := call(a, "10.0.0.1", unknownKey(10+i))
		require.Equal(t, codes.ResourceExhausted, code)
		require.Equal(t, ReasonRateLimited, reason)
		code, reason = call(a, "10.0.0.1", "")
		require.Equal(t, codes.ResourceExhausted, code)
		require.Equal(t, ReasonRateLimited, reason)
	}
	code, _ = call(a, "10.0.0.1", b.key)
	require.Equal(t, codes.OK, code, "a proven key from the same host still works")
	code, _ = call(a, "10.0.0.2", unknownKey(0))
	require.Equal(t, codes.Unauthenticated, code, "another host has its own budget")
}

// Lookups of new ids are bounded across all peers.
func TestKeyLookupsBoundedGlobally(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := New(Config{Store: b.store, LookupRate: 0.001, LookupBurst: 3})
	for i := range 3 {
		code, _ := call(a, "10.0.1."+string(rune('1'+i)), unknownKey(i))
		require.Equal(t, codes.Unauthenticated, code)
	}
	start := time.Now()
	code, reason := call(a, "10.0.2.1", unknownKey(7))
	require.Equal(t, codes.Unavailable, code)
	require.Equal(t, ReasonRateLimited, reason)
	require.Less(t, time.Since(start), time.Second, "refused at once")
	code, _ = call(a, "10.0.2.1", unknownKey(0))
	require.Equal(t, codes.Unauthenticated, code, "a remembered id needs no lookup")
}

// When a key in use ages out of the cache, the calls that find it so share
// one lookup: a busy key costs one lookup per CacheTTL however many calls
// use it, and its expiry spends none of the budget meant for new ids.
func TestExpiredKeyLookedUpOnceForConcurrentCalls(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := New(Config{Store: b.store, CacheTTL: 200 * time.Millisecond, LookupRate: 0.001, LookupBurst: 2})
	code, _ := call(a, "10.0.0.1", b.key)
	require.Equal(t, codes.OK, code)
	time.Sleep(250 * time.Millisecond) // the key's entry has expired
	const calls = 200
	got := make([]codes.Code, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() { got[i], _ = call(a, "10.0.0.1", b.key) })
	}
	wg.Wait()
	for i, c := range got {
		require.Equal(t, codes.OK, c, "call %d: one lookup budget token was left, and one lookup should serve all", i)
	}
}
