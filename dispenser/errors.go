package dispenser

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/internal/input"
	"github.com/dispenserhq/dispenser/internal/pgerr"
	"github.com/dispenserhq/dispenser/internal/rpcerr"
	"github.com/dispenserhq/dispenser/jobs"
	"github.com/dispenserhq/dispenser/pool"
	"github.com/dispenserhq/dispenser/prize"
)

// ErrorDomain is the domain of every google.rpc.ErrorInfo this service sends.
const ErrorDomain = rpcerr.Domain

// Reasons carried in google.rpc.ErrorInfo. They are part of the API: callers
// switch on them, so they never change meaning. Each is a value of the
// dispenser.v1.ErrorReason enum (proto/dispenser/v1/error.proto), and a
// test keeps the two lists equal.
const (
	ReasonInvalidArgument      = "INVALID_ARGUMENT"
	ReasonPoolNotFound         = "POOL_NOT_FOUND"
	ReasonPoolExists           = "POOL_ALREADY_EXISTS"
	ReasonImportRejected       = "IMPORT_REJECTED"
	ReasonStoreUnavailable     = auth.ReasonStoreUnavailable
	ReasonPoolExhausted        = "POOL_EXHAUSTED"
	ReasonPoolPaused           = "POOL_PAUSED"
	ReasonPoolClosed           = "POOL_CLOSED"
	ReasonUserLimit            = "USER_LIMIT_REACHED"
	ReasonClaimNotFound        = "CLAIM_NOT_FOUND"
	ReasonRequestReused        = "REQUEST_ID_REUSED"
	ReasonJobBusy              = "JOB_BUSY"
	ReasonShuttingDown         = "SHUTTING_DOWN"
	ReasonPrizeNotFound        = "PRIZE_NOT_FOUND"
	ReasonPrizeConflict        = "PRIZE_CONFLICT"
	ReasonPrizeState           = "PRIZE_STATE"
	ReasonInternal             = "INTERNAL"
	ReasonHoldLimit            = "HOLD_LIMIT_REACHED"
	ReasonReservationPending   = "RESERVATION_PENDING"
	ReasonReservationExpired   = "RESERVATION_EXPIRED"
	ReasonReservationCancelled = "RESERVATION_CANCELLED"
	ReasonReservationConfirmed = "RESERVATION_CONFIRMED"
	ReasonReservationNotFound  = "RESERVATION_NOT_FOUND"
	ReasonNotAReservation      = "NOT_A_RESERVATION"
	ReasonKeyNotFound          = "KEY_NOT_FOUND"
	ReasonImportTooLarge       = "IMPORT_TOO_LARGE"
	// ReasonNoSuchRoute: over HTTP, no route of the API has the request's
	// path (404), or none of its method (405); over gRPC, the server has no
	// such service or method (Unimplemented).
	ReasonNoSuchRoute = "NO_SUCH_ROUTE"
)

