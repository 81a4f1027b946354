package dispenser_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/dispenserhq/dispenser/dispenser"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func (b *bundle) prizes() dispenserv1.PrizeServiceClient {
	return dispenserv1.NewPrizeServiceClient(b.conn)
}

func TestRecordPrizeIdempotent(t *testing.T) {
	ctx, b := start(t)
	b.createPool(t, "p1")
	pc := b.prizes()
	req := &dispenserv1.RecordPrizeRequest{PoolId: "p1", UserId: "alice", ExternalId: "draw-7/win-1",
		MetadataJson: `{"tier": "gold", "draw": 7}`}
	first, err := pc.RecordPrize(ctx, req)
	require.NoError(t, err)
	require.True(t, first.GetCreated())
	require.Equal(t, dispenserv1.PrizeState_PRIZE_STATE_PENDING, first.GetPrize().GetState())
	require.JSONEq(t, `{"tier": "gold", "draw": 7}`, first.GetPrize().GetMetadataJson())

	// The same win again, metadata spelt differently but equal as JSON.
	req.MetadataJson = `{"draw":7,"tier":"gold"}`
	again, err := pc.RecordPrize(ctx, req)
	require.NoError(t, err)
	require.False(t, again.GetCreated())
	require.Equal(t, first.GetPrize().GetId(), again.GetPrize().GetId())

	req.UserId = "mallory"
	_, err = pc.RecordPrize(ctx, req)
	requireStatus(t, err, codes.AlreadyExists, dispenser.ReasonPrizeConflict, "")

	for field, bad := range map[string]*dispenserv1.RecordPrizeRequest{
		"pool_id":       {PoolId: "", UserId: "u", ExternalId: "x"},
		"user_id":       {PoolId: "p1", UserId: "", ExternalId: "x"},
		"external_id":   {PoolId: "p1", UserId: "u", ExternalId: strings.Repeat("x", 129)},
		"metadata_json": {PoolId: "p1", UserId: "u", ExternalId: "x", MetadataJson: `[1, 2]`},
	} {
		_, err := pc.RecordPrize(ctx, bad)
		requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, field)
	}
	_, err = pc.RecordPrize(ctx, &dispenserv1.RecordPrizeRequest{PoolId: "p1", UserId: "u", ExternalId: "x",
		MetadataJson: `{"k": "` + strings.Repeat("v", 17<<10) + `"}`})
	requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "metadata_json")
	_, err = pc.RecordPrize(ctx, &dispenserv1.RecordPrizeRequest{PoolId: "p1", UserId: "u", ExternalId: "x",
		MetadataJson: `{"k": "\u0000"}`})
	requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "metadata_json")
	_, err = pc.RecordPrize(ctx, &dispenserv1.RecordPrizeRequest{PoolId: "nope", UserId: "u", ExternalId: "x"})
	requireStatus(t, err, codes.NotFound, dispenser.ReasonPoolNotFound, "")
}

func TestPrizeTransitions(t *testing.T) {
	ctx, b := start(t)
	b.createPool(t, "p1")
	pc := b.prizes()
	record := func(ext string) string {
		t.Helper()
		r, err := pc.RecordPrize(ctx, &dispenserv1.RecordPrizeRequest{PoolId: "p1", UserId: "u-" + ext, ExternalId: ext})
		require.NoError(t, err)
		return r.GetPrize().GetId()
	}
	id := record("a")
	ready, err := pc.MarkPrizeReady(ctx, &dispenserv1.MarkPrizeReadyRequest{PrizeId: id, DetailsJson: `{"phone": "+1555"}`})
	require.NoError(t, err)
	require.Equal(t, dispenserv1.PrizeState_PRIZE_STATE_READY, ready.GetPrize().GetState())
	require.NotNil(t, ready.GetPrize().GetReadyTime())
	// The same call again is a no-op; other details are refused.
	_, err = pc.MarkPrizeReady(ctx, &dispenserv1.MarkPrizeReadyRequest{PrizeId: id, DetailsJson: `{"phone":"+1555"}`})
	require.NoError(t, err)
	_, err = pc.MarkPrizeReady(ctx, &dispenserv1.MarkPrizeReadyRequest{PrizeId: id, DetailsJson: `{"phone": "+1666"}`})
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonPrizeState, "")

	cancelled, err := pc.CancelPrize(ctx, &dispenserv1.CancelPrizeRequest{PrizeId: id})
	require.NoError(t, err)
	require.Equal(t, dispenserv1.PrizeState_PRIZE_STATE_CANCELLED, cancelled.GetPrize().GetState())
	_, err = pc.CancelPrize(ctx, &dispenserv1.CancelPrizeRequest{PrizeId: id})
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonPrizeState, "")
	_, err = pc.MarkPrizeReady(ctx, &dispenserv1.MarkPrizeReadyRequest{PrizeId: id})
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonPrizeState, "")
	_, err = pc.RetryDelivery(ctx, &dispenserv1.RetryDeliveryRequest{PrizeId: id})
	requireStatus(t, err, codes.FailedPrecondition, dispenser.ReasonPrizeState, "")

	// A parked prize without a code goes back to ready.
	parked := record("b")
	_, err = b.db.Pool.Exec(ctx, `UPDATE prizes SET state = 'failed', park_reason = 'POOL_EXHAUSTED' WHERE id = $1::bigint`, parked)
	require.NoError(t, err)
	got, err := pc.GetPrize(ctx, &dispenserv1.GetPrizeRequest{PrizeId: parked})
	require.NoError(t, err)
	require.Equal(t, "POOL_EXHAUSTED", got.GetPrize().GetParkReason())
	retried, err := pc.RetryDelivery(ctx, &dispenserv1.RetryDeliveryRequest{PrizeId: parked})
	require.NoError(t, err)
	require.Equal(t, dispenserv1.PrizeState_PRIZE_STATE_READY, retried.GetPrize().GetState())
	require.Empty(t, retried.GetPrize().GetParkReason())

	for _, bad := range []string{"", "x", "-3", "0"} {
		_, err := pc.GetPrize(ctx, &dispenserv1.GetPrizeRequest{PrizeId: bad})
		requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "prize_id")
	}
	_, err = pc.GetPrize(ctx, &dispenserv1.GetPrizeRequest{PrizeId: "999999"})
	requireStatus(t, err, codes.NotFound, dispenser.ReasonPrizeNotFound, "")
	_, err = pc.CancelPrize(ctx, &dispenserv1.CancelPrizeRequest{PrizeId: "999999"})
	requireStatus(t, err, codes.NotFound, dispenser.ReasonPrizeNotFound, "")
}

