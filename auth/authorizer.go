package auth

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/dispenserhq/dispenser/internal/fresh"
	"github.com/dispenserhq/dispenser/internal/rpcerr"
)

// Reasons of the ErrorInfo auth errors carry (values of dispenser.v1.ErrorReason).
const (
	ReasonUnauthenticated  = "UNAUTHENTICATED"
	ReasonPermissionDenied = "PERMISSION_DENIED"
	ReasonRateLimited      = "RATE_LIMITED"
	// ReasonStoreUnavailable: the key could not be read now (the API's
	// reason for a store it cannot reach).
	ReasonStoreUnavailable = "STORE_UNAVAILABLE"
)

// Rules says which roles may call each method. Methods not listed are
// refused to everyone but admins; health and reflection need no key.
var Rules = map[string][]Role{
	"/dispenser.v1.ClaimService/ClaimCode":          {Claimer, Admin},
	"/dispenser.v1.ClaimService/GetClaim":           {Claimer, Admin, Auditor},
	"/dispenser.v1.ClaimService/ListUserClaims":     {Claimer, Admin, Auditor},
	"/dispenser.v1.ClaimService/ReserveCode":        {Claimer, Admin},
	"/dispenser.v1.ClaimService/ConfirmReservation": {Claimer, Admin},
	"/dispenser.v1.ClaimService/CancelReservation":  {Claimer, Admin},
	"/dispenser.v1.AdminService/GetPool":            {Auditor, Admin},
	"/dispenser.v1.AdminService/ListPools":          {Auditor, Admin},
	"/dispenser.v1.AdminService/GetPoolStats":       {Auditor, Admin},
	"/dispenser.v1.AdminService/ExportClaims":       {Auditor, Admin},
	"/dispenser.v1.AdminService/GetHealth":          {Auditor, Admin},
	"/dispenser.v1.PrizeService/RecordPrize":        {Claimer, Admin},
	"/dispenser.v1.PrizeService/MarkPrizeReady":     {Claimer, Admin},
	"/dispenser.v1.PrizeService/GetPrize":           {Auditor, Admin},
	"/dispenser.v1.PrizeService/ListPrizes":         {Auditor, Admin},
}

// poolFreeForClaimers are claimer methods whose request names no pool; their
// handlers check the pool themselves with PoolAllowed.
var poolFreeForClaimers = map[string]bool{"/dispenser.v1.PrizeService/MarkPrizeReady": true}

// PoolAllowed reports whether the caller may act on pool: always for admins
// and unrestricted keys (and when authentication is off).
func PoolAllowed(ctx context.Context, pool string) bool {
	k, ok := FromContext(ctx)
	return !ok || k.Role != Claimer || k.AllowsPool(pool)
}

// PermissionDenied is the error for a pool the caller's key may not use.
func PermissionDenied() error { return denied("the key may not use this pool") }

// open methods need no key.
func open(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.Health/") ||
		strings.HasPrefix(method, "/grpc.reflection.")
}

// Defaults of Config's limits on unauthenticated work.
const (
	NegativeTTLDefault  = 30 * time.Second
	FailureRateDefault  = 20
	FailureBurstDefault = 200
	LookupRateDefault   = 200
	LookupBurstDefault  = 400
	MaxTrackedDefault   = 10_000
)

// Config configures the Authorizer.
type Config struct {
	Store *Store
	// Rate and Burst are the default per-key limits (keys may set their
	// own); 0 rate means unlimited.
	Rate  float64
	Burst int
	// CacheTTL is how long a key read from the store is trusted before it
	// is read again (revocations take effect within it); default 5s.
	CacheTTL time.Duration
	// NegativeTTL is how long an unknown key id is remembered as unknown,
	// so that guessing costs no lookup; defaults to NegativeTTLDefault.
	NegativeTTL time.Duration
	// FailureRate and FailureBurst bound failed authentications per peer
	// address (per second, and burst). A peer past them is answered
	// RATE_LIMITED, without a lookup, for any key not already verified;
	// defaults FailureRateDefault and FailureBurstDefault.
	FailureRate  float64
	FailureBurst int
	// LookupRate and LookupBurst bound key lookups in the store across all
	// peers (per second, and burst): a flood of unknown ids cannot become a
	// flood of queries. Past them a call is Unavailable (retry); defaults
	// LookupRateDefault and LookupBurstDefault.
	LookupRate  float64
	LookupBurst int
	// MaxTracked bounds the cached keys and the peers tracked; defaults to
	// MaxTrackedDefault.
	MaxTracked int
	Logger     *slog.Logger
}

