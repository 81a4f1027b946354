package dispenser_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/dispenser"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// identities of the matrix, with the key text each one sends.
type identity struct {
	name string
	key  string
}

func withKey(key string) context.Context {
	if key == "" {
		return context.Background()
	}
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key)
}

// Every RPC against every identity: no key and a revoked key are
// Unauthenticated; a role without the right, or a claimer of another pool,
// is PermissionDenied; everyone else gets through (whatever the call then
// answers). The expectations are written out here, not read from the rules.
func TestAuthMatrix(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{auth: &auth.Config{}})
	b.createPoolDirect(t, "p1")
	store := auth.NewStore(b.db.Pool)
	mk := func(k auth.Key) string {
		_, text, err := store.Create(context.Background(), k)
		require.NoError(t, err)
		return text
	}
	revoked := auth.Key{Name: "old", Role: auth.Admin}
	rk, revokedText, err := store.Create(context.Background(), revoked)
	require.NoError(t, err)
	_, err = store.Revoke(context.Background(), rk.ID)
	require.NoError(t, err)
	ids := []identity{
		{"no key", ""},
		{"revoked", revokedText},
		{"claimer", mk(auth.Key{Role: auth.Claimer})},
		{"claimer of p2", mk(auth.Key{Role: auth.Claimer, Pools: []string{"p2"}})},
		{"auditor", mk(auth.Key{Role: auth.Auditor})},
		{"admin", mk(auth.Key{Role: auth.Admin})},
	}
	pc := b.prizes()
	hc := healthpb.NewHealthClient(b.conn)
	var prizeID string
	require.NoError(t, b.db.Pool.QueryRow(context.Background(),
		`INSERT INTO prizes (pool_id, user_id, external_id) VALUES ('p1', 'w', 'matrix') RETURNING id::text`).Scan(&prizeID))
	type rpc struct {
		name    string
		allowed []string // identities that get through
		call    func(ctx context.Context) error
	}
	claimers := []string{"claimer", "admin"}
	readers := []string{"auditor", "admin"}
	admins := []string{"admin"}
	everyone := []string{"no key", "revoked", "claimer", "claimer of p2", "auditor", "admin"}
	rpcs := []rpc{
		{"ClaimCode", claimers, func(ctx context.Context) error {
			_, err := b.claim.ClaimCode(ctx, &dispenserv1.ClaimCodeRequest{PoolId: "p1", UserId: "u", RequestId: "r"})
			return err
		}},
		{"GetClaim", []string{"claimer", "auditor", "admin"}, func(ctx context.Context) error {
			_, err := b.claim.GetClaim(ctx, &dispenserv1.GetClaimRequest{PoolId: "p1", RequestId: "r"})
			return err
		}},
		{"ListUserClaims", []string{"claimer", "auditor", "admin"}, func(ctx context.Context) error {
			_, err := b.claim.ListUserClaims(ctx, &dispenserv1.ListUserClaimsRequest{PoolId: "p1", UserId: "u"})
			return err
		}},
		{"ReserveCode", claimers, func(ctx context.Context) error {
			_, err := b.claim.ReserveCode(ctx, &dispenserv1.ReserveCodeRequest{PoolId: "p1", UserId: "u", RequestId: "h"})
			return err
		}},
		{"ConfirmReservation", claimers, func(ctx context.Context) error {
			_, err := b.claim.ConfirmReservation(ctx, &dispenserv1.ConfirmReservationRequest{PoolId: "p1", RequestId: "h"})
			return err
		}},
		{"CancelReservation", claimers, func(ctx context.Context) error {
			_, err := b.claim.CancelReservation(ctx, &dispenserv1.CancelReservationRequest{PoolId: "p1", RequestId: "h"})
			return err
		}},
		{"CreatePool", admins, func(ctx context.Context) error {
			_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "p1"}})
			return err
		}},
		{"UpdatePool", admins, func(ctx context.Context) error {
			_, err := b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{Pool: &dispenserv1.Pool{Id: "p1"},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"display_name"}}})
			return err
		}},
		{"GetPool", readers, func(ctx context.Context) error {
			_, err := b.admin.GetPool(ctx, &dispenserv1.GetPoolRequest{PoolId: "p1"})
			return err
		}},
		{"ListPools", readers, func(ctx context.Context) error {
			_, err := b.admin.ListPools(ctx, &dispenserv1.ListPoolsRequest{})
			return err
		}},
		{"GetPoolStats", readers, func(ctx context.Context) error {
			_, err := b.admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: "p1"})
			return err
		}},
		{"ImportCodes", admins, func(ctx context.Context) error {
			s, err := b.admin.ImportCodes(ctx)
			if err != nil {
				return err
			}
			_ = s.Send(&dispenserv1.ImportCodesRequest{Payload: &dispenserv1.ImportCodesRequest_Options{Options: &dispenserv1.ImportOptions{
				PoolId: "p1", Format: dispenserv1.ImportFormat_IMPORT_FORMAT_LINES}}})
			_, err = s.CloseAndRecv()
			return err
		}},
		{"ExportClaims", readers, func(ctx context.Context) error {
			s, err := b.admin.ExportClaims(ctx, &dispenserv1.ExportClaimsRequest{PoolId: "p1"})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}},
		{"ExportClaims with codes", admins, func(ctx context.Context) error {
			s, err := b.admin.ExportClaims(ctx, &dispenserv1.ExportClaimsRequest{PoolId: "p1", IncludeCodes: true})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}},
		{"GenerateCodes", admins, func(ctx context.Context) error {
			s, err := b.admin.GenerateCodes(ctx, &dispenserv1.GenerateCodesRequest{PoolId: "p1", Count: 1, Pattern: "AUTH-############"})
			if err != nil {
				return err
			}
			for {
				if _, err := s.Recv(); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
			}
		}},
		{"VoidCodes", admins, func(ctx context.Context) error {
			_, err := b.admin.VoidCodes(ctx, &dispenserv1.VoidCodesRequest{PoolId: "p1", Codes: []string{"AAAA"}, Reason: "r"})
			return err
		}},
		{"RunJob", admins, func(ctx context.Context) error {
			_, err := b.admin.RunJob(ctx, &dispenserv1.RunJobRequest{Job: dispenserv1.Job_JOB_RECONCILE, PoolId: "p1"})
			return err
		}},
		{"CreateKey", admins, func(ctx context.Context) error {
			_, err := b.admin.CreateKey(ctx, &dispenserv1.CreateKeyRequest{Key: &dispenserv1.ApiKey{Role: dispenserv1.KeyRole_KEY_ROLE_AUDITOR}})
			return err
		}},
		{"ListKeys", admins, func(ctx context.Context) error {
			_, err := b.admin.ListKeys(ctx, &dispenserv1.ListKeysRequest{})
			return err
		}},
		{"GetHealth", readers, func(ctx context.Context) error {
			_, err := b.admin.GetHealth(ctx, &dispenserv1.GetHealthRequest{})
			return err
		}},
		{"RevokeKey", admins, func(ctx context.Context) error {
			_, err := b.admin.RevokeKey(ctx, &dispenserv1.RevokeKeyRequest{KeyId: "nonexistent00"})
			return err
		}},
		{"RecordPrize", claimers, func(ctx context.Context) error {
			_, err := pc.RecordPrize(ctx, &dispenserv1.RecordPrizeRequest{PoolId: "p1", UserId: "u", ExternalId: "e"})
			return err
		}},
		{"MarkPrizeReady", claimers, func(ctx context.Context) error {
			_, err := pc.MarkPrizeReady(ctx, &dispenserv1.MarkPrizeReadyRequest{PrizeId: prizeID})
			return err
		}},
		{"GetPrize", readers, func(ctx context.Context) error {
			_, err := pc.GetPrize(ctx, &dispenserv1.GetPrizeRequest{PrizeId: "999"})
			return err
		}},
		{"ListPrizes", readers, func(ctx context.Context) error {
			_, err := pc.ListPrizes(ctx, &dispenserv1.ListPrizesRequest{PoolId: "p1"})
			return err
		}},
		{"RetryDelivery", admins, func(ctx context.Context) error {
			_, err := pc.RetryDelivery(ctx, &dispenserv1.RetryDeliveryRequest{PrizeId: "999"})
			return err
		}},
		{"CancelPrize", admins, func(ctx context.Context) error {
			_, err := pc.CancelPrize(ctx, &dispenserv1.CancelPrizeRequest{PrizeId: "999"})
			return err
		}},
		{"Health", everyone, func(ctx context.Context) error {
			_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
			if status.Code(err) == codes.NotFound { // the test server has no statuses set
				return nil
			}
			return err
		}},
	}
	// Every registered method is in the matrix.
	for _, desc := range []grpc.ServiceDesc{dispenserv1.ClaimService_ServiceDesc, dispenserv1.AdminService_ServiceDesc,
		dispenserv1.PrizeService_ServiceDesc} {
		svc := desc.ServiceName
		var names []string
		for _, m := range desc.Methods {
			names = append(names, m.MethodName)
		}
		for _, st := range desc.Streams {
			names = append(names, st.StreamName)
		}
		for _, m := range names {
			found := false
			for _, r := range rpcs {
				found = found || r.name == m
			}
			require.True(t, found, "%s/%s is missing from the matrix", svc, m)
		}
	}
	for _, r := range rpcs {
		for _, id := range ids {
			err := r.call(withKey(id.key))
			code := status.Code(err)
			allowed := false
			for _, a := range r.allowed {
				allowed = allowed || a == id.name
			}
			switch {
			case allowed:
				require.NotContains(t, []codes.Code{codes.Unauthenticated, codes.PermissionDenied}, code, "%s as %s: %v", r.name, id.name, err)
			case id.name == "no key" || id.name == "revoked":
				require.Equal(t, codes.Unauthenticated, code, "%s as %s: %v", r.name, id.name, err)
			default:
				require.Equal(t, codes.PermissionDenied, code, "%s as %s: %v", r.name, id.name, err)
			}
		}
	}
}

