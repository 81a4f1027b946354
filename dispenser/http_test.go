package dispenser_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/dispenser"
	"github.com/dispenserhq/dispenser/internal/testdaemon"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
	"github.com/dispenserhq/dispenser/proto/openapi"
)

// httpAPI is a live dispenserd with API keys on, reached over HTTP/JSON.
type httpAPI struct {
	t                       *testing.T
	base                    string
	admin, auditor, claimer string
	otherPool               string // a claimer key limited to pool "other"
	client                  *http.Client
	daemon                  testdaemon.Daemon
}

func startHTTP(t *testing.T, edit func(*dispenser.Config)) *httpAPI {
	t.Helper()
	t.Parallel()
	d := testdaemon.Run(t, func(c *dispenser.Config) {
		c.NoAuth = false
		if edit != nil {
			edit(c)
		}
	})
	ctx := context.Background()
	db, err := pgxpool.New(ctx, d.DB.URL)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	keys := auth.NewStore(db)
	mk := func(k auth.Key) string {
		_, secret, err := keys.Create(ctx, k)
		require.NoError(t, err)
		return secret
	}
	return &httpAPI{t: t, base: d.HTTP, daemon: d, client: &http.Client{Timeout: 30 * time.Second},
		admin: mk(auth.Key{Role: auth.Admin, Name: "admin"}), auditor: mk(auth.Key{Role: auth.Auditor, Name: "auditor"}),
		claimer: mk(auth.Key{Role: auth.Claimer, Name: "claimer"}), otherPool: mk(auth.Key{Role: auth.Claimer, Name: "other", Pools: []string{"other"}})}
}

// do sends a request and returns the status and the decoded JSON body.
func (h *httpAPI) do(method, path, key string, body any, headers ...string) (int, map[string]any) {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		require.NoError(h.t, err)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, h.base+path, rd)
	require.NoError(h.t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := h.client.Do(req)
	require.NoError(h.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(h.t, err)
	out := map[string]any{}
	if len(raw) > 0 {
		require.NoError(h.t, json.Unmarshal(raw, &out), "body: %s", raw)
	}
	return resp.StatusCode, out
}

// send sends req with key and returns the status and the body as it came.
func (h *httpAPI) send(req *http.Request, key string) (int, []byte) {
	h.t.Helper()
	resp, raw := h.exchange(req, key)
	return resp.StatusCode, raw
}

// exchange sends req with key and returns the answer, its body read whole.
func (h *httpAPI) exchange(req *http.Request, key string) (*http.Response, []byte) {
	h.t.Helper()
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := h.client.Do(req)
	require.NoError(h.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(h.t, err)
	return resp, raw
}

// refusal checks an error answer: HTTP status, gRPC code name and reason.
func (h *httpAPI) refusal(status int, body map[string]any, wantStatus int, grpcCode, reason string) {
	h.t.Helper()
	require.Equal(h.t, wantStatus, status, "body %v", body)
	require.Equal(h.t, grpcCode, body["status"], "body %v", body)
	require.Equal(h.t, reason, body["reason"], "body %v", body)
	require.NotEmpty(h.t, body["message"])
	details, ok := body["details"].([]any)
	require.True(h.t, ok && len(details) > 0, "details: %v", body)
	info := details[0].(map[string]any)
	require.Equal(h.t, "type.googleapis.com/google.rpc.ErrorInfo", info["@type"])
	require.Equal(h.t, reason, info["reason"])
}

// fieldOf is the field an InvalidArgument's ErrorInfo names.
func fieldOf(body map[string]any) string {
	details, _ := body["details"].([]any)
	if len(details) == 0 {
		return ""
	}
	info, _ := details[0].(map[string]any)
	md, _ := info["metadata"].(map[string]any)
	f, _ := md["field"].(string)
	return f
}

// pool creates a pool over HTTP and uploads n codes to it.
func (h *httpAPI) pool(id string, n int, settings map[string]any) {
	h.t.Helper()
	p := map[string]any{"id": id}
	for k, v := range settings {
		p[k] = v
	}
	st, body := h.do("POST", "/v1/pools", h.admin, p)
	require.Equal(h.t, http.StatusOK, st, "%v", body)
	var file strings.Builder
	for i := range n {
		fmt.Fprintf(&file, "%s-HTTP-%04d\n", id, i)
	}
	st, body = h.do("POST", "/v1/pools/"+id+"/imports?source_name=test.txt", h.admin, file.String(), "Content-Type", "text/plain")
	require.Equal(h.t, http.StatusOK, st, "%v", body)
	require.Equal(h.t, fmt.Sprint(n), body["inserted"])
}

func TestHTTPClaimReplayAndRefusals(t *testing.T) {
	h := startHTTP(t, nil)
	h.pool("p1", 2, map[string]any{"per_user_limit": 1})

	claimBody := map[string]any{"user_id": "alice", "request_id": "r1"}
	st, first := h.do("POST", "/v1/pools/p1/claims", h.claimer, claimBody)
	require.Equal(t, http.StatusOK, st, "%v", first)
	claim := first["claim"].(map[string]any)
	require.NotEmpty(t, claim["code"])
	require.Equal(t, false, first["replayed"])

	// A retry answers the same code.
	st, again := h.do("POST", "/v1/pools/p1/claims", h.claimer, claimBody)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, claim["code"], again["claim"].(map[string]any)["code"])
	require.Equal(t, true, again["replayed"])

	// The Idempotency-Key header is the request id.
	st, viaHeader := h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "alice"}, "Idempotency-Key", "r1")
	require.Equal(t, http.StatusOK, st, "%v", viaHeader)
	require.Equal(t, claim["code"], viaHeader["claim"].(map[string]any)["code"])
	st, body := h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "alice", "request_id": "r1"}, "Idempotency-Key", "other")
	h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)

	// A deadline (Grpc-Timeout) the gateway cannot read is refused naming
	// the header, without echoing it; one it can is the call's.
	for _, bad := range []string{"soon", "5", "9x", "-1S", strings.Repeat("9", 4000) + "S"} {
		st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "alice", "request_id": "r1"}, "Grpc-Timeout", bad)
		h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
		require.Equal(t, "Grpc-Timeout", fieldOf(body), "%q: %v", bad, body)
		require.NotContains(t, body["message"], bad, "%q", bad)
	}
	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "alice", "request_id": "r1"}, "Grpc-Timeout", "10S")
	require.Equal(t, http.StatusOK, st, "%v", body)
	require.Equal(t, claim["code"], body["claim"].(map[string]any)["code"])
	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "carol", "request_id": "late"}, "Grpc-Timeout", "1n")
	require.Equal(t, http.StatusGatewayTimeout, st, "%v", body)
	require.Equal(t, "DeadlineExceeded", body["status"], "%v", body)
	require.NotContains(t, body, "reason", "%v", body)
	st, body = h.do("GET", "/v1/pools/p1/claims/late?user_id=carol", h.claimer, nil)
	h.refusal(st, body, http.StatusNotFound, "NotFound", dispenser.ReasonClaimNotFound)

	// GET the claim back.
	st, got := h.do("GET", "/v1/pools/p1/claims/r1?user_id=alice", h.claimer, nil)
	require.Equal(t, http.StatusOK, st, "%v", got)
	require.Equal(t, claim["code"], got["claim"].(map[string]any)["code"])

	// Every refusal of the claim call, with its status and reason.
	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "alice", "request_id": "r2"})
	h.refusal(st, body, http.StatusConflict, "FailedPrecondition", dispenser.ReasonUserLimit)
	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "bob", "request_id": "r1"})
	h.refusal(st, body, http.StatusConflict, "AlreadyExists", dispenser.ReasonRequestReused)
	require.NotContains(t, fmt.Sprint(body), claim["code"], "another user's request shows nothing")
	st, _ = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "bob", "request_id": "b1"})
	require.Equal(t, http.StatusOK, st)
	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "carol", "request_id": "c1"})
	h.refusal(st, body, http.StatusConflict, "ResourceExhausted", dispenser.ReasonPoolExhausted)
	st, body = h.do("POST", "/v1/pools/nope/claims", h.claimer, map[string]any{"user_id": "carol", "request_id": "c1"})
	h.refusal(st, body, http.StatusNotFound, "NotFound", dispenser.ReasonPoolNotFound)
	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "", "request_id": "c2"})
	h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
	// The gateway's own refusals carry the reason and the field too.
	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, `{"user_id": "x", "request_id": "y", "surprise": 1}`)
	h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
	require.Equal(t, "surprise", fieldOf(body), "unknown fields are refused by name: %v", body)
	for bad, field := range map[string]string{`{not json`: "body", `{"user_id":`: "body", `[]`: "body",
		`{"user_id": 7, "request_id": "y"}`: "user_id", `{"userId": "x", "requestId": 7}`: "request_id"} {
		st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, bad)
		h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
		require.Equal(t, field, fieldOf(body), "%s: %v", bad, body)
	}
	// A body that names another pool (or request) than its URL is refused,
	// not decided in the URL's; one that names the same is answered.
	for bad, field := range map[string]string{`{"pool_id": "nope", "user_id": "erin", "request_id": "e1"}`: "pool_id",
		`{"poolId": "nope", "user_id": "erin", "request_id": "e1"}`:       "pool_id",
		`{"\u0070ool_id": "nope", "user_id": "erin", "request_id": "e1"}`: "pool_id",
		`{"pool\u005fid": "nope", "user_id": "erin", "request_id": "e1"}`: "pool_id"} {
		st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, bad)
		h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
		require.Equal(t, field, fieldOf(body), "%s: %v", bad, body)
	}
	for _, bad := range []string{`{"user_id": "erin", "request_id": "e2"}`, `{"user_id": "erin", "\u0072equestId": "e2"}`} {
		st, body = h.do("POST", "/v1/pools/p1/reservations/e1:confirm", h.claimer, bad)
		h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
		require.Equal(t, "request_id", fieldOf(body), "%s: %v", bad, body)
	}
	st, body = h.do("PATCH", "/v1/pools/p1", h.admin, map[string]any{"id": "other", "paused": true})
	h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
	require.Equal(t, "pool.id", fieldOf(body), "%v", body)
	st, body = h.do("GET", "/v1/pools/p1", h.admin, nil)
	require.Equal(t, http.StatusOK, st, "%v", body)
	require.Equal(t, false, body["pool"].(map[string]any)["paused"], "the refused update wrote nothing")
	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"pool_id": "p1", "user_id": "alice", "request_id": "r1"})
	require.Equal(t, http.StatusOK, st, "the same pool in body and URL: %v", body)
	require.Equal(t, claim["code"], body["claim"].(map[string]any)["code"])

	// Paths and methods the API does not have carry a reason too.
	st, body = h.do("GET", "/v1/nowhere", h.admin, nil)
	h.refusal(st, body, http.StatusNotFound, "NotFound", dispenser.ReasonNoSuchRoute)
	st, body = h.do("DELETE", "/v1/pools/p1/claims", h.claimer, nil)
	h.refusal(st, body, http.StatusMethodNotAllowed, "Unimplemented", dispenser.ReasonNoSuchRoute)

	st, body = h.do("GET", "/v1/pools?page_size=many", h.admin, nil)
	h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
	require.Equal(t, "page_size", fieldOf(body), "%v", body)
	st, body = h.do("GET", "/v1/pools/p1/claims/nope?user_id=alice", h.claimer, nil)
	h.refusal(st, body, http.StatusNotFound, "NotFound", dispenser.ReasonClaimNotFound)

	// No method override: a form post stays a POST, which this path does
	// not take (grpc-gateway would have served it as a GET).
	st, body = h.do("POST", "/v1/pools/p1/claims/a1", h.claimer, "user_id=alice",
		"Content-Type", "application/x-www-form-urlencoded", "X-HTTP-Method-Override", "GET")
	h.refusal(st, body, http.StatusMethodNotAllowed, "Unimplemented", dispenser.ReasonNoSuchRoute)

	// A body the server cannot read as sent: an encoded one.
	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "zed", "request_id": "gz"},
		"Content-Encoding", "gzip")
	h.refusal(st, body, http.StatusUnsupportedMediaType, "InvalidArgument", dispenser.ReasonInvalidArgument)
	require.Equal(t, "body", fieldOf(body))
	// "identity" is no encoding: the claim is decided (p1 has run out).
	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "zed", "request_id": "id"},
		"Content-Encoding", "identity")
	h.refusal(st, body, http.StatusConflict, "ResourceExhausted", dispenser.ReasonPoolExhausted)

	// Paused and closed pools.
	st, body = h.do("PATCH", "/v1/pools/p1", h.admin, map[string]any{"paused": true})
	require.Equal(t, http.StatusOK, st, "%v", body)
	require.Equal(t, true, body["pool"].(map[string]any)["paused"])
	require.Eventually(t, func() bool {
		st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "dave", "request_id": "d1"})
		return st == http.StatusConflict && body["reason"] == dispenser.ReasonPoolPaused
	}, 5*time.Second, 50*time.Millisecond)
	h.refusal(st, body, http.StatusConflict, "FailedPrecondition", dispenser.ReasonPoolPaused)
	h.pool("closed", 1, map[string]any{"claim_ends_at": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)})
	st, body = h.do("POST", "/v1/pools/closed/claims", h.claimer, map[string]any{"user_id": "dave", "request_id": "d1"})
	h.refusal(st, body, http.StatusConflict, "FailedPrecondition", dispenser.ReasonPoolClosed)
}