// Authorizer authenticates and authorises every call. Authentication costs
// nothing but a map lookup for a key of the wrong shape, a key verified
// recently, an id known to be unknown, or a peer that failed too often; only
// a new, well-formed key id reaches the store, under a global rate limit.
type Authorizer struct {
	cfg     Config
	log     *slog.Logger
	lookups *rate.Limiter

	// keys holds keys read from the store by id, nil for an unknown id
	// (internal/fresh: a key in use is read again before it ages out, and
	// the calls that find none share one lookup).
	keys *fresh.Cache[*Key]

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	failures map[string]*rate.Limiter
}

// New returns an Authorizer.
func New(cfg Config) *Authorizer {
	cfg.CacheTTL = cmp.Or(cfg.CacheTTL, 5*time.Second)
	cfg.NegativeTTL = cmp.Or(cfg.NegativeTTL, NegativeTTLDefault)
	cfg.FailureRate = cmp.Or(cfg.FailureRate, FailureRateDefault)
	cfg.FailureBurst = cmp.Or(cfg.FailureBurst, FailureBurstDefault)
	cfg.LookupRate = cmp.Or(cfg.LookupRate, LookupRateDefault)
	cfg.LookupBurst = cmp.Or(cfg.LookupBurst, LookupBurstDefault)
	cfg.MaxTracked = cmp.Or(cfg.MaxTracked, MaxTrackedDefault)
	a := &Authorizer{cfg: cfg, log: cmp.Or(cfg.Logger, slog.Default()),
		lookups:  rate.NewLimiter(rate.Limit(cfg.LookupRate), cfg.LookupBurst),
		limiters: map[string]*rate.Limiter{}, failures: map[string]*rate.Limiter{}}
	a.keys = fresh.New(a.lookup, keyLookupTimeout, cfg.MaxTracked)
	return a
}

var (
	// errPeerBlocked: the peer failed too often; no lookup was made.
	errPeerBlocked = errors.New("too many failed authentications from this address")
	// errLookupsBusy: the global lookup budget is spent.
	errLookupsBusy = errors.New("too many key lookups")
)

type keyCtx struct{}

// FromContext returns the caller's key, if the call was authenticated.
func FromContext(ctx context.Context) (Key, bool) {
	k, ok := ctx.Value(keyCtx{}).(Key)
	return k, ok
}

// SeesCodes reports whether the caller may see codes it did not claim
// itself: admins, and any caller when authentication is off.
func SeesCodes(ctx context.Context) bool {
	k, ok := FromContext(ctx)
	return !ok || k.Role == Admin
}

// WithholdsCodes reports whether the caller is an auditor: it may look
// claims up, but their codes are left out of every answer.
func WithholdsCodes(ctx context.Context) bool {
	k, ok := FromContext(ctx)
	return ok && k.Role == Auditor
}

// SignIn checks a key as a call from peerAddr would be (the same failure
// and lookup limits), for a sign-in that is not a gRPC call: the web
// console's. Its errors are the statuses a call would get.
func (a *Authorizer) SignIn(ctx context.Context, text, peerAddr string) (Key, error) {
	if text == "" {
		return Key{}, rpcerr.Info(codes.Unauthenticated, "an API key is required", ReasonUnauthenticated)
	}
	k, err := a.verify(ctx, text, func() string { return peerAddr })
	switch {
	case errors.Is(err, ErrBadKey):
		if !a.noteFailure(peerAddr) {
			return Key{}, a.tooManyFailures(peerAddr)
		}
		return Key{}, rpcerr.Info(codes.Unauthenticated, "the API key is invalid or revoked", ReasonUnauthenticated)
	case errors.Is(err, errPeerBlocked):
		return Key{}, a.tooManyFailures(peerAddr)
	case errors.Is(err, errLookupsBusy):
		return Key{}, rateLimited(codes.Unavailable, "too many new API keys at once; retry shortly", untilToken(a.lookups))
	case err != nil:
		return Key{}, a.lookupFailed(ctx, err)
	}
	return k, nil
}

