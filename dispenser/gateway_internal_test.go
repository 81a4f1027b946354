package dispenser

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/internal/rpcerr"
)

// Every reason the service sends, with the gRPC code it is sent with, has
// the HTTP status docs/CLIENTS.md lists.
func TestHTTPStatusOfEveryReason(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		code   codes.Code
		reason string
		want   int
	}{
		{codes.ResourceExhausted, ReasonPoolExhausted, http.StatusConflict},
		{codes.FailedPrecondition, ReasonUserLimit, http.StatusConflict},
		{codes.FailedPrecondition, ReasonPoolPaused, http.StatusConflict},
		{codes.FailedPrecondition, ReasonPoolClosed, http.StatusConflict},
		{codes.AlreadyExists, ReasonRequestReused, http.StatusConflict},
		{codes.FailedPrecondition, ReasonHoldLimit, http.StatusConflict},
		{codes.FailedPrecondition, ReasonReservationPending, http.StatusConflict},
		{codes.FailedPrecondition, ReasonReservationConfirmed, http.StatusConflict},
		{codes.FailedPrecondition, ReasonNotAReservation, http.StatusConflict},
		{codes.FailedPrecondition, ReasonReservationExpired, http.StatusGone},
		{codes.FailedPrecondition, ReasonReservationCancelled, http.StatusGone},
		{codes.NotFound, ReasonReservationNotFound, http.StatusNotFound},
		{codes.NotFound, ReasonPoolNotFound, http.StatusNotFound},
		{codes.NotFound, ReasonClaimNotFound, http.StatusNotFound},
		{codes.NotFound, ReasonPrizeNotFound, http.StatusNotFound},
		{codes.NotFound, ReasonKeyNotFound, http.StatusNotFound},
		{codes.AlreadyExists, ReasonPoolExists, http.StatusConflict},
		{codes.AlreadyExists, ReasonPrizeConflict, http.StatusConflict},
		{codes.FailedPrecondition, ReasonPrizeState, http.StatusConflict},
		{codes.Aborted, ReasonJobBusy, http.StatusConflict},
		{codes.InvalidArgument, ReasonInvalidArgument, http.StatusBadRequest},
		{codes.InvalidArgument, ReasonImportRejected, http.StatusUnprocessableEntity},
		{codes.ResourceExhausted, ReasonImportTooLarge, http.StatusRequestEntityTooLarge},
		{codes.Unavailable, ReasonStoreUnavailable, http.StatusServiceUnavailable},
		{codes.Unavailable, ReasonShuttingDown, http.StatusServiceUnavailable},
		{codes.Internal, ReasonInternal, http.StatusInternalServerError},
		{codes.Unauthenticated, auth.ReasonUnauthenticated, http.StatusUnauthorized},
		{codes.PermissionDenied, auth.ReasonPermissionDenied, http.StatusForbidden},
		{codes.ResourceExhausted, auth.ReasonRateLimited, http.StatusTooManyRequests},
		{codes.Unavailable, auth.ReasonRateLimited, http.StatusTooManyRequests},
	} {
		require.Equal(t, c.want, HTTPStatus(rpcerr.Info(c.code, "m", c.reason)), c.reason)
	}
	// No reason: the gRPC code decides.
	require.Equal(t, http.StatusServiceUnavailable, HTTPStatus(status.Error(codes.Unavailable, "x")))
	require.Equal(t, http.StatusGatewayTimeout, HTTPStatus(status.Error(codes.DeadlineExceeded, "x")))
}

// A path grpc-gateway cannot read is refused as invalid input naming
// "path"; one no route has, and a method its path lacks, as NO_SUCH_ROUTE.
func TestRoutingErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		status       int
		code, reason string
	}{
		{http.StatusBadRequest, "InvalidArgument", ReasonInvalidArgument},
		{http.StatusNotFound, "NotFound", ReasonNoSuchRoute},
		{http.StatusMethodNotAllowed, "Unimplemented", ReasonNoSuchRoute},
	} {
		rec := httptest.NewRecorder()
		routingError(context.Background(), runtime.NewServeMux(), &runtime.JSONPb{}, rec,
			httptest.NewRequest(http.MethodGet, "/v1/pools/x", nil), c.status)
		require.Equal(t, c.status, rec.Code)
		var body struct {
			Code    int32
			Details []map[string]any
		}
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body), rec.Body.String())
		require.Equal(t, c.code, codes.Code(body.Code).String())
		var reason, field string
		for _, d := range body.Details {
			if r, ok := d["reason"].(string); ok {
				reason = r
				if md, ok := d["metadata"].(map[string]any); ok {
					field, _ = md["field"].(string)
				}
			}
		}
		require.Equal(t, c.reason, reason, rec.Body.String())
		if c.status == http.StatusBadRequest {
			require.Equal(t, "path", field, rec.Body.String())
		}
	}
}