// API keys and roles over HTTP: the same as over gRPC.
func TestHTTPKeysAndRoles(t *testing.T) {
	h := startHTTP(t, nil)
	h.pool("p1", 3, nil)
	claim := map[string]any{"user_id": "u1", "request_id": "r1"}

	st, body := h.do("POST", "/v1/pools/p1/claims", "", claim)
	h.refusal(st, body, http.StatusUnauthorized, "Unauthenticated", auth.ReasonUnauthenticated)
	st, body = h.do("POST", "/v1/pools/p1/claims", "dk_nope_nope", claim)
	h.refusal(st, body, http.StatusUnauthorized, "Unauthenticated", auth.ReasonUnauthenticated)
	st, body = h.do("POST", "/v1/pools/p1/claims", h.otherPool, claim)
	h.refusal(st, body, http.StatusForbidden, "PermissionDenied", auth.ReasonPermissionDenied)
	st, body = h.do("POST", "/v1/pools/p1/claims", h.auditor, claim)
	h.refusal(st, body, http.StatusForbidden, "PermissionDenied", auth.ReasonPermissionDenied)
	st, body = h.do("GET", "/v1/pools", h.claimer, nil)
	h.refusal(st, body, http.StatusForbidden, "PermissionDenied", auth.ReasonPermissionDenied)
	st, body = h.do("POST", "/v1/pools", h.auditor, map[string]any{"id": "p2"})
	h.refusal(st, body, http.StatusForbidden, "PermissionDenied", auth.ReasonPermissionDenied)

	// The auditor reads pools and stats, and exports without codes.
	st, body = h.do("GET", "/v1/pools/p1/stats", h.auditor, nil)
	require.Equal(t, http.StatusOK, st, "%v", body)
	require.Equal(t, "3", body["stats"].(map[string]any)["imported"])
	st, body = h.do("GET", "/v1/pools", h.auditor, nil)
	require.Equal(t, http.StatusOK, st, "%v", body)
	require.Len(t, body["pools"], 1)
	st, body = h.do("GET", "/v1/health", h.auditor, nil)
	require.Equal(t, http.StatusOK, st, "%v", body)
	require.Equal(t, true, body["postgres_up"])
	st, body = h.do("GET", "/v1/health", h.claimer, nil)
	h.refusal(st, body, http.StatusForbidden, "PermissionDenied", auth.ReasonPermissionDenied)

	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, claim)
	require.Equal(t, http.StatusOK, st, "%v", body)
	req, err := http.NewRequest("GET", h.base+"/v1/pools/p1/claims:export?include_codes=true", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+h.auditor)
	resp, err := h.client.Do(req)
	require.NoError(t, err)
	raw, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Contains(t, string(raw), auth.ReasonPermissionDenied, "an auditor cannot export codes")
	req.Header.Set("Authorization", "Bearer "+h.admin)
	resp, err = h.client.Do(req)
	require.NoError(t, err)
	raw, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	require.Len(t, lines, 1, "one claim, one NDJSON line: %s", raw)
	var line map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &line))
	require.Contains(t, lines[0], "p1-HTTP-")

	// Keys over HTTP: create (shown once), list, revoke.
	st, body = h.do("POST", "/v1/keys", h.admin, map[string]any{"key": map[string]any{"role": "KEY_ROLE_CLAIMER", "name": "shop"}})
	require.Equal(t, http.StatusOK, st, "%v", body)
	secret, _ := body["secret"].(string)
	require.NotEmpty(t, secret, "%v", body)
	id := body["key"].(map[string]any)["id"].(string)
	st, _ = h.do("POST", "/v1/pools/p1/claims", secret, map[string]any{"user_id": "u2", "request_id": "r2"})
	require.Equal(t, http.StatusOK, st)
	st, body = h.do("POST", "/v1/keys/"+id+":revoke", h.admin, map[string]any{})
	require.Equal(t, http.StatusOK, st, "%v", body)
	require.Eventually(t, func() bool {
		st, _ = h.do("POST", "/v1/pools/p1/claims", secret, map[string]any{"user_id": "u3", "request_id": "r3"})
		return st == http.StatusUnauthorized
	}, 10*time.Second, 100*time.Millisecond)
}

