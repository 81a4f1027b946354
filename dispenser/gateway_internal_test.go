package dispenser

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dispenserhq/dispenser/auth"
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
		{codes.NotFound, "KEY_NOT_FOUND", http.StatusNotFound},
		{codes.AlreadyExists, ReasonPoolExists, http.StatusConflict},
		{codes.AlreadyExists, ReasonPrizeConflict, http.StatusConflict},
		{codes.FailedPrecondition, ReasonPrizeState, http.StatusConflict},
		{codes.Aborted, ReasonJobBusy, http.StatusConflict},
		{codes.InvalidArgument, ReasonInvalidArgument, http.StatusBadRequest},
		{codes.InvalidArgument, ReasonImportRejected, http.StatusUnprocessableEntity},
		{codes.ResourceExhausted, "IMPORT_TOO_LARGE", http.StatusRequestEntityTooLarge},
		{codes.Unavailable, ReasonStoreUnavailable, http.StatusServiceUnavailable},
		{codes.Unavailable, ReasonShuttingDown, http.StatusServiceUnavailable},
		{codes.Internal, ReasonInternal, http.StatusInternalServerError},
		{codes.Unauthenticated, auth.ReasonUnauthenticated, http.StatusUnauthorized},
		{codes.PermissionDenied, auth.ReasonPermissionDenied, http.StatusForbidden},
		{codes.ResourceExhausted, auth.ReasonRateLimited, http.StatusTooManyRequests},
		{codes.Unavailable, auth.ReasonRateLimited, http.StatusTooManyRequests},
	} {
		require.Equal(t, c.want, HTTPStatus(withInfo(c.code, "m", c.reason)), c.reason)
	}
	// No reason: the gRPC code decides.
	require.Equal(t, http.StatusServiceUnavailable, HTTPStatus(status.Error(codes.Unavailable, "x")))
	require.Equal(t, http.StatusGatewayTimeout, HTTPStatus(status.Error(codes.DeadlineExceeded, "x")))
}