// A parked prize that already has a code goes back to assigned, to be sent
// again with the same code and delivery id.
func TestRetryAssignedPrize(t *testing.T) {
	ctx, b := start(t)
	b.fill(t, &dispenserv1.Pool{Id: "p1"}, 3)
	pc := b.prizes()
	r, err := pc.RecordPrize(ctx, &dispenserv1.RecordPrizeRequest{PoolId: "p1", UserId: "w", ExternalId: "e1"})
	require.NoError(t, err)
	id := r.GetPrize().GetId()
	claimed, err := b.claimCode("w", "prize:"+id)
	require.NoError(t, err)
	_, err = b.db.Pool.Exec(ctx, `WITH c AS (SELECT id FROM claims WHERE request_id = $2)
		UPDATE prizes SET state = 'failed', claim_id = (SELECT id FROM c), park_reason = 'WEBHOOK_FAILED' WHERE id = $1::bigint`,
		id, "prize:"+id)
	require.NoError(t, err)
	_, err = b.db.Pool.Exec(ctx, `INSERT INTO deliveries (id, prize_id, attempts, last_error)
		VALUES ('6f1c2b0e-8b7a-4f55-9a52-0d5d1f3f7e11', $1::bigint, 5, 'HTTP 503')`, id)
	require.NoError(t, err)
	retried, err := pc.RetryDelivery(ctx, &dispenserv1.RetryDeliveryRequest{PrizeId: id})
	require.NoError(t, err)
	p := retried.GetPrize()
	require.Equal(t, dispenserv1.PrizeState_PRIZE_STATE_ASSIGNED, p.GetState())
	require.Equal(t, claimed.GetClaim().GetCode(), p.GetCode())
	require.Equal(t, "6f1c2b0e-8b7a-4f55-9a52-0d5d1f3f7e11", p.GetDeliveryId())
	require.Zero(t, p.GetAttempts())
	require.NotNil(t, p.GetNextAttemptTime())
}

func TestListPrizes(t *testing.T) {
	ctx, b := start(t)
	b.createPool(t, "p1")
	pc := b.prizes()
	for i := range 7 {
		r, err := pc.RecordPrize(ctx, &dispenserv1.RecordPrizeRequest{PoolId: "p1", UserId: "u", ExternalId: fmt.Sprint("e", i)})
		require.NoError(t, err)
		if i%2 == 0 {
			_, err = pc.MarkPrizeReady(ctx, &dispenserv1.MarkPrizeReadyRequest{PrizeId: r.GetPrize().GetId()})
			require.NoError(t, err)
		}
	}
	var ready []string
	token := ""
	for {
		page, err := pc.ListPrizes(ctx, &dispenserv1.ListPrizesRequest{PoolId: "p1", State: dispenserv1.PrizeState_PRIZE_STATE_READY,
			PageSize: 3, PageToken: token})
		require.NoError(t, err)
		for _, p := range page.GetPrizes() {
			require.Equal(t, dispenserv1.PrizeState_PRIZE_STATE_READY, p.GetState())
			ready = append(ready, p.GetExternalId())
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	require.Equal(t, []string{"e0", "e2", "e4", "e6"}, ready)
	all, err := pc.ListPrizes(ctx, &dispenserv1.ListPrizesRequest{PoolId: "p1"})
	require.NoError(t, err)
	require.Len(t, all.GetPrizes(), 7)
	_, err = pc.ListPrizes(ctx, &dispenserv1.ListPrizesRequest{PoolId: "p1", PageToken: "bogus"})
	requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "page_token")
	_, err = pc.ListPrizes(ctx, &dispenserv1.ListPrizesRequest{PoolId: "nope"})
	requireStatus(t, err, codes.NotFound, dispenser.ReasonPoolNotFound, "")

	stats, err := b.admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: "p1"})
	require.NoError(t, err)
	require.EqualValues(t, 4, stats.GetStats().GetPrizes().GetReady())
	require.EqualValues(t, 3, stats.GetStats().GetPrizes().GetPending())
}