// Rate limits over HTTP answer 429 RATE_LIMITED, with a Retry-After header
// (whole seconds) and the RetryInfo it comes from.
func TestHTTPRateLimited(t *testing.T) {
	h := startHTTP(t, func(c *dispenser.Config) { c.RateLimit, c.RateBurst = 1, 2 })
	limited := false
	for i := range 10 {
		req, err := http.NewRequest("GET", h.base+"/v1/pools/nope", nil)
		require.NoError(t, err)
		resp, raw := h.exchange(req, h.admin)
		var body map[string]any
		require.NoError(t, json.Unmarshal(raw, &body), "%s", raw)
		if resp.StatusCode == http.StatusTooManyRequests {
			h.refusal(resp.StatusCode, body, http.StatusTooManyRequests, "ResourceExhausted", auth.ReasonRateLimited)
			require.Equal(t, "1", resp.Header.Get("Retry-After"), "one call a second: under a second to wait, rounded up")
			var types []any
			for _, d := range body["details"].([]any) {
				types = append(types, d.(map[string]any)["@type"])
			}
			require.Contains(t, types, "type.googleapis.com/google.rpc.RetryInfo")
			limited = true
			break
		}
		require.Equal(t, http.StatusNotFound, resp.StatusCode, "call %d: %v", i, body)
		require.Empty(t, resp.Header.Get("Retry-After"), "only a refusal that waiting cures says when")
	}
	require.True(t, limited)
}

// Failed authentications are limited per client address over HTTP as over
// gRPC: one address that keeps sending bad keys is refused RATE_LIMITED for
// keys it has not proven, and another address's new key still works, on
// the claim routes (served in the gateway) and the admin routes (served by
// the in-process gRPC server) alike. A header naming another address
// changes nothing.
func TestHTTPFailedAuthenticationsLimitedPerAddress(t *testing.T) {
	h := startHTTP(t, nil)
	h.pool("p1", 5, nil)
	newKey := func(role string) string {
		st, body := h.do("POST", "/v1/keys", h.admin, map[string]any{"key": map[string]any{"role": role}})
		require.Equal(t, http.StatusOK, st, "%v", body)
		return body["secret"].(string)
	}
	claimerA, claimerB, adminB := newKey("KEY_ROLE_CLAIMER"), newKey("KEY_ROLE_CLAIMER"), newKey("KEY_ROLE_ADMIN")
	from := func(ip string) *httpAPI {
		c := *h
		c.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext}}
		return &c
	}
	a, b := from("127.0.0.2"), from("127.0.0.3")
	// Address A keeps failing, on both kinds of route, naming B in every
	// header a proxy might use, until the test ends.
	var failed, limited atomic.Int64
	stop := make(chan struct{})
	var flood sync.WaitGroup
	flood.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			method, path, body := "POST", "/v1/pools/p1/claims", any(map[string]any{"user_id": "u", "request_id": "r"})
			if i%2 == 1 {
				method, path, body = "GET", "/v1/pools", nil
			}
			st, ans := a.do(method, path, "dk_bad", body,
				"X-Forwarded-For", "127.0.0.3", "Grpc-Metadata-X-Forwarded-For", "127.0.0.3",
				"Grpc-Metadata-Dispenser-Client-Addr", "127.0.0.3:1", "X-Real-Ip", "127.0.0.3")
			switch st {
			case http.StatusTooManyRequests:
				h.refusal(st, ans, http.StatusTooManyRequests, "ResourceExhausted", auth.ReasonRateLimited)
				limited.Add(1)
			default:
				h.refusal(st, ans, http.StatusUnauthorized, "Unauthenticated", auth.ReasonUnauthenticated)
				failed.Add(1)
			}
		}
	})
	defer flood.Wait()
	defer close(stop)
	require.Eventually(t, func() bool { return limited.Load() >= 20 }, 20*time.Second, 5*time.Millisecond,
		"address A is refused once past its failures")
	require.LessOrEqual(t, failed.Load(), int64(auth.FailureBurstDefault+40), "one budget for address A, whatever the route")
	// Address B's new keys are looked up and work meanwhile.
	st, body := b.do("POST", "/v1/pools/p1/claims", claimerB, map[string]any{"user_id": "ub", "request_id": "rb"})
	require.Equal(t, http.StatusOK, st, "a claim from another address: %v", body)
	st, body = b.do("GET", "/v1/pools", adminB, nil)
	require.Equal(t, http.StatusOK, st, "an admin call from another address: %v", body)
	st, body = b.do("GET", "/v1/pools/p1/claims/ra?user_id=ua", claimerA, nil)
	require.Equal(t, http.StatusNotFound, st, "a third new key from B: %v", body)
}