// Unary is the unary interceptor.
func (a *Authorizer) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, err := a.authorize(ctx, info.FullMethod, req)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// Stream is the stream interceptor. Client streams (ImportCodes) are
// authorised before their first message; their pool is checked by role.
func (a *Authorizer) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, err := a.authorize(ss.Context(), info.FullMethod, nil)
		if err != nil {
			return err
		}
		return h(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
	}
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// RecvMsg checks the export request's include_codes for auditors.
func (w *wrappedStream) RecvMsg(m any) error {
	if err := w.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if r, ok := m.(interface{ GetIncludeCodes() bool }); ok && r.GetIncludeCodes() && !SeesCodes(w.ctx) {
		return denied("only admins may export codes")
	}
	return nil
}

func (a *Authorizer) authorize(ctx context.Context, method string, req any) (context.Context, error) {
	if open(method) {
		return ctx, nil
	}
	// The caller's address is formatted only when a failure or a key
	// lookup needs it, not for every call a cached key answers.
	var host string
	peerAddr := func() string {
		if host == "" {
			host = peerHost(ctx)
		}
		return host
	}
	text := bearer(ctx)
	if text == "" {
		if !a.noteFailure(peerAddr()) {
			return ctx, a.tooManyFailures(peerAddr())
		}
		return ctx, rpcerr.Info(codes.Unauthenticated, "an API key is required (authorization: Bearer <key>)", ReasonUnauthenticated)
	}
	k, err := a.verify(ctx, text, peerAddr)
	switch {
	case errors.Is(err, ErrBadKey):
		if !a.noteFailure(peerAddr()) {
			return ctx, a.tooManyFailures(peerAddr())
		}
		return ctx, rpcerr.Info(codes.Unauthenticated, "the API key is invalid or revoked", ReasonUnauthenticated)
	case errors.Is(err, errPeerBlocked):
		return ctx, a.tooManyFailures(peerAddr())
	case errors.Is(err, errLookupsBusy):
		return ctx, rateLimited(codes.Unavailable, "too many new API keys at once; retry shortly", untilToken(a.lookups))
	}
	if err != nil {
		return ctx, a.lookupFailed(ctx, err)
	}
	logging.AddFields(ctx, logging.Fields{"key", k.ID})
	if !allowed(k.Role, method) {
		return ctx, denied("the key's role (" + string(k.Role) + ") may not call " + methodName(method))
	}
	if k.Role == Claimer && k.Pools != nil {
		// Requests that name a pool are checked here; MarkPrizeReady names
		// only a prize, and its handler checks the prize's pool (PoolAllowed).
		r, named := req.(interface{ GetPoolId() string })
		if named && !k.AllowsPool(r.GetPoolId()) || !named && !poolFreeForClaimers[method] {
			return ctx, denied("the key may not use this pool")
		}
	}
	if l := a.limiter(k); !l.Allow() {
		return ctx, rateLimited(codes.ResourceExhausted, "rate limit of the API key exceeded; slow down", untilToken(l))
	}
	return context.WithValue(ctx, keyCtx{}, k), nil
}

// methodName is method as a refusal may name it: a name of gRPC's form, at
// most 128 bytes of letters, digits, '.', '_' and '/'; anything else, which
// only a hand-made call sends, is not echoed.
func methodName(method string) string {
	if len(method) > 128 {
		return "this method"
	}
	for i := range len(method) {
		switch c := method[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '/':
		default:
			return "this method"
		}
	}
	return method
}

func allowed(role Role, method string) bool {
	if role == Admin {
		return true
	}
	for _, r := range Rules[method] {
		if r == role {
			return true
		}
	}
	return false
}

// verify checks the key against a recent read of its id, or the store.
func (a *Authorizer) verify(ctx context.Context, text string, peerAddr func() string) (Key, error) {
	id, secret, ok := splitKey(text)
	if !ok {
		return Key{}, ErrBadKey
	}
	key, ok := a.keys.Fresh(id)
	if !ok {
		if a.peerBlocked(peerAddr()) {
			return Key{}, errPeerBlocked
		}
		var err error
		if key, err = a.keys.Get(ctx, id); err != nil {
			return Key{}, err
		}
	}
	if key == nil || !key.RevokedAt.IsZero() || !key.matches(secret) {
		return Key{}, ErrBadKey
	}
	return *key, nil
}

