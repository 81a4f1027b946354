package dispenser_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/dispenserhq/dispenser/dispenser"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func (b *bundle) reserve(user, req string, hold time.Duration) (*dispenserv1.ReserveCodeResponse, error) {
	r := &dispenserv1.ReserveCodeRequest{PoolId: "p1", UserId: user, RequestId: req}
	if hold != 0 {
		r.HoldFor = durationpb.New(hold)
	}
	return b.claim.ReserveCode(context.Background(), r)
}

func TestReserveConfirmCancelOverTheAPI(t *testing.T) {
	ctx, b := start(t)
	b.fill(t, &dispenserv1.Pool{Id: "p1", PerUserLimit: 3, HoldsPerUser: 1, HoldMax: durationpb.New(time.Hour)}, 3)

	r, err := b.reserve("alice", "cart-1", 0)
	require.NoError(t, err)
	res := r.GetReservation()
	require.Equal(t, dispenserv1.ReservationState_RESERVATION_STATE_HELD, res.GetState())
	require.Equal(t, "alice", res.GetUserId())
	require.Equal(t, "cart-1", res.GetRequestId())
	require.InDelta(t, 10*time.Minute, res.GetExpireTime().AsTime().Sub(res.GetReserveTime().AsTime()), float64(time.Second))
	require.False(t, r.GetReplayed())

	// Nothing shows the held code.
	_, err = b.claimCode("alice", "cart-1")
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonReservationPending, "")
	_, err = b.claim.GetClaim(ctx, &dispenserv1.GetClaimRequest{PoolId: "p1", RequestId: "cart-1"})
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonReservationPending, "")
	st, err := b.admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: "p1"})
	require.NoError(t, err)
	require.EqualValues(t, 1, st.GetStats().GetHeld())
	require.True(t, st.GetStats().GetBalanced())

	c, err := b.claim.ConfirmReservation(ctx, &dispenserv1.ConfirmReservationRequest{PoolId: "p1", RequestId: "cart-1", UserId: "alice"})
	require.NoError(t, err)
	require.Regexp(t, `^p1-SECRET-\d{5}$`, c.GetClaim().GetCode())
	require.False(t, c.GetReplayed())
	again, err := b.claim.ConfirmReservation(ctx, &dispenserv1.ConfirmReservationRequest{PoolId: "p1", RequestId: "cart-1"})
	require.NoError(t, err)
	require.True(t, again.GetReplayed())
	require.Equal(t, c.GetClaim().GetCode(), again.GetClaim().GetCode())
	rr, err := b.reserve("alice", "cart-1", 0)
	require.NoError(t, err)
	require.Equal(t, dispenserv1.ReservationState_RESERVATION_STATE_CONFIRMED, rr.GetReservation().GetState())
	require.NotNil(t, rr.GetReservation().GetConfirmTime())
	_, err = b.claim.CancelReservation(ctx, &dispenserv1.CancelReservationRequest{PoolId: "p1", RequestId: "cart-1"})
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonReservationConfirmed, "")

	// Cancel: the code is back at once.
	_, err = b.reserve("bob", "cart-2", 30*time.Second)
	require.NoError(t, err)
	cancel, err := b.claim.CancelReservation(ctx, &dispenserv1.CancelReservationRequest{PoolId: "p1", RequestId: "cart-2", UserId: "bob"})
	require.NoError(t, err)
	require.Equal(t, dispenserv1.ReservationState_RESERVATION_STATE_CANCELLED, cancel.GetReservation().GetState())
	_, err = b.claim.ConfirmReservation(ctx, &dispenserv1.ConfirmReservationRequest{PoolId: "p1", RequestId: "cart-2"})
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonReservationCancelled, "")

	// Expiry through the job.
	r, err = b.reserve("carol", "cart-3", time.Second)
	require.NoError(t, err)
	time.Sleep(time.Until(r.GetReservation().GetExpireTime().AsTime()) + 50*time.Millisecond)
	job, err := b.admin.RunJob(ctx, &dispenserv1.RunJobRequest{Job: dispenserv1.Job_JOB_EXPIRE_HOLDS})
	require.NoError(t, err)
	require.Len(t, job.GetPools(), 1)
	require.EqualValues(t, 1, job.GetPools()[0].GetHoldsExpired())
	_, err = b.claim.ConfirmReservation(ctx, &dispenserv1.ConfirmReservationRequest{PoolId: "p1", RequestId: "cart-3"})
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonReservationExpired, "")

	// Refusals a caller can act on.
	_, err = b.reserve("dave", "d1", 2*time.Hour)
	requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "hold_for")
	_, err = b.claim.ReserveCode(ctx, &dispenserv1.ReserveCodeRequest{PoolId: "p1", UserId: "dave", RequestId: "d1",
		HoldFor: durationpb.New(-time.Second)})
	requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "hold_for")
	_, err = b.reserve("alice", "d1", 0)
	require.NoError(t, err)
	_, err = b.reserve("dave", "d1", 0)
	requireStatus(t, err, codes.AlreadyExists, dispenser.ReasonRequestReused, "")
	_, err = b.reserve("alice", "d2", 0)
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonHoldLimit, "")
	_, err = b.claim.ConfirmReservation(ctx, &dispenserv1.ConfirmReservationRequest{PoolId: "p1", RequestId: "nope"})
	requireStatus(t, err, codes.NotFound, dispenser.ReasonReservationNotFound, "")
	_, err = b.claim.ConfirmReservation(ctx, &dispenserv1.ConfirmReservationRequest{PoolId: "p1", RequestId: ""})
	requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "request_id")
	// Holds count toward per_user_limit: cart-1, d1 and plain make three.
	_, err = b.claimCode("alice", "plain")
	require.NoError(t, err)
	_, err = b.claimCode("alice", "plain-2")
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonUserLimit, "")
	st, err = b.admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: "p1"})
	require.NoError(t, err)
	require.True(t, st.GetStats().GetBalanced())
}