// Reservations over HTTP: reserve, confirm, cancel, and their refusals.
func TestHTTPReservations(t *testing.T) {
	h := startHTTP(t, nil)
	h.pool("p1", 3, map[string]any{"per_user_limit": 3, "holds_per_user": 1})
	st, body := h.do("POST", "/v1/pools/p1/reservations", h.claimer, map[string]any{"user_id": "u1", "request_id": "h1", "hold_for": "60s"})
	require.Equal(t, http.StatusOK, st, "%v", body)
	st, body = h.do("POST", "/v1/pools/p1/reservations", h.claimer, map[string]any{"user_id": "u1", "request_id": "h2"})
	h.refusal(st, body, http.StatusConflict, "FailedPrecondition", dispenser.ReasonHoldLimit)
	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "u1", "request_id": "h1"})
	h.refusal(st, body, http.StatusConflict, "FailedPrecondition", dispenser.ReasonReservationPending)
	st, body = h.do("POST", "/v1/pools/p1/reservations/h1:confirm", h.claimer, map[string]any{"user_id": "u1"})
	require.Equal(t, http.StatusOK, st, "%v", body)
	st, body = h.do("POST", "/v1/pools/p1/reservations/h1:cancel", h.claimer, map[string]any{"user_id": "u1"})
	h.refusal(st, body, http.StatusConflict, "FailedPrecondition", dispenser.ReasonReservationConfirmed)
	st, body = h.do("POST", "/v1/pools/p1/reservations", h.claimer, map[string]any{"user_id": "u2"}, "Idempotency-Key", "h3")
	require.Equal(t, http.StatusOK, st, "%v", body)
	st, body = h.do("POST", "/v1/pools/p1/reservations/h3:cancel", h.claimer, map[string]any{"user_id": "u2"})
	require.Equal(t, http.StatusOK, st, "%v", body)
	st, body = h.do("POST", "/v1/pools/p1/reservations/h3:confirm", h.claimer, map[string]any{"user_id": "u2"})
	h.refusal(st, body, http.StatusGone, "FailedPrecondition", dispenser.ReasonReservationCancelled)
	st, body = h.do("POST", "/v1/pools/p1/reservations/none:confirm", h.claimer, map[string]any{"user_id": "u2"})
	h.refusal(st, body, http.StatusNotFound, "NotFound", dispenser.ReasonReservationNotFound)
	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "u3", "request_id": "c1"})
	require.Equal(t, http.StatusOK, st, "%v", body)
	st, body = h.do("POST", "/v1/pools/p1/reservations/c1:confirm", h.claimer, map[string]any{"user_id": "u3"})
	h.refusal(st, body, http.StatusConflict, "FailedPrecondition", dispenser.ReasonNotAReservation)
	// A hold past its time is refused at confirm, even before the expiry job.
	st, body = h.do("POST", "/v1/pools/p1/reservations", h.claimer, map[string]any{"user_id": "u4", "request_id": "h4", "hold_for": "1s"})
	require.Equal(t, http.StatusOK, st, "%v", body)
	time.Sleep(1100 * time.Millisecond)
	st, body = h.do("POST", "/v1/pools/p1/reservations/h4:confirm", h.claimer, map[string]any{"user_id": "u4"})
	h.refusal(st, body, http.StatusGone, "FailedPrecondition", dispenser.ReasonReservationExpired)
}

// A duration or a time the JSON mapping cannot read is refused naming its
// field (protojson gives only a position for these), wherever it sits in
// the body, as a value of the wrong type is; a body with a second value
// after its own is refused; nothing is written.
func TestHTTPUnreadableValuesNameTheirField(t *testing.T) {
	h := startHTTP(t, nil)
	h.pool("p1", 3, nil)
	for _, c := range []struct{ method, path, body, field string }{
		{"POST", "/v1/pools/p1/reservations", `{"user_id":"u1","request_id":"h1","hold_for":"abc"}`, "hold_for"},
		{"POST", "/v1/pools/p1/reservations", "\n  {\"user_id\": \"ü∂\",\n  \"requestId\": \"h1\",\n  \"holdFor\": \"10 minutes\"}", "hold_for"},
		{"POST", "/v1/pools", `{"id":"p2","claim_ends_at":"2020-13-01T00:00:00Z"}`, "claim_ends_at"},
		{"POST", "/v1/pools", `{"id":"p2","hold_default":{"seconds":5}}`, "hold_default"},
		{"POST", "/v1/pools", `{"id":"p2","hold_max":[1]}`, "hold_max"},
		{"POST", "/v1/pools", `{"id":"p2","per_user_limit":"x"}`, "per_user_limit"},
		{"PATCH", "/v1/pools/p1?update_mask=claim_starts_at", `{"claim_starts_at":"yesterday"}`, "claim_starts_at"},
		{"POST", "/v1/pools", `{"id":"p2",`, "body"},
		{"POST", "/v1/pools", `{"id":"p2","display_name":"r\ud800"}`, "display_name"},
		{"POST", "/v1/pools/p1/claims", `{"user_id":"\udc00x","request_id":"r1"}`, "user_id"},
		{"POST", "/v1/pools/p1/claims", `{"request_id":"r1","user_id":"\ud83d\ude00\ud83d"}`, "user_id"},
		{"POST", "/v1/pools", `{"id":"p2","display_name":"\\ud800","webhook_url":"\ud800"}`, "webhook_url"},
		{"POST", "/v1/pools/p1/claims", `{"user_id":"u1","request_id":"r1"} {"user_id":"u2"}`, "body"},
		{"POST", "/v1/pools/p1/claims", `{"user_id":"u1","request_id":"r1"}}`, "body"},
	} {
		st, body := h.do(c.method, c.path, h.admin, c.body)
		h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
		require.Equal(t, c.field, fieldOf(body), "%s %s %s: %v", c.method, c.path, c.body, body)
		require.NotContains(t, body["message"], "proto:", "the decoder's own prefix is not the API's")
		if c.field != "body" {
			require.NotContains(t, body["message"], "(line", "a named field needs no position")
		}
	}
	// The same for an unknown field and one given twice.
	for bad, field := range map[string]string{`{"user_id":"u1","request_id":"r1","x":{"y":1}}`: "x",
		`{"user_id":"u1","request_id":"r1","user_id":"u2"}`: "user_id"} {
		st, body := h.do("POST", "/v1/pools/p1/claims", h.claimer, bad)
		h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
		require.Equal(t, field, fieldOf(body), "%s: %v", bad, body)
		require.Regexp(t, `^`+field+`: (unknown|duplicate) field "`+field+`"$`, body["message"])
	}
	st, body := h.do("GET", "/v1/pools/p2", h.admin, nil)
	h.refusal(st, body, http.StatusNotFound, "NotFound", dispenser.ReasonPoolNotFound)
	st, body = h.do("GET", "/v1/pools/p1/stats", h.admin, nil)
	require.Equal(t, http.StatusOK, st, "%v", body)
	require.Equal(t, "0", body["stats"].(map[string]any)["held"], "%v", body)
	require.Equal(t, "0", body["stats"].(map[string]any)["claimed"], "%v", body)
	// White space after the value is no second value.
	st, body = h.do("POST", "/v1/pools/p1/claims", h.admin, "{\"user_id\":\"u1\",\"request_id\":\"r1\"}\n\n ")
	require.Equal(t, http.StatusOK, st, "%v", body)
}

