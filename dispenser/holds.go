package dispenser

import (
	"context"
	"time"

	"github.com/dispenserhq/dispenser/claim"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// reservationToProto converts a reservation; it has no code to reveal.
func reservationToProto(r claim.Reservation) *dispenserv1.Reservation {
	return &dispenserv1.Reservation{
		PoolId:      r.PoolID,
		RequestId:   r.RequestID,
		UserId:      r.UserID,
		State:       reservationState(r.State),
		ReserveTime: timeOrNil(r.ReservedAt),
		ExpireTime:  timeOrNil(r.HeldUntil),
		ConfirmTime: timeOrNil(r.ConfirmedAt),
	}
}

func reservationState(s claim.ReservationState) dispenserv1.ReservationState {
	switch s {
	case claim.ReservationHeld:
		return dispenserv1.ReservationState_RESERVATION_STATE_HELD
	case claim.ReservationConfirmed:
		return dispenserv1.ReservationState_RESERVATION_STATE_CONFIRMED
	case claim.ReservationCancelled:
		return dispenserv1.ReservationState_RESERVATION_STATE_CANCELLED
	case claim.ReservationExpired:
		return dispenserv1.ReservationState_RESERVATION_STATE_EXPIRED
	}
	return dispenserv1.ReservationState_RESERVATION_STATE_UNSPECIFIED
}

// ReserveCode implements ClaimService.ReserveCode.
func (s *Server) ReserveCode(ctx context.Context, req *dispenserv1.ReserveCodeRequest) (*dispenserv1.ReserveCodeResponse, error) {
	start := time.Now()
	var hold time.Duration
	if d := req.GetHoldFor(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
			return nil, invalidArgument("hold_for", "must be a positive duration")
		}
		hold = d.AsDuration()
	}
	requestID, err := idempotencyKey(ctx, "request_id", req.GetRequestId())
	if err != nil {
		return nil, err
	}
	r, err := s.claims.Reserve(ctx, claim.ReserveRequest{PoolID: req.GetPoolId(), UserID: req.GetUserId(),
		RequestID: requestID, HoldFor: hold})
	s.metrics.observeHold(s.poolLabel(req.GetPoolId()), "reserve", r.Path, err, time.Since(start))
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	return &dispenserv1.ReserveCodeResponse{Reservation: reservationToProto(r), Replayed: r.Replayed}, nil
}

// ConfirmReservation implements ClaimService.ConfirmReservation.
func (s *Server) ConfirmReservation(ctx context.Context, req *dispenserv1.ConfirmReservationRequest) (*dispenserv1.ConfirmReservationResponse, error) {
	start := time.Now()
	res, err := s.claims.Confirm(ctx, req.GetPoolId(), req.GetRequestId(), req.GetUserId())
	s.metrics.observeHold(s.poolLabel(req.GetPoolId()), "confirm", res.Path, err, time.Since(start))
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	return &dispenserv1.ConfirmReservationResponse{Claim: claimToProto(res.Claim, true), Replayed: res.Replayed}, nil
}

// CancelReservation implements ClaimService.CancelReservation.
func (s *Server) CancelReservation(ctx context.Context, req *dispenserv1.CancelReservationRequest) (*dispenserv1.CancelReservationResponse, error) {
	start := time.Now()
	r, err := s.claims.Cancel(ctx, req.GetPoolId(), req.GetRequestId(), req.GetUserId())
	s.metrics.observeHold(s.poolLabel(req.GetPoolId()), "cancel", "", err, time.Since(start))
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	return &dispenserv1.CancelReservationResponse{Reservation: reservationToProto(r)}, nil
}
