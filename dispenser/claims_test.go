package dispenser_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/dispenserhq/dispenser/dispenser"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// fill creates a pool with n codes through the API and stages them.
func (b *bundle) fill(t *testing.T, p *dispenserv1.Pool, n int) {
	t.Helper()
	ctx := context.Background()
	_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: p})
	require.NoError(t, err)
	var data strings.Builder
	for i := range n {
		fmt.Fprintf(&data, "%s-SECRET-%05d\n", p.GetId(), i)
	}
	_, err = b.importData(ctx, &dispenserv1.ImportOptions{PoolId: p.GetId(), Format: dispenserv1.ImportFormat_IMPORT_FORMAT_LINES}, data.String())
	require.NoError(t, err)
	_, err = b.admin.RunJob(ctx, &dispenserv1.RunJobRequest{Job: dispenserv1.Job_JOB_REFILL, PoolId: p.GetId()})
	require.NoError(t, err)
}

func (b *bundle) claimCode(user, req string) (*dispenserv1.ClaimCodeResponse, error) {
	return b.claim.ClaimCode(context.Background(), &dispenserv1.ClaimCodeRequest{PoolId: "p1", UserId: user, RequestId: req})
}

func TestClaimCodeAndReplay(t *testing.T) {
	ctx, b := start(t)
	b.fill(t, &dispenserv1.Pool{Id: "p1", PerUserLimit: 2}, 3)

	first, err := b.claimCode("alice", "r1")
	require.NoError(t, err)
	require.False(t, first.GetReplayed())
	require.True(t, strings.HasPrefix(first.GetClaim().GetCode(), "p1-SECRET-"))
	require.Equal(t, "alice", first.GetClaim().GetUserId())
	require.NotNil(t, first.GetClaim().GetClaimTime())

	again, err := b.claimCode("alice", "r1")
	require.NoError(t, err)
	require.True(t, again.GetReplayed())
	require.Equal(t, first.GetClaim().GetCode(), again.GetClaim().GetCode())

	second, err := b.claimCode("alice", "r2")
	require.NoError(t, err)
	_, err = b.claimCode("alice", "r3")
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonUserLimit, "")

	_, err = b.claimCode("bob", "r4")
	require.NoError(t, err)
	_, err = b.claimCode("carol", "r5")
	requireStatus(t, err, codes.ResourceExhausted, dispenser.ReasonPoolExhausted, "")

	got, err := b.claim.GetClaim(ctx, &dispenserv1.GetClaimRequest{PoolId: "p1", RequestId: "r2"})
	require.NoError(t, err)
	require.Equal(t, second.GetClaim().GetCode(), got.GetClaim().GetCode())
	_, err = b.claim.GetClaim(ctx, &dispenserv1.GetClaimRequest{PoolId: "p1", RequestId: "r5"})
	requireStatus(t, err, codes.NotFound, dispenser.ReasonClaimNotFound, "")

	list, err := b.claim.ListUserClaims(ctx, &dispenserv1.ListUserClaimsRequest{PoolId: "p1", UserId: "alice"})
	require.NoError(t, err)
	require.Len(t, list.GetClaims(), 2)
	require.Equal(t, "r1", list.GetClaims()[0].GetRequestId())
	require.Equal(t, "r2", list.GetClaims()[1].GetRequestId())
}