// Ids may hold any printable character, and a URL carries them
// percent-encoded: a request id or user id with '/', ':', '%', '?', '#' or
// a space reaches its claim, reservation and list over HTTP.
func TestHTTPPathIDsPercentEncoded(t *testing.T) {
	h := startHTTP(t, nil)
	h.pool("p1", 20, map[string]any{"per_user_limit": 10})
	esc := url.PathEscape
	ids := []string{"cart/77", "a:b", "50%", "q?x=1", "frag#1", "two words", "../../v1/keys", "x:confirm"}
	for i, id := range ids {
		user := "team/" + id
		st, body := h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": user, "request_id": id})
		require.Equal(t, http.StatusOK, st, "%s: %v", id, body)
		code := body["claim"].(map[string]any)["code"]
		st, body = h.do("GET", "/v1/pools/p1/claims/"+esc(id), h.claimer, nil)
		require.Equal(t, http.StatusOK, st, "%s: %v", id, body)
		require.Equal(t, id, body["claim"].(map[string]any)["request_id"])
		require.Equal(t, code, body["claim"].(map[string]any)["code"])
		st, body = h.do("GET", "/v1/pools/p1/users/"+esc(user)+"/claims", h.claimer, nil)
		require.Equal(t, http.StatusOK, st, "%s: %v", id, body)
		require.Len(t, body["claims"], 1, "%s", id)

		hold := fmt.Sprintf("hold-%d/%s", i, id)
		st, body = h.do("POST", "/v1/pools/p1/reservations", h.claimer, map[string]any{"user_id": user, "request_id": hold})
		require.Equal(t, http.StatusOK, st, "%s: %v", hold, body)
		// The body may repeat the path's request id, as long as it agrees.
		st, body = h.do("POST", "/v1/pools/p1/reservations/"+esc(hold)+":confirm", h.claimer,
			map[string]any{"user_id": user, "request_id": hold})
		require.Equal(t, http.StatusOK, st, "%s: %v", hold, body)
		require.Equal(t, hold, body["claim"].(map[string]any)["request_id"])
		st, body = h.do("POST", "/v1/pools/p1/reservations/"+esc(hold)+":confirm", h.claimer,
			map[string]any{"user_id": user, "request_id": hold + "x"})
		h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
		require.Equal(t, "request_id", fieldOf(body))
	}
	// A malformed escape is refused (by net/http, before any handler).
	req, err := http.NewRequest("GET", h.base+"/v1/pools/p1/claims/x", nil)
	require.NoError(t, err)
	req.URL.Opaque = "/v1/pools/p1/claims/bad%zz" // sent as it is
	st, raw := h.send(req, h.claimer)
	require.Equal(t, http.StatusBadRequest, st, "%s", raw)
}

// The streaming calls (export, generation) refuse with the error body every
// other call has: the reason at the top, the HTTP status of the reason.
func TestHTTPStreamingCallsRefuseLikeTheRest(t *testing.T) {
	h := startHTTP(t, nil)
	h.pool("p1", 3, nil)
	st, body := h.do("GET", "/v1/pools/nope/claims:export", h.admin, nil)
	h.refusal(st, body, http.StatusNotFound, "NotFound", dispenser.ReasonPoolNotFound)
	st, body = h.do("GET", "/v1/pools/p1/claims:export", "", nil)
	h.refusal(st, body, http.StatusUnauthorized, "Unauthenticated", auth.ReasonUnauthenticated)
	st, body = h.do("GET", "/v1/pools/p1/claims:export?include_codes=true", h.auditor, nil)
	h.refusal(st, body, http.StatusForbidden, "PermissionDenied", auth.ReasonPermissionDenied)
	st, body = h.do("POST", "/v1/pools/p1/codes:generate", h.admin, map[string]any{"count": 5, "pattern": "##"})
	h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
	require.Equal(t, "pattern", fieldOf(body))
	st, body = h.do("POST", "/v1/pools/nope/codes:generate", h.admin, map[string]any{"count": 5, "pattern": "SALE-####-####-####"})
	h.refusal(st, body, http.StatusNotFound, "NotFound", dispenser.ReasonPoolNotFound)
	st, body = h.do("GET", "/v1/pools/p1/claims:export?include_codes=maybe", h.admin, nil)
	h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)

	// A stream that succeeds is unchanged: one JSON object per line.
	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "u", "request_id": "r"})
	require.Equal(t, http.StatusOK, st, "%v", body)
	req, err := http.NewRequest("GET", h.base+"/v1/pools/p1/claims:export", nil)
	require.NoError(t, err)
	st, raw := h.send(req, h.admin)
	require.Equal(t, http.StatusOK, st, "%s", raw)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	require.Len(t, lines, 1, "%s", raw)
	var chunk struct {
		Result struct {
			Claims []map[string]any `json:"claims"`
		} `json:"result"`
	}
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &chunk))
	require.Len(t, chunk.Result.Claims, 1)
	require.Equal(t, "r", chunk.Result.Claims[0]["request_id"])
}

// The OpenAPI document describes the error body every operation answers
// with, field for field, and its reason is the ErrorReason enum, whose
// values are exactly the reasons the server sends (each Reason constant of
// the dispenser and auth packages), so a client generated from the
// document or the protos can switch on reason.
func TestHTTPErrorBodyIsDocumented(t *testing.T) {
	h := startHTTP(t, nil)
	h.pool("p1", 1, nil)
	var doc struct {
		Paths map[string]map[string]struct {
			Responses map[string]struct {
				Schema struct {
					Ref string `json:"$ref"`
				} `json:"schema"`
			} `json:"responses"`
		} `json:"paths"`
		Definitions map[string]struct {
			Properties map[string]struct {
				Ref string `json:"$ref"`
			} `json:"properties"`
			Enum []string `json:"enum"`
		} `json:"definitions"`
	}
	require.NoError(t, json.Unmarshal(openapi.JSON, &doc))
	for path, ops := range doc.Paths {
		for method, op := range ops {
			require.Equal(t, "#/definitions/ErrorBody", op.Responses["default"].Schema.Ref, "%s %s", method, path)
		}
	}
	documented := doc.Definitions["ErrorBody"].Properties
	require.NotEmpty(t, documented)
	require.NotContains(t, doc.Definitions, "Status", "google.rpc.Status is not what an error answer is")

	// The answers: a route the API lacks, bad input, no key, a refused claim.
	st, body := h.do("GET", "/v1/nowhere", h.admin, nil)
	require.Equal(t, http.StatusNotFound, st)
	answers := []map[string]any{body}
	_, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "u1"})
	answers = append(answers, body)
	_, body = h.do("GET", "/v1/pools/p1", "", nil)
	answers = append(answers, body)
	_, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "u1", "request_id": "r1"})
	require.Contains(t, body, "claim")
	_, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "u2", "request_id": "r2"})
	answers = append(answers, body)
	for _, a := range answers {
		require.Len(t, a, len(documented), "%v", a)
		for field := range a {
			require.Contains(t, documented, field, "%v", a)
		}
		require.Contains(t, doc.Definitions["ErrorReason"].Enum, a["reason"], "%v", a)
	}
	require.Equal(t, "#/definitions/ErrorReason", documented["reason"].Ref)

	var sent []string
	for _, file := range []string{"errors.go", "../auth/authorizer.go"} {
		src, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		require.NoError(t, err)
		for _, decl := range src.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok != token.CONST {
				continue
			}
			for _, spec := range gen.Specs {
				for i, name := range spec.(*ast.ValueSpec).Names {
					lit, ok := spec.(*ast.ValueSpec).Values[i].(*ast.BasicLit)
					if !strings.HasPrefix(name.Name, "Reason") || !ok {
						continue
					}
					reason, err := strconv.Unquote(lit.Value)
					require.NoError(t, err)
					sent = append(sent, reason)
				}
			}
		}
	}
	var enum []string
	values := dispenserv1.ErrorReason(0).Descriptor().Values()
	for i := range values.Len() {
		if v := values.Get(i); v.Number() != 0 {
			enum = append(enum, string(v.Name()))
		}
	}
	require.ElementsMatch(t, sent, enum, "the Reason constants and dispenser.v1.ErrorReason")
	require.ElementsMatch(t, append(enum, "ERROR_REASON_UNSPECIFIED"), doc.Definitions["ErrorReason"].Enum)
}

