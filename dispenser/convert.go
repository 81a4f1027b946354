package dispenser

import (
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/dispenserhq/dispenser/pool"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func timeOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// timeFromProto converts an optional timestamp; nil is the zero time.
func timeFromProto(field string, ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, &pool.FieldError{Field: field, Description: "is not a valid timestamp"}
	}
	return ts.AsTime(), nil
}

// durationFromProto converts an optional duration; nil is zero.
func durationFromProto(field string, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, &pool.FieldError{Field: field, Description: "is not a valid duration"}
	}
	return d.AsDuration(), nil
}

// poolToProto converts a stored pool. The webhook secret never leaves.
func poolToProto(p pool.Pool) *dispenserv1.Pool {
	return &dispenserv1.Pool{
		Id:               p.ID,
		DisplayName:      p.DisplayName,
		Paused:           p.Paused,
		ClaimStartsAt:    timeOrNil(p.ClaimStartsAt),
		ClaimEndsAt:      timeOrNil(p.ClaimEndsAt),
		PerUserLimit:     int32(p.PerUserLimit),
		RefillLowWater:   int32(p.RefillLowWater),
		RefillBatchSize:  int32(p.RefillBatchSize),
		WebhookUrl:       p.WebhookURL,
		WebhookSecretSet: p.WebhookSecret != "",
		HoldDefault:      durationpb.New(p.HoldDefault),
		HoldMax:          durationpb.New(p.HoldMax),
		HoldsPerUser:     int32(p.HoldsPerUser),
		RedisShards:      int32(p.RedisShards),
		CreateTime:       timeOrNil(p.CreatedAt),
		UpdateTime:       timeOrNil(p.UpdatedAt),
	}
}

// poolFromProto reads the input fields of a pool; output-only fields are
// ignored.
func poolFromProto(in *dispenserv1.Pool) (pool.Pool, error) {
	starts, err := timeFromProto("pool.claim_starts_at", in.GetClaimStartsAt())
	if err != nil {
		return pool.Pool{}, err
	}
	ends, err := timeFromProto("pool.claim_ends_at", in.GetClaimEndsAt())
	if err != nil {
		return pool.Pool{}, err
	}
	holdDefault, err := durationFromProto("pool.hold_default", in.GetHoldDefault())
	if err != nil {
		return pool.Pool{}, err
	}
	holdMax, err := durationFromProto("pool.hold_max", in.GetHoldMax())
	if err != nil {
		return pool.Pool{}, err
	}
	return pool.Pool{
		HoldDefault:     holdDefault,
		HoldMax:         holdMax,
		HoldsPerUser:    int(in.GetHoldsPerUser()),
		RedisShards:     int(in.GetRedisShards()),
		ID:              in.GetId(),
		DisplayName:     in.GetDisplayName(),
		Paused:          in.GetPaused(),
		ClaimStartsAt:   starts,
		ClaimEndsAt:     ends,
		PerUserLimit:    int(in.GetPerUserLimit()),
		RefillLowWater:  int(in.GetRefillLowWater()),
		RefillBatchSize: int(in.GetRefillBatchSize()),
		WebhookURL:      in.GetWebhookUrl(),
		WebhookSecret:   in.GetWebhookSecret(),
	}, nil
}

// applyMask copies the fields named in paths from in onto p.
func applyMask(p *pool.Pool, in pool.Pool, paths []string) error {
	if len(paths) == 0 {
		return &pool.FieldError{Field: "update_mask", Description: "must name at least one field"}
	}
	for _, path := range paths {
		switch path {
		case "display_name":
			p.DisplayName = in.DisplayName
		case "paused":
			p.Paused = in.Paused
		case "claim_starts_at":
			p.ClaimStartsAt = in.ClaimStartsAt
		case "claim_ends_at":
			p.ClaimEndsAt = in.ClaimEndsAt
		case "per_user_limit":
			p.PerUserLimit = in.PerUserLimit
		case "refill_low_water":
			p.RefillLowWater = in.RefillLowWater
		case "refill_batch_size":
			p.RefillBatchSize = in.RefillBatchSize
		case "webhook_url":
			p.WebhookURL = in.WebhookURL
		case "webhook_secret":
			p.WebhookSecret = in.WebhookSecret
		case "hold_default":
			p.HoldDefault = in.HoldDefault
		case "hold_max":
			p.HoldMax = in.HoldMax
		case "holds_per_user":
			p.HoldsPerUser = in.HoldsPerUser
		case "redis_shards":
			p.RedisShards = in.RedisShards
		default:
			return &pool.FieldError{Field: "update_mask", Description: "cannot update " + strconv.Quote(path)}
		}
	}
	return nil
}

func statsToProto(st pool.Stats) *dispenserv1.PoolStats {
	return &dispenserv1.PoolStats{
		PoolId:    st.PoolID,
		Imported:  st.Imported,
		Available: st.Available,
		Staged:    st.Staged,
		Claimed:   st.Claimed,
		Void:      st.Void,
		Held:      st.Held,
		HoldsDue:  st.HoldsDue,
		Balanced:  st.Balanced(),
		Imports:   st.Imports,
		Claimants: st.Claimants,
		Prizes: &dispenserv1.PrizeCounts{
			Pending: st.Prizes.Pending, Ready: st.Prizes.Ready, Assigned: st.Prizes.Assigned,
			Delivered: st.Prizes.Delivered, Failed: st.Prizes.Failed, Cancelled: st.Prizes.Cancelled,
		},
		ReadTime: timestamppb.New(st.ReadAt),
	}
}

func summaryToProto(s pool.ImportSummary) *dispenserv1.ImportCodesResponse {
	out := &dispenserv1.ImportCodesResponse{
		ImportId:         s.ID,
		Lines:            s.Lines,
		Inserted:         s.Inserted,
		DuplicatesInFile: s.DuplicatesInFile,
		DuplicatesInPool: s.DuplicatesInPool,
		Invalid:          s.Invalid,
		Bytes:            s.Bytes,
	}
	for _, l := range s.InvalidLines {
		out.InvalidLines = append(out.InvalidLines, &dispenserv1.InvalidLine{Line: l.Line, Reason: l.Reason})
	}
	return out
}