// fieldAt names the field a position of a JSON body falls in: a key, a
// scalar, an object or an array that is a field's value, through nesting
// and arrays; nothing outside the body or past where it can be read.
func TestFieldAt(t *testing.T) {
	raw := []byte(`{"pool": {"a": [1, {"b": "x"}], "c": "BAD", "d": {"e": 2}}, "f": [true]}`)
	at := func(s string) int { return bytes.Index(raw, []byte(s)) }
	for _, c := range []struct {
		at   int
		want string
	}{
		{at(`"BAD"`), "pool.c"},
		{at(`"c"`), "pool.c"},
		{at(`"x"`), "pool.a.b"},
		{at(`[1`), "pool.a"},
		{at(`1,`), "pool.a"},
		{at(`{"e"`), "pool.d"},
		{at(`2}`), "pool.d.e"},
		{at(`true`), "f"},
		{at(`{"a"`), "pool"},
		{0, ""},
		{-1, ""},
		{len(raw), ""},
	} {
		require.Equal(t, c.want, fieldAt(raw, c.at), "at %d", c.at)
	}
	require.Equal(t, "", fieldAt([]byte(`{"a": ]`), 6), "unreadable before the position")
	// Lines and columns as protojson counts them: characters, not bytes.
	text := []byte("{\n \"é\": 1,\n  \"b\": x}")
	require.Equal(t, bytes.Index(text, []byte("x")), offsetOf(text, 3, 8))
	require.Equal(t, bytes.Index(text, []byte("1")), offsetOf(text, 2, 7))
	require.Equal(t, -1, offsetOf(text, 9, 1))
}

func TestLoneSurrogate(t *testing.T) {
	for raw, want := range map[string]int{
		`{"a": "x\ud800"}`:                     8,
		`{"a": "\ud83d\ude00", "b": "\udc00"}`: 28,
		`{"a": "\ud83d\ude00\ud83d"}`:          19,
		`{"a": "\\ud800", "b": "é\n\""}`:       -1,
		`{"\ud800": 1}`:                        2,
		`{"a": "\ud800\u0041"}`:                7,
		`{"a": "\u00e9\ud83d\ude00"}`:          -1,
		`{"a": "\ud8`:                          -1,
	} {
		require.Equal(t, want, loneSurrogate([]byte(raw)), raw)
	}
}

// The body/path agreement each route checks is read from the HTTP rules:
// a body that is the request repeats its path fields, a body that is one
// field repeats the path fields under it; a rule whose path field sits
// deeper in the body than the check reads fails startup.
func TestRouteTableFromRules(t *testing.T) {
	routes, err := apiRoutes()
	require.NoError(t, err)
	for key, want := range map[string][]pathField{
		"POST /v1/pools/{pool_id=*}/claims":                             {{"pool_id", "pool_id"}},
		"POST /v1/pools/{pool_id=*}/reservations/{request_id=*}:cancel": {{"pool_id", "pool_id"}, {"request_id", "request_id"}},
		"POST /v1/pools/{pool_id=*}/prizes":                             {{"pool_id", "pool_id"}},
		"POST /v1/prizes/{prize_id=*}:ready":                            {{"prize_id", "prize_id"}},
		"PATCH /v1/pools/{pool.id=*}":                                   {{"pool.id", "id"}},
		"POST /v1/keys/{key_id=*}:revoke":                               {{"key_id", "key_id"}},
		"GET /v1/pools/{pool_id=*}/claims/{request_id=*}":               nil,
		"POST /v1/pools":                                                nil,
		"POST /v1/pools/{pool_id=*}/imports":                            nil,
	} {
		route, ok := routes[key]
		require.True(t, ok, "%s is in the table", key)
		require.Equal(t, want, route.agree, key)
	}

	routes, err = apiRoutesFrom([]byte(`http:
  rules:
    - selector: dispenser.v1.AdminService.UpdatePool
      patch: /v1/pools/{pool.id}
      body: pool
      additional_bindings:
        - post: /v1/pools/{pool.id}:update
          body: "*"
`))
	require.Error(t, err, "pool.id under a body that is the request is deeper than the check reads")
	require.Nil(t, routes)
	routes, err = apiRoutesFrom([]byte(`http:
  rules:
    - selector: dispenser.v1.ClaimService.GetClaim
      get: /v1/pools/{pool_id}/claims/{request_id}
      additional_bindings:
        - post: /v1/claims/{request_id}:get
          body: "*"
`))
	require.NoError(t, err)
	require.Equal(t, []pathField{{"request_id", "request_id"}}, routes["POST /v1/claims/{request_id=*}:get"].agree)
}