// A streaming call that fails after its first line ends with a last line
// {"error": ErrorBody}, and the OpenAPI document says so: every
// server-streaming method's line is {result, error} with the API's error
// body, not the generator's google.rpc.Status. The failure is a real one: a
// generation of codes past the deadline its caller set (Grpc-Timeout) after
// its first progress line, which then lands nothing.
func TestHTTPStreamEndsWithErrorLine(t *testing.T) {
	h := startHTTP(t, nil)
	h.pool("gen", 1, nil)
	type schema struct {
		Ref        string `json:"$ref"`
		Properties map[string]struct {
			Ref string `json:"$ref"`
		} `json:"properties"`
	}
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
			Responses   map[string]struct {
				Schema schema `json:"schema"`
			} `json:"responses"`
		} `json:"paths"`
		Definitions map[string]schema `json:"definitions"`
	}
	require.NoError(t, json.Unmarshal(openapi.JSON, &doc))
	lines := map[string]schema{}
	for _, ops := range doc.Paths {
		for _, op := range ops {
			ref := op.Responses["200"].Schema.Ref
			lines[op.OperationID] = doc.Definitions[strings.TrimPrefix(ref, "#/definitions/")]
		}
	}
	streams := 0
	for _, svc := range []protoreflect.ServiceDescriptor{
		dispenserv1.File_dispenser_v1_admin_service_proto.Services().Get(0),
		dispenserv1.File_dispenser_v1_claim_service_proto.Services().Get(0),
		dispenserv1.File_dispenser_v1_prize_service_proto.Services().Get(0),
	} {
		for i := range svc.Methods().Len() {
			m := svc.Methods().Get(i)
			if !m.IsStreamingServer() {
				continue
			}
			streams++
			line, ok := lines[string(svc.Name())+"_"+string(m.Name())]
			require.True(t, ok, "%s has an operation", m.FullName())
			require.Len(t, line.Properties, 2, "%s: a line is {result, error}", m.FullName())
			require.Equal(t, "#/definitions/"+string(m.Output().Name()), line.Properties["result"].Ref, "%s", m.FullName())
			require.Equal(t, "#/definitions/ErrorBody", line.Properties["error"].Ref, "%s", m.FullName())
		}
	}
	require.Equal(t, 2, streams, "ExportClaims and GenerateCodes")

	body, err := json.Marshal(map[string]any{"count": 3_000_000, "pattern": "SALE-####-####-####"})
	require.NoError(t, err)
	req, err := http.NewRequest("POST", h.base+"/v1/pools/gen/codes:generate", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Grpc-Timeout", "1S")
	resp, raw := h.exchange(req, h.admin)
	require.Equal(t, http.StatusOK, resp.StatusCode, "the stream began: %s", raw)
	got := strings.Split(strings.TrimSpace(string(raw)), "\n")
	require.GreaterOrEqual(t, len(got), 2, "a progress line, then the error: %s", raw)
	var first struct {
		Result struct {
			Drawn string `json:"drawn"`
		} `json:"result"`
	}
	require.NoError(t, json.Unmarshal([]byte(got[0]), &first))
	require.NotEmpty(t, first.Result.Drawn, "%s", got[0])
	var last map[string]map[string]any
	require.NoError(t, json.Unmarshal([]byte(got[len(got)-1]), &last))
	require.Len(t, last, 1, "%s", got[len(got)-1])
	errBody, ok := last["error"]
	require.True(t, ok, "the last line is the error: %s", got[len(got)-1])
	documented := doc.Definitions["ErrorBody"].Properties
	for field := range errBody {
		require.Contains(t, documented, field, "%v", errBody)
	}
	require.Equal(t, "DeadlineExceeded", errBody["status"], "%v", errBody)
	require.EqualValues(t, 4, errBody["code"], "%v", errBody)
	require.NotEmpty(t, errBody["message"], "%v", errBody)
	for _, l := range got[1 : len(got)-1] {
		require.NotContains(t, l, `"error"`, "only the last line is an error")
	}

	st, stats := h.do("GET", "/v1/pools/gen/stats", h.admin, nil)
	require.Equal(t, http.StatusOK, st, "%v", stats)
	require.Equal(t, "1", stats["stats"].(map[string]any)["imported"], "the cut generation landed nothing")
}

// A query parameter the route does not take is refused naming it, as an
// unknown field of a body is, on every kind of route: one whose request has
// query fields, one whose fields all come from the path, one whose body is
// the whole request, and the raw import upload. Nothing is done first.
func TestHTTPQueryParametersRouteTakes(t *testing.T) {
	h := startHTTP(t, nil)
	h.pool("p1", 3, nil)
	for _, c := range []struct{ method, path, key, field string }{
		{"GET", "/v1/pools?page_sise=1", h.admin, "page_sise"},
		{"GET", "/v1/pools?page_size=1&zz=1&aa=1", h.admin, "aa"},
		{"GET", "/v1/pools?a%20b=1", h.admin, "query"},
		{"GET", "/v1/pools?%zz=1", h.admin, "query"},
		{"GET", "/v1/pools?page_size=1;page_token=x", h.admin, "query"},
		{"GET", "/v1/pools/p1/stats?a=%zz", h.admin, "query"},
		{"GET", "/v1/pools?" + strings.Repeat("x", 100) + "=1", h.admin, "query"},
		{"GET", "/v1/pools/p1/claims/r1?pool_id=p2", h.claimer, "pool_id"},
		{"GET", "/v1/pools/p1/claims/r1?user=u1", h.claimer, "user"},
		{"GET", "/v1/pools/p1/users/u1/claims?limit=5", h.claimer, "limit"},
		{"GET", "/v1/pools/p1/stats?verbose=true", h.admin, "verbose"},
		{"GET", "/v1/pools/p1/claims:export?include_code=true", h.admin, "include_code"},
		{"GET", "/v1/pools/p1/prizes?status=PRIZE_STATE_READY", h.admin, "status"},
		{"POST", "/v1/pools/p1/claims?user_id=u9", h.claimer, "user_id"},
		{"PATCH", "/v1/pools/p1?pool.paused=true&update_mask=paused", h.admin, "pool.paused"},
	} {
		var body any
		if c.method != "GET" {
			body = map[string]any{"user_id": "u1", "request_id": "r1", "display_name": "Renamed"}
		}
		st, got := h.do(c.method, c.path, c.key, body)
		h.refusal(st, got, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
		require.Equal(t, c.field, fieldOf(got), "%s %s: %v", c.method, c.path, got)
		require.NotContains(t, fmt.Sprint(got), strings.Repeat("x", 65), "a malformed name is not echoed")
	}
	st, body := h.do("POST", "/v1/pools/p1/imports?formt=csv", h.admin, "code\nQQ-01\n")
	h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
	require.Equal(t, "formt", fieldOf(body))
	// Every route of the OpenAPI document is covered.
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(openapi.JSON, &doc))
	pathParam := regexp.MustCompile(`\{[^}]+\}`)
	for path, methods := range doc.Paths {
		for method := range methods {
			url := pathParam.ReplaceAllString(path, "p1") + "?zz_unknown=1"
			st, body = h.do(strings.ToUpper(method), url, h.admin, map[string]any{})
			h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
			require.Equal(t, "zz_unknown", fieldOf(body), "%s %s: %v", method, url, body)
		}
	}

	// None of the refused calls did anything.
	st, body = h.do("GET", "/v1/pools/p1/stats", h.admin, nil)
	require.Equal(t, http.StatusOK, st, "%v", body)
	stats := body["stats"].(map[string]any)
	require.Equal(t, "3", stats["imported"], "%v", stats)
	require.Equal(t, "0", stats["claimed"], "%v", stats)
	st, body = h.do("GET", "/v1/pools/p1", h.admin, nil)
	require.Equal(t, http.StatusOK, st, "%v", body)
	require.NotEqual(t, "Renamed", body["pool"].(map[string]any)["display_name"])

	// What each route takes still works, by proto or JSON name.
	for _, path := range []string{"/v1/pools?page_size=1", "/v1/pools?pageSize=1&page_token=",
		"/v1/pools/p1/prizes?state=PRIZE_STATE_READY&page_size=5"} {
		st, body = h.do("GET", path, h.admin, nil)
		require.Equal(t, http.StatusOK, st, "%s: %v", path, body)
	}
	st, body = h.do("PATCH", "/v1/pools/p1?update_mask=display_name", h.admin, map[string]any{"display_name": "Renamed"})
	require.Equal(t, http.StatusOK, st, "%v", body)
	require.Equal(t, "Renamed", body["pool"].(map[string]any)["display_name"])
	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"user_id": "u1", "request_id": "r1"})
	require.Equal(t, http.StatusOK, st, "%v", body)
	st, body = h.do("GET", "/v1/pools/p1/claims/r1?user_id=u1", h.claimer, nil)
	require.Equal(t, http.StatusOK, st, "%v", body)
	st, body = h.do("POST", "/v1/pools/p1/imports?format=csv&strict=true&source_name=more", h.admin, "code\nQQ-01\n")
	require.Equal(t, http.StatusOK, st, "%v", body)
	require.Equal(t, "1", body["inserted"], "%v", body)
}

