package auth

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Reasons of the ErrorInfo auth errors carry.
const (
	ReasonUnauthenticated  = "UNAUTHENTICATED"
	ReasonPermissionDenied = "PERMISSION_DENIED"
	ReasonRateLimited      = "RATE_LIMITED"
)

// Rules says which roles may call each method. Methods not listed are
// refused to everyone but admins; health and reflection need no key.
var Rules = map[string][]Role{
	"/dispenser.v1.ClaimService/ClaimCode":      {Claimer, Admin},
	"/dispenser.v1.ClaimService/GetClaim":       {Claimer, Admin},
	"/dispenser.v1.ClaimService/ListUserClaims": {Claimer, Admin},
	"/dispenser.v1.AdminService/GetPool":        {Auditor, Admin},
	"/dispenser.v1.AdminService/ListPools":      {Auditor, Admin},
	"/dispenser.v1.AdminService/GetPoolStats":   {Auditor, Admin},
	"/dispenser.v1.AdminService/ExportClaims":   {Auditor, Admin},
	"/dispenser.v1.PrizeService/RecordPrize":    {Claimer, Admin},
	"/dispenser.v1.PrizeService/MarkPrizeReady": {Claimer, Admin},
	"/dispenser.v1.PrizeService/GetPrize":       {Auditor, Admin},
	"/dispenser.v1.PrizeService/ListPrizes":     {Auditor, Admin},
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

// Config configures the Authorizer.
type Config struct {
	Store *Store
	// Rate and Burst are the default per-key limits (keys may set their
	// own); 0 rate means unlimited.
	Rate  float64
	Burst int
	// CacheTTL is how long a verified key is trusted before it is read
	// again (revocations take effect within it); default 5s.
	CacheTTL time.Duration
	Logger   *slog.Logger
}

// Authorizer authenticates and authorises every call.
type Authorizer struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	cache    map[string]cachedKey
	limiters map[string]*rate.Limiter
}

type cachedKey struct {
	key Key
	at  time.Time
}

// New returns an Authorizer.
func New(cfg Config) *Authorizer {
	cfg.CacheTTL = cmp.Or(cfg.CacheTTL, 5*time.Second)
	return &Authorizer{cfg: cfg, log: cmp.Or(cfg.Logger, slog.Default()),
		cache: map[string]cachedKey{}, limiters: map[string]*rate.Limiter{}}
}

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
	text := bearer(ctx)
	if text == "" {
		return ctx, withReason(codes.Unauthenticated, "an API key is required (authorization: Bearer <key>)", ReasonUnauthenticated)
	}
	k, err := a.verify(ctx, text)
	if errors.Is(err, ErrBadKey) {
		return ctx, withReason(codes.Unauthenticated, "the API key is invalid or revoked", ReasonUnauthenticated)
	}
	if err != nil {
		a.log.WarnContext(ctx, "key lookup failed", "err", err)
		return ctx, withReason(codes.Unavailable, "cannot check the API key now; retry later", "STORE_UNAVAILABLE")
	}
	logging.AddFields(ctx, logging.Fields{"key", k.ID})
	if !allowed(k.Role, method) {
		return ctx, denied("the key's role (" + string(k.Role) + ") may not call " + method)
	}
	if k.Role == Claimer && k.Pools != nil {
		// Requests that name a pool are checked here; MarkPrizeReady names
		// only a prize, and its handler checks the prize's pool (PoolAllowed).
		r, named := req.(interface{ GetPoolId() string })
		if named && !k.AllowsPool(r.GetPoolId()) || !named && !poolFreeForClaimers[method] {
			return ctx, denied("the key may not use this pool")
		}
	}
	if !a.limiter(k).Allow() {
		return ctx, withReason(codes.ResourceExhausted, "rate limit of the API key exceeded; slow down", ReasonRateLimited)
	}
	return context.WithValue(ctx, keyCtx{}, k), nil
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

// verify checks the key, trusting a recent verification of the same id.
func (a *Authorizer) verify(ctx context.Context, text string) (Key, error) {
	id, secret, ok := splitKey(text)
	if !ok {
		return Key{}, ErrBadKey
	}
	a.mu.Lock()
	c, hit := a.cache[id]
	a.mu.Unlock()
	if hit && time.Since(c.at) < a.cfg.CacheTTL {
		if !c.key.matches(secret) {
			return Key{}, ErrBadKey
		}
		return c.key, nil
	}
	k, err := a.cfg.Store.Verify(ctx, text)
	if err != nil {
		return Key{}, err
	}
	a.mu.Lock()
	a.cache[id] = cachedKey{key: k, at: time.Now()}
	a.mu.Unlock()
	return k, nil
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
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
	}
	return ""
}

func denied(msg string) error { return withReason(codes.PermissionDenied, msg, ReasonPermissionDenied) }

func withReason(code codes.Code, msg, reason string) error {
	st, err := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "dispenser.v1"})
	if err != nil {
		return status.Error(code, msg)
	}
	return st.Err()
}
