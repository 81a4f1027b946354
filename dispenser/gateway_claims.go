package dispenser

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// directClaims serves the HTTP gateway's ClaimService calls, the hot path,
// without the in-process gRPC hop (framing, a second encoding, a stream per
// call): the gateway calls these methods directly, and each runs the same
// unary interceptors as the gRPC servers (access log, panic recovery, API
// keys, roles and rate limits) around the same handler.
type directClaims struct {
	dispenserv1.UnimplementedClaimServiceServer
	srv   dispenserv1.ClaimServiceServer
	chain grpc.UnaryServerInterceptor
}

// chainUnary runs interceptors in order around a handler, as
// grpc.ChainUnaryInterceptor does in a server.
func chainUnary(ics []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		h := handler
		for i := len(ics) - 1; i >= 0; i-- {
			ic, next := ics[i], h
			h = func(ctx context.Context, req any) (any, error) { return ic(ctx, req, info, next) }
		}
		return h(ctx, req)
	}
}

// intercepted calls h through chain as method.
func intercepted[Req, Resp any](ctx context.Context, chain grpc.UnaryServerInterceptor, srv any, method string, req Req,
	h func(context.Context, Req) (Resp, error),
) (Resp, error) {
	var zero Resp
	out, err := chain(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: method},
		func(ctx context.Context, r any) (any, error) { return h(ctx, r.(Req)) })
	if err != nil {
		return zero, err
	}
	resp, ok := out.(Resp)
	if !ok {
		return zero, status.Error(codes.Internal, "internal error")
	}
	return resp, nil
}

func (d directClaims) ClaimCode(ctx context.Context, req *dispenserv1.ClaimCodeRequest) (*dispenserv1.ClaimCodeResponse, error) {
	return intercepted(ctx, d.chain, d.srv, dispenserv1.ClaimService_ClaimCode_FullMethodName, req, d.srv.ClaimCode)
}

func (d directClaims) GetClaim(ctx context.Context, req *dispenserv1.GetClaimRequest) (*dispenserv1.GetClaimResponse, error) {
	return intercepted(ctx, d.chain, d.srv, dispenserv1.ClaimService_GetClaim_FullMethodName, req, d.srv.GetClaim)
}

func (d directClaims) ListUserClaims(ctx context.Context, req *dispenserv1.ListUserClaimsRequest) (*dispenserv1.ListUserClaimsResponse, error) {
	return intercepted(ctx, d.chain, d.srv, dispenserv1.ClaimService_ListUserClaims_FullMethodName, req, d.srv.ListUserClaims)
}

func (d directClaims) ReserveCode(ctx context.Context, req *dispenserv1.ReserveCodeRequest) (*dispenserv1.ReserveCodeResponse, error) {
	return intercepted(ctx, d.chain, d.srv, dispenserv1.ClaimService_ReserveCode_FullMethodName, req, d.srv.ReserveCode)
}

func (d directClaims) ConfirmReservation(ctx context.Context, req *dispenserv1.ConfirmReservationRequest) (*dispenserv1.ConfirmReservationResponse, error) {
	return intercepted(ctx, d.chain, d.srv, dispenserv1.ClaimService_ConfirmReservation_FullMethodName, req, d.srv.ConfirmReservation)
}

func (d directClaims) CancelReservation(ctx context.Context, req *dispenserv1.CancelReservationRequest) (*dispenserv1.CancelReservationResponse, error) {
	return intercepted(ctx, d.chain, d.srv, dispenserv1.ClaimService_CancelReservation_FullMethodName, req, d.srv.CancelReservation)
}