// A method a path does not take is answered 405 with the Allow header
// naming the ones it does (RFC 9110), and the API's error body.
func TestHTTPMethodNotAllowedSaysWhatIs(t *testing.T) {
	h := startHTTP(t, nil)
	for _, c := range []struct{ method, path, allow string }{
		{"DELETE", "/v1/pools/p1", "GET, HEAD, PATCH"},
		{"PUT", "/v1/pools", "GET, HEAD, POST"},
		{"GET", "/v1/pools/p1/claims", "POST"},
		{"DELETE", "/v1/pools/p1/claims/cart%2F77", "GET, HEAD"},
		{"GET", "/v1/pools/p1/reservations/r1:confirm", "POST"},
		{"GET", "/v1/pools/p1/imports", "POST"},
		{"POST", "/openapi.json", "GET, HEAD"},
		{"HEAD", "/v1/pools/p1/claims", "POST"},
	} {
		req, err := http.NewRequest(c.method, h.base+c.path, nil)
		require.NoError(t, err)
		resp, raw := h.exchange(req, h.admin)
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "%s %s: %s", c.method, c.path, raw)
		require.Equal(t, c.allow, resp.Header.Get("Allow"), "%s %s", c.method, c.path)
		if c.method == "HEAD" {
			require.Empty(t, raw, "a HEAD answer has no body")
			continue
		}
		var body map[string]any
		require.NoError(t, json.Unmarshal(raw, &body))
		h.refusal(resp.StatusCode, body, http.StatusMethodNotAllowed, "Unimplemented", dispenser.ReasonNoSuchRoute)
	}
}

// Every route whose body may repeat a field of its path refuses a body
// that names another value, naming the field, instead of deciding the call
// by the URL's (grpc-gateway takes the path's value without a word); the
// routes come from the OpenAPI document, so a new one is covered.
func TestHTTPBodyMustAgreeWithPath(t *testing.T) {
	h := startHTTP(t, nil)
	h.pool("p1", 2, nil)
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(openapi.JSON, &doc))
	pathParam := regexp.MustCompile(`\{([^}]+)\}`)
	tried := 0
	for path, methods := range doc.Paths {
		params := pathParam.FindAllStringSubmatch(path, -1)
		for method := range methods {
			method = strings.ToUpper(method)
			if method == "GET" || len(params) == 0 || strings.HasSuffix(path, "/imports") {
				continue // no body, no path field, or the body is a file
			}
			url := pathParam.ReplaceAllString(path, "p1")
			for _, p := range params {
				field := p[1]
				key := field[strings.LastIndexByte(field, '.')+1:] // pool.id: the body is the pool
				for _, body := range []any{map[string]any{key: "elsewhere"}, `{"` + jsonName(key) + `": "elsewhere"}`} {
					st, got := h.do(method, url, h.admin, body)
					h.refusal(st, got, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
					require.Equal(t, field, fieldOf(got), "%s %s %v: %v", method, url, body, got)
					tried++
				}
			}
		}
	}
	require.GreaterOrEqual(t, tried, 2*14, "every such route was tried")
	// Nothing was claimed or changed, and the same value in both is answered.
	st, body := h.do("GET", "/v1/pools/p1/stats", h.admin, nil)
	require.Equal(t, http.StatusOK, st, "%v", body)
	require.Equal(t, "0", body["stats"].(map[string]any)["claimed"], "%v", body)
	st, body = h.do("POST", "/v1/pools/p1/claims", h.claimer, map[string]any{"pool_id": "p1", "user_id": "u1", "request_id": "r1"})
	require.Equal(t, http.StatusOK, st, "%v", body)
	st, body = h.do("PATCH", "/v1/pools/p1?update_mask=display_name", h.admin, map[string]any{"id": "p1", "display_name": "Same"})
	require.Equal(t, http.StatusOK, st, "%v", body)
}

// jsonName is protojson's JSON name of a proto field name (pool_id: poolId).
func jsonName(name string) string {
	parts := strings.Split(name, "_")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}

// HEAD is GET without the body (RFC 9110): the same status and headers,
// no body, on every route GET takes.
func TestHTTPHeadIsGetWithoutBody(t *testing.T) {
	h := startHTTP(t, nil)
	h.pool("p1", 1, nil)
	for _, c := range []struct {
		path, key string
		status    int
	}{
		{"/v1/pools/p1", h.admin, http.StatusOK},
		{"/v1/pools/nope", h.admin, http.StatusNotFound},
		{"/v1/pools/p1", "", http.StatusUnauthorized},
		{"/v1/pools/p1/stats", h.admin, http.StatusOK},
		{"/v1/health", h.admin, http.StatusOK},
		{"/openapi.json", "", http.StatusOK},
		{"/v1/pools?page_sise=1", h.admin, http.StatusBadRequest},
	} {
		get, err := http.NewRequest("GET", h.base+c.path, nil)
		require.NoError(t, err)
		getStatus, getBody := h.send(get, c.key)
		require.Equal(t, c.status, getStatus, "GET %s: %s", c.path, getBody)
		require.NotEmpty(t, getBody)

		req, err := http.NewRequest("HEAD", h.base+c.path, nil)
		require.NoError(t, err)
		resp, raw := h.exchange(req, c.key)
		require.Equal(t, c.status, resp.StatusCode, "HEAD %s", c.path)
		require.Empty(t, raw, "HEAD %s", c.path)
		require.Contains(t, resp.Header.Get("Content-Type"), "application/json", "HEAD %s", c.path)
	}
}