func TestPoolHoldSettings(t *testing.T) {
	ctx, b := start(t)
	created, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "p1"}})
	require.NoError(t, err)
	p := created.GetPool()
	require.Equal(t, 10*time.Minute, p.GetHoldDefault().AsDuration())
	require.Equal(t, time.Hour, p.GetHoldMax().AsDuration())
	require.EqualValues(t, 1, p.GetHoldsPerUser())

	up, err := b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{
		Pool:       &dispenserv1.Pool{Id: "p1", HoldDefault: durationpb.New(15 * time.Minute), HoldMax: durationpb.New(2 * time.Hour), HoldsPerUser: 3},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"hold_default", "hold_max", "holds_per_user"}},
	})
	require.NoError(t, err)
	require.Equal(t, 15*time.Minute, up.GetPool().GetHoldDefault().AsDuration())
	require.Equal(t, 2*time.Hour, up.GetPool().GetHoldMax().AsDuration())
	require.EqualValues(t, 3, up.GetPool().GetHoldsPerUser())

	for _, bad := range []struct {
		pool  *dispenserv1.Pool
		path  string
		field string
	}{
		{&dispenserv1.Pool{Id: "p1", HoldDefault: durationpb.New(3 * time.Hour)}, "hold_default", "pool.hold_default"},
		{&dispenserv1.Pool{Id: "p1", HoldMax: durationpb.New(48 * time.Hour)}, "hold_max", "pool.hold_max"},
		{&dispenserv1.Pool{Id: "p1", HoldMax: durationpb.New(1500 * time.Millisecond)}, "hold_max", "pool.hold_max"},
		{&dispenserv1.Pool{Id: "p1", HoldsPerUser: 1001}, "holds_per_user", "pool.holds_per_user"},
		{&dispenserv1.Pool{Id: "p1", HoldsPerUser: 0}, "holds_per_user", "pool.holds_per_user"},
	} {
		_, err := b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{Pool: bad.pool,
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{bad.path}}})
		requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, bad.field)
	}
}