func TestClaimCodeRules(t *testing.T) {
	ctx, b := start(t)
	b.fill(t, &dispenserv1.Pool{Id: "p1"}, 5)

	_, err := b.claim.ClaimCode(ctx, &dispenserv1.ClaimCodeRequest{PoolId: "nope", UserId: "u", RequestId: "r"})
	requireStatus(t, err, codes.NotFound, dispenser.ReasonPoolNotFound, "")
	for field, req := range map[string]*dispenserv1.ClaimCodeRequest{
		"pool_id":    {PoolId: "", UserId: "u", RequestId: "r"},
		"user_id":    {PoolId: "p1", UserId: "", RequestId: "r"},
		"request_id": {PoolId: "p1", UserId: "u", RequestId: strings.Repeat("r", 129)},
	} {
		_, err := b.claim.ClaimCode(ctx, req)
		requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, field)
	}

	update := func(p *dispenserv1.Pool, paths ...string) {
		p.Id = "p1"
		_, err := b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{Pool: p, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
		require.NoError(t, err)
	}
	update(&dispenserv1.Pool{Paused: true}, "paused")
	_, err = b.claimCode("u", "r1")
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonPoolPaused, "")

	update(&dispenserv1.Pool{Paused: false, ClaimStartsAt: timestamppb.New(time.Now().Add(time.Hour))}, "paused", "claim_starts_at")
	_, err = b.claimCode("u", "r1")
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonPoolClosed, "")

	update(&dispenserv1.Pool{ClaimEndsAt: timestamppb.New(time.Now().Add(-time.Second))}, "claim_starts_at", "claim_ends_at")
	_, err = b.claimCode("u", "r1")
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonPoolClosed, "")

	update(&dispenserv1.Pool{}, "claim_ends_at")
	_, err = b.claimCode("u", "r1")
	require.NoError(t, err)

	stats, err := b.admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: "p1"})
	require.NoError(t, err)
	require.EqualValues(t, 1, stats.GetStats().GetClaimed())
	require.True(t, stats.GetStats().GetBalanced())
}

func TestExportClaims(t *testing.T) {
	ctx, b := start(t)
	b.fill(t, &dispenserv1.Pool{Id: "p1"}, 1500)
	for i := range 1200 {
		_, err := b.claimCode(fmt.Sprint("u", i), fmt.Sprint("r", i))
		require.NoError(t, err)
	}
	export := func(req *dispenserv1.ExportClaimsRequest) []*dispenserv1.Claim {
		t.Helper()
		stream, err := b.admin.ExportClaims(ctx, req)
		require.NoError(t, err)
		var all []*dispenserv1.Claim
		for {
			msg, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return all
			}
			require.NoError(t, err)
			all = append(all, msg.GetClaims()...)
		}
	}
	all := export(&dispenserv1.ExportClaimsRequest{PoolId: "p1", IncludeCodes: true})
	require.Len(t, all, 1200)
	seen := map[string]bool{}
	for i, c := range all {
		require.NotEmpty(t, c.GetCode())
		require.False(t, seen[c.GetCode()])
		seen[c.GetCode()] = true
		if i > 0 {
			require.False(t, c.GetClaimTime().AsTime().Before(all[i-1].GetClaimTime().AsTime()), "claim order")
		}
	}
	for _, c := range export(&dispenserv1.ExportClaimsRequest{PoolId: "p1"}) {
		require.Empty(t, c.GetCode(), "codes only when asked")
	}
	mid := all[600].GetClaimTime()
	before := export(&dispenserv1.ExportClaimsRequest{PoolId: "p1", Until: mid})
	after := export(&dispenserv1.ExportClaimsRequest{PoolId: "p1", Since: mid})
	require.Equal(t, 1200, len(before)+len(after))

	stream, err := b.admin.ExportClaims(ctx, &dispenserv1.ExportClaimsRequest{PoolId: "p1", Since: mid, Until: mid})
	require.NoError(t, err)
	_, err = stream.Recv()
	requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "until")
}

func TestRunJob(t *testing.T) {
	ctx, b := start(t)
	b.fill(t, &dispenserv1.Pool{Id: "p1", RefillBatchSize: 10}, 25)
	resp, err := b.admin.RunJob(ctx, &dispenserv1.RunJobRequest{Job: dispenserv1.Job_JOB_RECONCILE})
	require.NoError(t, err)
	require.Len(t, resp.GetPools(), 1)
	require.True(t, resp.GetPools()[0].GetBalanced())
	require.Empty(t, resp.GetPools()[0].GetError())

	// Redis loses the pool; a reconcile with the default grace leaves the
	// young batch alone, and the refill stages more.
	require.NoError(t, b.rdb.Del(ctx, b.keys.Staged("p1")).Err())
	resp, err = b.admin.RunJob(ctx, &dispenserv1.RunJobRequest{Job: dispenserv1.Job_JOB_REFILL, PoolId: "p1"})
	require.NoError(t, err)
	require.EqualValues(t, 10, resp.GetPools()[0].GetStaged())

	_, err = b.admin.RunJob(ctx, &dispenserv1.RunJobRequest{})
	requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "job")
	_, err = b.admin.RunJob(ctx, &dispenserv1.RunJobRequest{Job: dispenserv1.Job_JOB_REFILL, PoolId: "nope"})
	requireStatus(t, err, codes.NotFound, dispenser.ReasonPoolNotFound, "")
}