// A method the server does not have answers Unimplemented with reason
// NO_SUCH_ROUTE, once the caller is authenticated, and no refusal echoes a
// name that is not of gRPC's form.
func TestUnknownMethod(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{auth: &auth.Config{}})
	store := auth.NewStore(b.db.Pool)
	_, admin, err := store.Create(context.Background(), auth.Key{Role: auth.Admin})
	require.NoError(t, err)
	_, claimer, err := store.Create(context.Background(), auth.Key{Role: auth.Claimer})
	require.NoError(t, err)
	long := "/dispenser.v1.ClaimService/" + strings.Repeat("Z", 200)
	odd := "/dispenser.v1.ClaimService/Z<script>ZZ"
	call := func(key, method string) error {
		return b.conn.Invoke(withKey(key), method, &emptypb.Empty{}, &emptypb.Empty{})
	}
	for _, method := range []string{"/dispenser.v1.ClaimService/NoSuchMethod", "/nowhere.v9.Nothing/Call", long, odd} {
		err := call(admin, method)
		requireStatus(t, err, codes.Unimplemented, dispenser.ReasonNoSuchRoute, "")
		require.NotContains(t, status.Convert(err).Message(), "Nothing")
		require.NotContains(t, status.Convert(err).Message(), "NoSuch")

		requireStatus(t, call("", method), codes.Unauthenticated, auth.ReasonUnauthenticated, "")

		err = call(claimer, method)
		requireStatus(t, err, codes.PermissionDenied, auth.ReasonPermissionDenied, "")
		if method == long || method == odd {
			require.NotContains(t, status.Convert(err).Message(), "ZZ")
		} else {
			require.Contains(t, status.Convert(err).Message(), method)
		}
	}
	// The API's own methods are unaffected.
	_, err = b.admin.ListPools(withKey(admin), &dispenserv1.ListPoolsRequest{})
	require.NoError(t, err)

	// Without authentication, the answer is the same for everyone.
	open := setup(t, setupOpts{})
	err = open.conn.Invoke(context.Background(), "/dispenser.v1.AdminService/DropEverything", &emptypb.Empty{}, &emptypb.Empty{})
	requireStatus(t, err, codes.Unimplemented, dispenser.ReasonNoSuchRoute, "")
}

