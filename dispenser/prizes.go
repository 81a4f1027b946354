package dispenser

import (
	"context"
	"encoding/base64"
	"strconv"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/prize"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

var prizeStates = map[dispenserv1.PrizeState]prize.State{
	dispenserv1.PrizeState_PRIZE_STATE_PENDING:   prize.Pending,
	dispenserv1.PrizeState_PRIZE_STATE_READY:     prize.Ready,
	dispenserv1.PrizeState_PRIZE_STATE_ASSIGNED:  prize.Assigned,
	dispenserv1.PrizeState_PRIZE_STATE_DELIVERED: prize.Delivered,
	dispenserv1.PrizeState_PRIZE_STATE_FAILED:    prize.Failed,
	dispenserv1.PrizeState_PRIZE_STATE_CANCELLED: prize.Cancelled,
}

// prizeFor converts a prize for the caller: only admins see codes.
func prizeFor(ctx context.Context, p prize.Prize) *dispenserv1.Prize {
	out := prizeToProto(p)
	if !auth.SeesCodes(ctx) {
		out.Code = ""
	}
	return out
}

func prizeToProto(p prize.Prize) *dispenserv1.Prize {
	out := &dispenserv1.Prize{
		Id:              strconv.FormatInt(p.ID, 10),
		PoolId:          p.PoolID,
		UserId:          p.UserID,
		ExternalId:      p.ExternalID,
		MetadataJson:    p.Metadata,
		DetailsJson:     p.Details,
		Code:            p.Code,
		DeliveryId:      p.DeliveryID,
		Attempts:        int32(p.Attempts),
		ParkReason:      p.ParkReason,
		LastError:       p.LastError,
		CreateTime:      timeOrNil(p.CreatedAt),
		ReadyTime:       timeOrNil(p.ReadyAt),
		AssignTime:      timeOrNil(p.AssignedAt),
		DeliverTime:     timeOrNil(p.DeliveredAt),
		NextAttemptTime: timeOrNil(p.NextAttempt),
	}
	for k, v := range prizeStates {
		if v == p.State {
			out.State = k
		}
	}
	return out
}

// RecordPrize implements PrizeService.RecordPrize.
func (s *Server) RecordPrize(ctx context.Context, req *dispenserv1.RecordPrizeRequest) (*dispenserv1.RecordPrizeResponse, error) {
	p, created, err := s.prizes.Record(ctx, prize.RecordRequest{PoolID: req.GetPoolId(), UserID: req.GetUserId(),
		ExternalID: req.GetExternalId(), Metadata: req.GetMetadataJson()})
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	return &dispenserv1.RecordPrizeResponse{Prize: prizeToProto(p), Created: created}, nil
}

// MarkPrizeReady implements PrizeService.MarkPrizeReady.
func (s *Server) MarkPrizeReady(ctx context.Context, req *dispenserv1.MarkPrizeReadyRequest) (*dispenserv1.MarkPrizeReadyResponse, error) {
	id, err := prize.ParseID("prize_id", req.GetPrizeId())
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	if cur, err := s.prizes.Get(ctx, id); err == nil && !auth.PoolAllowed(ctx, cur.PoolID) {
		return nil, auth.PermissionDenied()
	}
	p, err := s.prizes.MarkReady(ctx, id, req.GetDetailsJson())
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	return &dispenserv1.MarkPrizeReadyResponse{Prize: prizeToProto(p)}, nil
}

// GetPrize implements PrizeService.GetPrize.
func (s *Server) GetPrize(ctx context.Context, req *dispenserv1.GetPrizeRequest) (*dispenserv1.GetPrizeResponse, error) {
	id, err := prize.ParseID("prize_id", req.GetPrizeId())
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	p, err := s.prizes.Get(ctx, id)
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	return &dispenserv1.GetPrizeResponse{Prize: prizeFor(ctx, p)}, nil
}

// ListPrizes implements PrizeService.ListPrizes.
func (s *Server) ListPrizes(ctx context.Context, req *dispenserv1.ListPrizesRequest) (*dispenserv1.ListPrizesResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	var after int64
	if tok := req.GetPageToken(); tok != "" {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err == nil {
			after, err = strconv.ParseInt(string(raw), 10, 64)
		}
		if err != nil || after <= 0 {
			return nil, invalidArgument("page_token", "is not a token from a previous ListPrizes answer")
		}
	}
	var state prize.State
	if req.GetState() != dispenserv1.PrizeState_PRIZE_STATE_UNSPECIFIED {
		st, ok := prizeStates[req.GetState()]
		if !ok {
			return nil, invalidArgument("state", "is not a prize state")
		}
		state = st
	}
	prizes, err := s.prizes.List(ctx, req.GetPoolId(), state, after, size+1)
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	resp := &dispenserv1.ListPrizesResponse{}
	if len(prizes) > size {
		prizes = prizes[:size]
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(prizes[size-1].ID, 10)))
	}
	for _, p := range prizes {
		resp.Prizes = append(resp.Prizes, prizeFor(ctx, p))
	}
	return resp, nil
}

// RetryDelivery implements PrizeService.RetryDelivery.
func (s *Server) RetryDelivery(ctx context.Context, req *dispenserv1.RetryDeliveryRequest) (*dispenserv1.RetryDeliveryResponse, error) {
	id, err := prize.ParseID("prize_id", req.GetPrizeId())
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	p, err := s.prizes.Retry(ctx, id)
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	return &dispenserv1.RetryDeliveryResponse{Prize: prizeToProto(p)}, nil
}

// CancelPrize implements PrizeService.CancelPrize.
func (s *Server) CancelPrize(ctx context.Context, req *dispenserv1.CancelPrizeRequest) (*dispenserv1.CancelPrizeResponse, error) {
	id, err := prize.ParseID("prize_id", req.GetPrizeId())
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	p, err := s.prizes.Cancel(ctx, id)
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	return &dispenserv1.CancelPrizeResponse{Prize: prizeToProto(p)}, nil
}