// generate runs GenerateCodes to its end and returns the summary and the
// progress messages seen.
func (b *bundle) generate(ctx context.Context, req *dispenserv1.GenerateCodesRequest) (*dispenserv1.GenerateCodesSummary, int, error) {
	s, err := b.admin.GenerateCodes(ctx, req)
	if err != nil {
		return nil, 0, err
	}
	msgs := 0
	for {
		m, err := s.Recv()
		if err != nil {
			return nil, msgs, err
		}
		msgs++
		if m.GetSummary() != nil {
			return m.GetSummary(), msgs, nil
		}
	}
}

func TestGenerateCodesOverTheAPI(t *testing.T) {
	ctx, b := start(t)
	b.createPool(t, "p1")
	sum, _, err := b.generate(ctx, &dispenserv1.GenerateCodesRequest{PoolId: "p1", Count: 2000, Pattern: "GIFT-####-####-####",
		Charset: dispenserv1.CodeCharset_CODE_CHARSET_DIGITS})
	require.NoError(t, err)
	require.EqualValues(t, 2000, sum.GetInserted())
	require.InDelta(t, 39.86, sum.GetEntropyBits(), 0.01)
	st, err := b.admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: "p1"})
	require.NoError(t, err)
	require.EqualValues(t, 2000, st.GetStats().GetAvailable())

	// Generated codes are claimed like imported ones.
	_, err = b.admin.RunJob(ctx, &dispenserv1.RunJobRequest{Job: dispenserv1.Job_JOB_REFILL, PoolId: "p1"})
	require.NoError(t, err)
	c, err := b.claimCode("alice", "r1")
	require.NoError(t, err)
	require.Regexp(t, `^GIFT-\d{4}-\d{4}-\d{4}$`, c.GetClaim().GetCode())

	// Voided as a whole: all but the claimed one.
	v, err := b.admin.VoidCodes(ctx, &dispenserv1.VoidCodesRequest{PoolId: "p1", ImportId: sum.GetImportId(), Reason: "campaign off"})
	require.NoError(t, err)
	require.EqualValues(t, 1999, v.GetVoided())
	require.EqualValues(t, 1, v.GetClaimed())

	for _, bad := range []struct {
		req   *dispenserv1.GenerateCodesRequest
		field string
	}{
		{&dispenserv1.GenerateCodesRequest{PoolId: "p1", Count: 10, Pattern: "SALE-##"}, "pattern"},
		{&dispenserv1.GenerateCodesRequest{PoolId: "p1", Count: 10, Pattern: "####-####-####", Charset: dispenserv1.CodeCharset_CODE_CHARSET_CUSTOM}, "custom_charset"},
		{&dispenserv1.GenerateCodesRequest{PoolId: "p1", Count: 10, Pattern: "####-####-####", Charset: dispenserv1.CodeCharset_CODE_CHARSET_CUSTOM, CustomCharset: "AA"}, "custom_charset"},
		{&dispenserv1.GenerateCodesRequest{PoolId: "p1", Count: 10, Pattern: "####-####-####", CustomCharset: "ABC"}, "custom_charset"},
		{&dispenserv1.GenerateCodesRequest{PoolId: "p1", Count: 10, Pattern: "####-####-####", Charset: 99}, "charset"},
		{&dispenserv1.GenerateCodesRequest{PoolId: "p1", Count: -1, Pattern: "####-####-####"}, "count"},
		{&dispenserv1.GenerateCodesRequest{PoolId: "p1", Count: 10, Pattern: "####-####-####", SafetyFactor: 1}, "safety_factor"},
	} {
		_, _, err := b.generate(ctx, bad.req)
		requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, bad.field)
	}
	_, _, err = b.generate(ctx, &dispenserv1.GenerateCodesRequest{PoolId: "nope", Count: 10, Pattern: "####-####-####"})
	requireStatus(t, err, codes.NotFound, dispenser.ReasonPoolNotFound, "")
}