func TestRateLimitPerKey(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{auth: &auth.Config{}})
	b.createPoolDirect(t, "p1")
	store := auth.NewStore(b.db.Pool)
	_, slow, err := store.Create(context.Background(), auth.Key{Role: auth.Admin, Rate: 0.01, Burst: 3})
	require.NoError(t, err)
	_, fast, err := store.Create(context.Background(), auth.Key{Role: auth.Admin})
	require.NoError(t, err)
	for range 3 {
		_, err := b.admin.GetPool(withKey(slow), &dispenserv1.GetPoolRequest{PoolId: "p1"})
		require.NoError(t, err)
	}
	_, err = b.admin.GetPool(withKey(slow), &dispenserv1.GetPoolRequest{PoolId: "p1"})
	requireStatus(t, err, codes.ResourceExhausted, auth.ReasonRateLimited, "")
	// Limits are per key: another key is unaffected.
	_, err = b.admin.GetPool(withKey(fast), &dispenserv1.GetPoolRequest{PoolId: "p1"})
	require.NoError(t, err)
}

// Auditors read prizes without their codes.
func TestAuditorSeesNoCodes(t *testing.T) {
	ctx, b := start(t, setupOpts{auth: &auth.Config{}})
	store := auth.NewStore(b.db.Pool)
	_, admin, err := store.Create(ctx, auth.Key{Role: auth.Admin})
	require.NoError(t, err)
	_, auditor, err := store.Create(ctx, auth.Key{Role: auth.Auditor})
	require.NoError(t, err)
	b.createPoolDirect(t, "p1")
	_, err = b.db.Pool.Exec(ctx, `WITH i AS (INSERT INTO imports (pool_id, format, strict, lines, inserted, duplicates_in_file, duplicates_in_pool, invalid, bytes)
		VALUES ('p1', 'lines', false, 1, 1, 0, 0, 0, 4) RETURNING id),
		k AS (INSERT INTO codes (pool_id, code, import_id, state) SELECT 'p1', 'SECRETCODE', id, 'claimed' FROM i RETURNING id),
		c AS (INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id) SELECT 'p1', 'prize:1', 'w', 1, id FROM k RETURNING id)
		INSERT INTO prizes (id, pool_id, user_id, external_id, state, claim_id) OVERRIDING SYSTEM VALUE
		SELECT 1, 'p1', 'w', 'e', 'assigned', id FROM c`)
	require.NoError(t, err)
	pc := b.prizes()
	asAdmin, err := pc.GetPrize(withKey(admin), &dispenserv1.GetPrizeRequest{PrizeId: "1"})
	require.NoError(t, err)
	require.Equal(t, "SECRETCODE", asAdmin.GetPrize().GetCode())
	asAuditor, err := pc.GetPrize(withKey(auditor), &dispenserv1.GetPrizeRequest{PrizeId: "1"})
	require.NoError(t, err)
	require.Empty(t, asAuditor.GetPrize().GetCode())
	list, err := pc.ListPrizes(withKey(auditor), &dispenserv1.ListPrizesRequest{PoolId: "p1"})
	require.NoError(t, err)
	require.Empty(t, list.GetPrizes()[0].GetCode())

	// Claims: auditors may look them up, without their codes.
	_, err = b.db.Pool.Exec(ctx, `WITH k AS (INSERT INTO codes (pool_id, code, import_id, state)
		SELECT 'p1', 'OTHERSECRET', id, 'claimed' FROM imports WHERE pool_id = 'p1' RETURNING id)
		INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id) SELECT 'p1', 'r1', 'u1', 1, id FROM k`)
	require.NoError(t, err)
	got, err := b.claim.GetClaim(withKey(auditor), &dispenserv1.GetClaimRequest{PoolId: "p1", RequestId: "r1"})
	require.NoError(t, err)
	require.Equal(t, "u1", got.GetClaim().GetUserId())
	require.Empty(t, got.GetClaim().GetCode())
	claims, err := b.claim.ListUserClaims(withKey(auditor), &dispenserv1.ListUserClaimsRequest{PoolId: "p1", UserId: "u1"})
	require.NoError(t, err)
	require.Len(t, claims.GetClaims(), 1)
	require.Empty(t, claims.GetClaims()[0].GetCode())
	got, err = b.claim.GetClaim(withKey(admin), &dispenserv1.GetClaimRequest{PoolId: "p1", RequestId: "r1"})
	require.NoError(t, err)
	require.Equal(t, "OTHERSECRET", got.GetClaim().GetCode())
}
