package dispenser

import (
	"context"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/jobs"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// claimToProto converts a claim; the code is revealed only when withCode.
func claimToProto(c claim.Claim, withCode bool) *dispenserv1.Claim {
	out := &dispenserv1.Claim{
		PoolId:        c.PoolID,
		PrizeId:       prizeIDString(c.PrizeID),
		RequestId:     c.RequestID,
		UserId:        c.UserID,
		ClaimTime:     timeOrNil(c.ClaimedAt),
		CodeExpiresAt: timeOrNil(c.ExpiresAt),
	}
	if withCode {
		out.Code = c.Code.Reveal()
	}
	return out
}

// ClaimCode implements ClaimService.ClaimCode.
func (s *Server) ClaimCode(ctx context.Context, req *dispenserv1.ClaimCodeRequest) (*dispenserv1.ClaimCodeResponse, error) {
	start := time.Now()
	requestID, err := idempotencyKey(ctx, "request_id", req.GetRequestId())
	if err != nil {
		return nil, err
	}
	res, err := s.claims.Claim(ctx, claim.Request{PoolID: req.GetPoolId(), UserID: req.GetUserId(), RequestID: requestID})
	s.metrics.observeClaim(s.poolLabel(req.GetPoolId()), res, err, time.Since(start))
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	return &dispenserv1.ClaimCodeResponse{Claim: claimToProto(res.Claim, true), Replayed: res.Replayed}, nil
}

// GetClaim implements ClaimService.GetClaim.
func (s *Server) GetClaim(ctx context.Context, req *dispenserv1.GetClaimRequest) (*dispenserv1.GetClaimResponse, error) {
	c, err := s.claimReads.GetClaim(ctx, req.GetPoolId(), req.GetRequestId(), req.GetUserId())
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	return &dispenserv1.GetClaimResponse{Claim: claimToProto(c, !auth.WithholdsCodes(ctx))}, nil
}

// ListUserClaims implements ClaimService.ListUserClaims.
func (s *Server) ListUserClaims(ctx context.Context, req *dispenserv1.ListUserClaimsRequest) (*dispenserv1.ListUserClaimsResponse, error) {
	cs, err := s.claimReads.ListUserClaims(ctx, req.GetPoolId(), req.GetUserId())
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	out := &dispenserv1.ListUserClaimsResponse{}
	for _, c := range cs {
		out.Claims = append(out.Claims, claimToProto(c, !auth.WithholdsCodes(ctx)))
	}
	return out, nil
}

// ExportClaims implements AdminService.ExportClaims: one message per page of
// claims, in claim order.
func (s *Server) ExportClaims(req *dispenserv1.ExportClaimsRequest, stream grpc.ServerStreamingServer[dispenserv1.ExportClaimsResponse]) error {
	ctx := stream.Context()
	since, err := timeFromProto("since", req.GetSince())
	if err != nil {
		return statusError(ctx, s.log, err)
	}
	until, err := timeFromProto("until", req.GetUntil())
	if err != nil {
		return statusError(ctx, s.log, err)
	}
	if !since.IsZero() && !until.IsZero() && !since.Before(until) {
		return invalidArgument("until", "must be after since")
	}
	err = s.claimReads.ExportClaims(ctx, req.GetPoolId(), since, until, func(page []claim.Claim) error {
		msg := &dispenserv1.ExportClaimsResponse{Claims: make([]*dispenserv1.Claim, len(page))}
		for i, c := range page {
			msg.Claims[i] = claimToProto(c, req.GetIncludeCodes())
		}
		return stream.Send(msg)
	})
	return statusError(ctx, s.log, err)
}

// RunJob implements AdminService.RunJob.
func (s *Server) RunJob(ctx context.Context, req *dispenserv1.RunJobRequest) (*dispenserv1.RunJobResponse, error) {
	var name jobs.Name
	switch req.GetJob() {
	case dispenserv1.Job_JOB_REFILL:
		name = jobs.Refill
	case dispenserv1.Job_JOB_RECONCILE:
		name = jobs.Reconcile
	case dispenserv1.Job_JOB_DELIVER:
		name = jobs.Deliver
	case dispenserv1.Job_JOB_EXPIRE_HOLDS:
		name = jobs.ExpireHolds
	default:
		return nil, invalidArgument("job", "must be JOB_REFILL, JOB_RECONCILE, JOB_DELIVER or JOB_EXPIRE_HOLDS")
	}
	if req.GetPoolId() != "" {
		if _, err := s.pools.GetPool(ctx, req.GetPoolId()); err != nil {
			return nil, statusError(ctx, s.log, err)
		}
	}
	reports, err := s.jobs.Run(ctx, name, req.GetPoolId())
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	out := &dispenserv1.RunJobResponse{}
	for _, r := range reports {
		pr := &dispenserv1.JobPoolReport{
			PoolId: r.PoolID, Staged: int64(r.Staged), Expired: r.Reconcile.Expired,
			ReturnedLostBatches: r.Reconcile.LostBatches, ReturnedStale: r.Reconcile.Stale,
			ReturnedOrphans: r.Reconcile.Orphans, ReturnedDroppedShards: r.Reconcile.Dropped, Balanced: r.Balanced,
			PrizesAssigned: int64(r.Deliver.Assigned), PrizesDelivered: int64(r.Deliver.Delivered),
			DeliveryRetries: int64(r.Deliver.Retried), PrizesParked: int64(r.Deliver.Parked),
			HoldsExpired: r.HoldsExpired,
		}
		if r.Err != nil {
			// The same safe text a failed call would carry.
			pr.Error = status.Convert(statusError(ctx, s.log, r.Err)).Message()
		}
		out.Pools = append(out.Pools, pr)
	}
	return out, nil
}

// prizeIDString spells a prize id as the prize API does; "" for none.
func prizeIDString(id int64) string {
	if id == 0 {
		return ""
	}
	return strconv.FormatInt(id, 10)
}

// unknownPool is the metric label of every pool id that names no pool, so
// the series stay bounded whatever ids callers send.
const unknownPool = "unknown"

// poolLabel is the metric label for a pool id a caller sent.
func (s *Server) poolLabel(id string) string {
	if s.claims.KnownPool(id) {
		return id
	}
	return unknownPool
}