// lookupFailed is the refusal of a call whose key could not be read: the
// call's own end (its deadline passed, or it was cancelled) as such, since
// the store may be well; else STORE_UNAVAILABLE, logged.
func (a *Authorizer) lookupFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	a.log.WarnContext(ctx, "key lookup failed", "err", err)
	return rpcerr.Retry(codes.Unavailable, "cannot check the API key now; retry later", ReasonStoreUnavailable, StoreRetryDelay)
}

// StoreRetryDelay is the wait every STORE_UNAVAILABLE refusal asks for in its
// google.rpc.RetryInfo (over HTTP, the Retry-After header).
const StoreRetryDelay = time.Second

// lookup reads a key id from the store, under the global lookup budget:
// the key, or nil for an unknown id, and how long to trust the answer.
func (a *Authorizer) lookup(ctx context.Context, id string) (*Key, time.Duration, error) {
	if !a.lookups.Allow() {
		return nil, 0, errLookupsBusy
	}
	k, err := a.cfg.Store.Get(ctx, id)
	switch {
	case errors.Is(err, ErrKeyNotFound):
		return nil, a.cfg.NegativeTTL, nil
	case err != nil:
		return nil, 0, err
	}
	return &k, a.cfg.CacheTTL, nil
}

// keyLookupTimeout bounds one read of a key id from the store, which the
// calls waiting for it share.
const keyLookupTimeout = 5 * time.Second

// failureLimiter returns the peer's budget of failed authentications.
func (a *Authorizer) failureLimiter(peerAddr string) *rate.Limiter {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.failures[peerAddr]
	if !ok {
		if len(a.failures) >= a.cfg.MaxTracked {
			clear(a.failures)
		}
		l = rate.NewLimiter(rate.Limit(a.cfg.FailureRate), a.cfg.FailureBurst)
		a.failures[peerAddr] = l
	}
	return l
}

// noteFailure spends one failure of the peer's budget; false when it had
// none left.
func (a *Authorizer) noteFailure(peerAddr string) bool { return a.failureLimiter(peerAddr).Allow() }

// peerBlocked reports a peer with no failure budget left.
func (a *Authorizer) peerBlocked(peerAddr string) bool {
	return a.failureLimiter(peerAddr).Tokens() < 1
}

// peerHost is the caller's address without its port: one budget per host.
func peerHost(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	addr := p.Addr.String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// tooManyFailures refuses a peer with no failure budget left, saying when
// it will have one again.
func (a *Authorizer) tooManyFailures(peerAddr string) error {
	return rateLimited(codes.ResourceExhausted, "too many failed authentications from this address; slow down",
		untilToken(a.failureLimiter(peerAddr)))
}

func (a *Authorizer) limiter(k Key) *rate.Limiter {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.limiters[k.ID]
	if ok {
		return l
	}
	r, burst := cmp.Or(k.Rate, a.cfg.Rate), cmp.Or(k.Burst, a.cfg.Burst)
	limit := rate.Limit(r)
	if r == 0 {
		limit = rate.Inf
	}
	l = rate.NewLimiter(limit, max(burst, 1))
	a.limiters[k.ID] = l
	return l
}

// bearer reads "authorization: Bearer <key>".
func bearer(ctx context.Context) string {
	// ValueFromIncomingContext reads the one key without copying the whole
	// metadata map, as FromIncomingContext does on every call.
	for _, v := range metadata.ValueFromIncomingContext(ctx, "authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
	}
	return ""
}

func denied(msg string) error {
	return rpcerr.Info(codes.PermissionDenied, msg, ReasonPermissionDenied)
}

// rateLimited is a RATE_LIMITED refusal with a google.rpc.RetryInfo saying
// how long to wait before calling again (over HTTP, the Retry-After header).
func rateLimited(code codes.Code, msg string, wait time.Duration) error {
	return rpcerr.Retry(code, msg, ReasonRateLimited, wait)
}

// untilToken is how long l takes to hold a token again, at least a
// millisecond.
func untilToken(l *rate.Limiter) time.Duration {
	missing := 1 - l.Tokens()
	if missing <= 0 || l.Limit() == rate.Inf {
		return time.Millisecond
	}
	if l.Limit() <= 0 {
		return time.Hour
	}
	wait := time.Duration(missing / float64(l.Limit()) * float64(time.Second))
	return max((wait + time.Millisecond - 1).Truncate(time.Millisecond), time.Millisecond)
}