// Codes voided while staged in Redis are never handed out, and the pool
// still balances.
func TestVoidCodesWhileStaged(t *testing.T) {
	ctx, b := start(t)
	b.fill(t, &dispenserv1.Pool{Id: "p1"}, 6)
	var recalled []string
	for i := range 3 {
		recalled = append(recalled, fmt.Sprintf("p1-SECRET-%05d", 2*i))
	}
	resp, err := b.admin.VoidCodes(ctx, &dispenserv1.VoidCodesRequest{PoolId: "p1", Codes: recalled, Reason: "recall"})
	require.NoError(t, err)
	require.EqualValues(t, 3, resp.GetVoided())
	got := map[string]bool{}
	for i := range 6 {
		res, err := b.claimCode(fmt.Sprint("u", i), fmt.Sprint("r", i))
		if err != nil {
			requireStatus(t, err, codes.ResourceExhausted, dispenser.ReasonPoolExhausted, "")
			continue
		}
		got[res.GetClaim().GetCode()] = true
	}
	require.Len(t, got, 3)
	for _, c := range recalled {
		require.False(t, got[c], "voided code handed out")
	}
	_, err = b.admin.VoidCodes(ctx, &dispenserv1.VoidCodesRequest{PoolId: "p1", Reason: "recall"})
	requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "codes")
	stats, err := b.admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: "p1"})
	require.NoError(t, err)
	require.True(t, stats.GetStats().GetBalanced())
	require.EqualValues(t, 3, stats.GetStats().GetVoid())
}

// Over the API: a request id another user holds is AlreadyExists with
// REQUEST_ID_REUSED, revealing nothing; GetClaim with user_id says the same;
// a caller's "prize:<id>" is an ordinary request id, and a prize's claim
// lists with its prize_id and no request id.
func TestRequestIDReusedOverTheAPI(t *testing.T) {
	ctx, b := start(t)
	b.fill(t, &dispenserv1.Pool{Id: "p1", PerUserLimit: 2}, 10)

	alice, err := b.claimCode("alice", "order-77")
	require.NoError(t, err)
	for range 2 {
		resp, err := b.claimCode("eve", "order-77")
		requireStatus(t, err, codes.AlreadyExists, dispenser.ReasonRequestReused, "")
		require.Nil(t, resp)
		require.NotContains(t, err.Error(), alice.GetClaim().GetCode())
		require.NotContains(t, err.Error(), "alice")
	}
	_, err = b.claim.GetClaim(ctx, &dispenserv1.GetClaimRequest{PoolId: "p1", RequestId: "order-77", UserId: "eve"})
	requireStatus(t, err, codes.AlreadyExists, dispenser.ReasonRequestReused, "")
	got, err := b.claim.GetClaim(ctx, &dispenserv1.GetClaimRequest{PoolId: "p1", RequestId: "order-77", UserId: "alice"})
	require.NoError(t, err)
	require.Equal(t, alice.GetClaim().GetCode(), got.GetClaim().GetCode())
	_, err = b.claim.GetClaim(ctx, &dispenserv1.GetClaimRequest{PoolId: "p1", RequestId: "order-77", UserId: "bad\x01user"})
	requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "user_id")

	// A refused request id is its user's too.
	_, err = b.claimCode("alice", "order-78")
	require.NoError(t, err)
	_, err = b.claimCode("alice", "order-79")
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonUserLimit, "")
	_, err = b.claimCode("mallory", "order-79")
	requireStatus(t, err, codes.AlreadyExists, dispenser.ReasonRequestReused, "")

	// Prize ids: the reserved form is refused, "prize:1" is a caller's own.
	_, err = b.claimCode("mallory", "\x01prize:1")
	requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "request_id")
	own, err := b.claimCode("mallory", "prize:1")
	require.NoError(t, err)
	require.Equal(t, "prize:1", own.GetClaim().GetRequestId())
	require.Empty(t, own.GetClaim().GetPrizeId())
}
