package dispenser

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/internal/rpcerr"
	"github.com/dispenserhq/dispenser/pool"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

var keyRoles = map[dispenserv1.KeyRole]auth.Role{
	dispenserv1.KeyRole_KEY_ROLE_CLAIMER: auth.Claimer,
	dispenserv1.KeyRole_KEY_ROLE_ADMIN:   auth.Admin,
	dispenserv1.KeyRole_KEY_ROLE_AUDITOR: auth.Auditor,
}

func keyToProto(k auth.Key) *dispenserv1.ApiKey {
	out := &dispenserv1.ApiKey{Id: k.ID, Name: k.Name, Pools: k.Pools, Rate: k.Rate, Burst: int32(k.Burst),
		CreateTime: timeOrNil(k.CreatedAt), RevokeTime: timeOrNil(k.RevokedAt)}
	for pr, r := range keyRoles {
		if r == k.Role {
			out.Role = pr
		}
	}
	return out
}

// CreateKey implements AdminService.CreateKey.
func (s *Server) CreateKey(ctx context.Context, req *dispenserv1.CreateKeyRequest) (*dispenserv1.CreateKeyResponse, error) {
	in := req.GetKey()
	role, ok := keyRoles[in.GetRole()]
	if !ok {
		return nil, invalidArgument("key.role", "must be KEY_ROLE_CLAIMER, KEY_ROLE_ADMIN or KEY_ROLE_AUDITOR")
	}
	if len(in.GetName()) > 200 {
		return nil, invalidArgument("key.name", "must be at most 200 characters")
	}
	if in.GetRate() < 0 || in.GetBurst() < 0 {
		return nil, invalidArgument("key.rate", "rate and burst must not be negative")
	}
	if len(in.GetPools()) > 0 && role != auth.Claimer {
		return nil, invalidArgument("key.pools", "only claimer keys are limited to pools")
	}
	for _, p := range in.GetPools() {
		if err := pool.ValidateID("key.pools", p); err != nil {
			return nil, statusError(ctx, s.log, err)
		}
	}
	var pools []string
	if len(in.GetPools()) > 0 {
		pools = in.GetPools()
	}
	k, text, err := s.apiKeys.Create(ctx, auth.Key{Name: in.GetName(), Role: role, Pools: pools, Rate: in.GetRate(), Burst: int(in.GetBurst())})
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	s.log.InfoContext(ctx, "api key created", "key", k.ID, "role", string(k.Role))
	return &dispenserv1.CreateKeyResponse{Key: keyToProto(k), Secret: text}, nil
}

// ListKeys implements AdminService.ListKeys.
func (s *Server) ListKeys(ctx context.Context, _ *dispenserv1.ListKeysRequest) (*dispenserv1.ListKeysResponse, error) {
	keys, err := s.apiKeys.List(ctx)
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	out := &dispenserv1.ListKeysResponse{}
	for _, k := range keys {
		out.Keys = append(out.Keys, keyToProto(k))
	}
	return out, nil
}

// RevokeKey implements AdminService.RevokeKey.
func (s *Server) RevokeKey(ctx context.Context, req *dispenserv1.RevokeKeyRequest) (*dispenserv1.RevokeKeyResponse, error) {
	k, err := s.apiKeys.Revoke(ctx, req.GetKeyId())
	if errors.Is(err, auth.ErrKeyNotFound) {
		return nil, rpcerr.Info(codes.NotFound, "no key has this id", ReasonKeyNotFound)
	}
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	s.log.InfoContext(ctx, "api key revoked", "key", k.ID)
	return &dispenserv1.RevokeKeyResponse{Key: keyToProto(k)}, nil
}