// Import as an upload: CSV, strict, limits; the admin calls over HTTP.
func TestHTTPAdminCalls(t *testing.T) {
	h := startHTTP(t, func(c *dispenser.Config) { c.MaxImportBytes = 4096 })
	st, body := h.do("POST", "/v1/pools", h.admin, map[string]any{"id": "p1", "display_name": "Summer", "refill_batch_size": 10})
	require.Equal(t, http.StatusOK, st, "%v", body)
	st, body = h.do("POST", "/v1/pools", h.admin, map[string]any{"id": "p1"})
	h.refusal(st, body, http.StatusConflict, "AlreadyExists", dispenser.ReasonPoolExists)
	st, body = h.do("POST", "/v1/pools", h.admin, map[string]any{"id": "Bad Id!"})
	h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
	st, body = h.do("GET", "/v1/pools/p1", h.admin, nil)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "Summer", body["pool"].(map[string]any)["display_name"])

	st, body = h.do("POST", "/v1/pools/p1/imports?format=csv", h.admin, "code\nAA-01\nAA-02\n\"AA-03\"\n")
	require.Equal(t, http.StatusOK, st, "%v", body)
	require.Equal(t, "3", body["inserted"], "%v", body)
	st, body = h.do("POST", "/v1/pools/p1/imports?strict=true", h.admin, "B-1\nbad line with spaces\n")
	h.refusal(st, body, http.StatusUnprocessableEntity, "InvalidArgument", dispenser.ReasonImportRejected)
	require.NotContains(t, fmt.Sprint(body), "bad line", "invalid lines are named by number, never by text")
	st, body = h.do("POST", "/v1/pools/p1/imports?format=xml", h.admin, "x\n")
	h.refusal(st, body, http.StatusBadRequest, "InvalidArgument", dispenser.ReasonInvalidArgument)
	st, body = h.do("POST", "/v1/pools/p1/imports", h.admin, strings.Repeat("C-123456789\n", 500))
	require.Equal(t, http.StatusRequestEntityTooLarge, st, "%v", body)
	st, body = h.do("POST", "/v1/pools/p1/claims", h.admin, strings.Repeat(" ", 2<<20))
	require.Equal(t, http.StatusRequestEntityTooLarge, st, "%v", body)
	// The same sent without its length (chunked), which is found out only
	// by reading it: on a route whose path the body may repeat, and on one
	// whose body the gateway's decoder reads first.
	for _, path := range []string{"/v1/pools/p1/claims", "/v1/pools", "/v1/pools/p1/codes:void"} {
		req, err := http.NewRequest("POST", h.base+path, io.NopCloser(io.MultiReader(strings.NewReader(`{"id": "`),
			strings.NewReader(strings.Repeat("x", 2<<20)), strings.NewReader(`"}`))))
		require.NoError(t, err)
		req.ContentLength = -1
		st, raw := h.send(req, h.admin)
		require.NoError(t, json.Unmarshal(raw, &body), "%s", raw)
		h.refusal(st, body, http.StatusRequestEntityTooLarge, "InvalidArgument", dispenser.ReasonInvalidArgument)
		require.Equal(t, "body", fieldOf(body), "%s", path)
		require.Equal(t, "body: larger than 1048576 bytes", body["message"], "%s", path)
	}
	st, body = h.do("GET", "/v1/pools/p1/stats", h.admin, nil)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "3", body["stats"].(map[string]any)["imported"], "nothing of the refused uploads landed")

	st, body = h.do("POST", "/v1/jobs:run", h.admin, map[string]any{"job": "JOB_REFILL", "pool_id": "p1"})
	require.Equal(t, http.StatusOK, st, "%v", body)
	st, body = h.do("POST", "/v1/pools/p1/prizes", h.admin, map[string]any{"user_id": "w1", "external_id": "draw-1"})
	require.Equal(t, http.StatusOK, st, "%v", body)
	prizeID := body["prize"].(map[string]any)["id"].(string)
	st, body = h.do("POST", "/v1/pools/p1/prizes", h.admin, map[string]any{"user_id": "w2", "external_id": "draw-1"})
	h.refusal(st, body, http.StatusConflict, "AlreadyExists", dispenser.ReasonPrizeConflict)
	st, body = h.do("GET", "/v1/prizes/"+prizeID, h.admin, nil)
	require.Equal(t, http.StatusOK, st, "%v", body)
	st, body = h.do("GET", "/v1/prizes/999999", h.admin, nil)
	h.refusal(st, body, http.StatusNotFound, "NotFound", dispenser.ReasonPrizeNotFound)
	st, body = h.do("GET", "/v1/nothing/here", h.admin, nil)
	require.Equal(t, http.StatusNotFound, st, "%v", body)
}

// The OpenAPI document is served (proto/openapi's test checks it is current).
func TestOpenAPIServed(t *testing.T) {
	h := startHTTP(t, nil)
	st, body := h.do("GET", "/openapi.json", "", nil)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "2.0", body["swagger"])
	paths := body["paths"].(map[string]any)
	for _, p := range []string{"/v1/pools/{pool_id}/claims", "/v1/pools/{pool_id}/claims/{request_id}", "/v1/pools", "/v1/pools/{pool_id}/stats"} {
		require.Contains(t, paths, p)
	}
	raw, err := json.Marshal(body)
	require.NoError(t, err)
	var want map[string]any
	require.NoError(t, json.Unmarshal(openapi.JSON, &want))
	wantRaw, err := json.Marshal(want)
	require.NoError(t, err)
	require.JSONEq(t, string(wantRaw), string(raw))
}

// example is a fenced block of docs/CLIENTS.md marked "<lang> example".
type example struct{ lang, code string }

func clientExamples(t *testing.T) []example {
	t.Helper()
	doc, err := os.ReadFile("../docs/CLIENTS.md")
	require.NoError(t, err)
	var out []example
	var cur *example
	var b strings.Builder
	for line := range strings.SplitSeq(string(doc), "\n") {
		switch {
		case cur == nil && strings.HasPrefix(line, "```") && strings.HasSuffix(line, " example"):
			cur = &example{lang: strings.TrimSuffix(strings.TrimPrefix(line, "```"), " example")}
			b.Reset()
		case cur != nil && line == "```":
			cur.code = b.String()
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			b.WriteString(line + "\n")
		}
	}
	return out
}

// The examples of docs/CLIENTS.md, run as written against a live server:
// each claims a code, gets the same code back on a retry, and is refused
// a second code (USER_LIMIT_REACHED). The interpreters come from
// scripts/services.sh (make test), which installs what is missing.
func TestClientExamples(t *testing.T) {
	h := startHTTP(t, nil)
	examples := clientExamples(t)
	langs := map[string]bool{}
	for _, ex := range examples {
		langs[ex.lang] = true
	}
	require.Equal(t, map[string]bool{"sh": true, "php": true, "python": true, "js": true}, langs)
	run := map[string][]string{"sh": {"bash"}, "php": {"php"}, "python": {"python3"}, "js": {"node"}}
	ext := map[string]string{"sh": ".sh", "php": ".php", "python": ".py", "js": ".mjs"}
	for i, ex := range examples {
		t.Run(ex.lang, func(t *testing.T) {
			poolID := fmt.Sprintf("ex-%d", i)
			h.pool(poolID, 5, map[string]any{"per_user_limit": 1})
			file := t.TempDir() + "/example" + ext[ex.lang]
			require.NoError(t, os.WriteFile(file, []byte(ex.code), 0o600))
			_, err := exec.LookPath(run[ex.lang][0])
			require.NoError(t, err, "%s is missing: scripts/services.sh installs it", run[ex.lang][0])
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, run[ex.lang][0], file)
			cmd.Env = append(os.Environ(), "DISPENSER_URL="+h.base, "DISPENSER_KEY="+h.claimer, "POOL="+poolID)
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", out)
			text := string(out)
			if ex.lang == "sh" {
				// Each call prints its JSON body, then "HTTP <status>".
				var bodies []map[string]any
				var statuses []string
				for line := range strings.SplitSeq(strings.TrimSpace(text), "\n") {
					if s, ok := strings.CutPrefix(line, "HTTP "); ok {
						statuses = append(statuses, s)
						continue
					}
					var b map[string]any
					require.NoError(t, json.Unmarshal([]byte(line), &b), text)
					bodies = append(bodies, b)
				}
				require.Equal(t, []string{"200", "200", "409"}, statuses, text)
				require.Len(t, bodies, 3, text)
				first, second := bodies[0]["claim"].(map[string]any), bodies[1]["claim"].(map[string]any)
				require.Equal(t, first["code"], second["code"])
				require.Equal(t, false, bodies[0]["replayed"])
				require.Equal(t, true, bodies[1]["replayed"])
				require.Equal(t, "USER_LIMIT_REACHED", bodies[2]["reason"])
				return
			}
			lines := strings.Split(strings.TrimSpace(text), "\n")
			require.Len(t, lines, 3, text)
			code, ok := strings.CutPrefix(lines[0], "claimed: ")
			require.True(t, ok, text)
			require.Contains(t, code, poolID+"-HTTP-")
			require.Equal(t, "replayed: "+code, lines[1])
			require.True(t, strings.HasPrefix(lines[2], "refused: USER_LIMIT_REACHED"), text)
		})
	}
}