// statusError is the one place that turns domain errors into gRPC statuses a
// caller can act on. Messages never contain a code: domain errors are built
// without them, and anything unknown becomes a bare Internal whose cause is
// logged here (driver errors carry no values in their Error text).
func statusError(ctx context.Context, log *slog.Logger, err error) error {
	var fe *input.FieldError
	var he *pool.HeaderError
	var rej *pool.ImportRejectedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return invalidArgument(fe.Field, fe.Description)
	case errors.Is(err, prize.ErrNotFound):
		return rpcerr.Info(codes.NotFound, "prize not found", ReasonPrizeNotFound)
	case errors.Is(err, prize.ErrConflict):
		return rpcerr.Info(codes.AlreadyExists, "this external_id is recorded with other fields", ReasonPrizeConflict)
	case errors.Is(err, prize.ErrState):
		return rpcerr.Info(codes.FailedPrecondition, err.Error(), ReasonPrizeState)
	case errors.Is(err, claim.ErrPoolExhausted):
		return rpcerr.Info(codes.ResourceExhausted, "the pool has no code left", ReasonPoolExhausted)
	case errors.Is(err, claim.ErrPoolPaused):
		return rpcerr.Info(codes.FailedPrecondition, "the pool is paused", ReasonPoolPaused)
	case errors.Is(err, claim.ErrPoolClosed):
		return rpcerr.Info(codes.FailedPrecondition, "the pool is outside its claim window", ReasonPoolClosed)
	case errors.Is(err, claim.ErrUserLimit):
		return rpcerr.Info(codes.FailedPrecondition, "the user holds the pool's limit of claims", ReasonUserLimit)
	case errors.Is(err, claim.ErrRequestReused):
		return rpcerr.Info(codes.AlreadyExists, "this request_id belongs to another user of the pool; use a request_id of your own",
			ReasonRequestReused)
	case errors.Is(err, claim.ErrHoldLimit):
		return rpcerr.Info(codes.FailedPrecondition, "the user has the pool's limit of open reservations", ReasonHoldLimit)
	case errors.Is(err, claim.ErrReservationPending):
		return rpcerr.Info(codes.FailedPrecondition, "this request_id is an open reservation; confirm or cancel it",
			ReasonReservationPending)
	case errors.Is(err, claim.ErrReservationExpired):
		return rpcerr.Info(codes.FailedPrecondition, "the reservation expired; its code went back to the pool",
			ReasonReservationExpired)
	case errors.Is(err, claim.ErrReservationCancelled):
		return rpcerr.Info(codes.FailedPrecondition, "the reservation was cancelled; its code went back to the pool",
			ReasonReservationCancelled)
	case errors.Is(err, claim.ErrReservationConfirmed):
		return rpcerr.Info(codes.FailedPrecondition, "the reservation is confirmed: it is a claim", ReasonReservationConfirmed)
	case errors.Is(err, claim.ErrReservationNotFound):
		return rpcerr.Info(codes.NotFound, "no reservation for this request", ReasonReservationNotFound)
	case errors.Is(err, claim.ErrNotReservation):
		return rpcerr.Info(codes.FailedPrecondition, "this request_id names a ClaimCode claim, not a reservation",
			ReasonNotAReservation)
	case errors.Is(err, claim.ErrNotFound):
		return rpcerr.Info(codes.NotFound, "no claim for this request", ReasonClaimNotFound)
	case errors.Is(err, claim.ErrStopped):
		return rpcerr.Info(codes.Unavailable, "the server is shutting down; retry with the same request_id", ReasonShuttingDown)
	case errors.Is(err, jobs.ErrBusy):
		return rpcerr.Info(codes.Aborted, "the job is running on another replica", ReasonJobBusy)
	case errors.As(err, &he):
		return invalidArgument("data", he.Error())
	case errors.As(err, &rej):
		return importRejected(rej)
	case errors.Is(err, pool.ErrPoolNotFound):
		return rpcerr.Info(codes.NotFound, "pool not found", ReasonPoolNotFound)
	case errors.Is(err, pool.ErrPoolExists):
		return rpcerr.Info(codes.AlreadyExists, "a pool with this id already exists", ReasonPoolExists)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "canceled")
	case errors.Is(err, pgerr.ErrUnavailable):
		log.WarnContext(ctx, "store unavailable", "err", err)
		return rpcerr.Retry(codes.Unavailable, "the database is unavailable; nothing was written, retry later",
			ReasonStoreUnavailable, StoreRetryDelay)
	}
	// A status raised below (e.g. by the import stream reader) passes
	// through as it was made, without the wrapping context in its message.
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Err()
	}
	log.ErrorContext(ctx, "internal error", "err", err)
	return rpcerr.Info(codes.Internal, "internal error", ReasonInternal)
}

// StoreRetryDelay is the wait a STORE_UNAVAILABLE refusal asks for, in a
// google.rpc.RetryInfo detail (over HTTP, Retry-After: 1): long enough that
// callers retrying on it do not hammer a store that is restarting or failing
// over, short enough that a claim resumes soon after it is back. A client may
// add its own backoff and jitter on top.
const StoreRetryDelay = auth.StoreRetryDelay

// invalidArgument names the bad field in the message, in an ErrorInfo and in a
// BadRequest field violation.
func invalidArgument(field, desc string) error {
	return rpcerr.New(codes.InvalidArgument, field+": "+desc,
		&errdetails.ErrorInfo{Reason: ReasonInvalidArgument, Domain: ErrorDomain, Metadata: map[string]string{"field": field}},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}}},
	)
}

// importRejected reports a strict import refused for its invalid lines: the
// first ones as BadRequest violations (line number and reason, never the text).
func importRejected(rej *pool.ImportRejectedError) error {
	s := rej.Summary
	br := &errdetails.BadRequest{}
	for _, l := range s.InvalidLines {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field: "data.line[" + itoa(l.Line) + "]", Description: l.Reason,
		})
	}
	info := &errdetails.ErrorInfo{Reason: ReasonImportRejected, Domain: ErrorDomain, Metadata: map[string]string{
		"lines": itoa(s.Lines), "invalid": itoa(s.Invalid),
	}}
	return rpcerr.New(codes.InvalidArgument, rej.Error()+"; nothing was imported", info, br)
}
