package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func (a *app) poolsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "pools", Short: "Create, change and inspect pools"}
	cmd.AddCommand(a.poolsCreateCmd(), a.poolsUpdateCmd(), a.poolsGetCmd(), a.poolsListCmd(), a.poolsStatsCmd())
	return cmd
}

// poolFlags are the settings create and update share.
type poolFlags struct {
	name, startsAt, endsAt, webhookURL, webhookSecret string
	limit, lowWater, batchSize, holdsPerUser, shards  int32
	holdDefault, holdMax                              time.Duration
}

func (pf *poolFlags) register(f *pflag.FlagSet) {
	f.StringVar(&pf.name, "name", "", "display name")
	f.Int32Var(&pf.limit, "limit", 0, "most claims one user may hold (default 1)")
	f.Int32Var(&pf.lowWater, "low-water", 0, "refill Redis when fewer codes than this are staged (default 1000)")
	f.Int32Var(&pf.batchSize, "batch-size", 0, "codes staged per refill (default 5000)")
	f.StringVar(&pf.startsAt, "starts-at", "", `claims open at this RFC 3339 time ("none" clears)`)
	f.StringVar(&pf.endsAt, "ends-at", "", `claims close at this RFC 3339 time ("none" clears)`)
	f.StringVar(&pf.webhookURL, "webhook-url", "", "prize delivery webhook (http or https)")
	f.StringVar(&pf.webhookSecret, "webhook-secret", "", "HMAC key signing deliveries, at least 16 bytes")
	f.DurationVar(&pf.holdDefault, "hold-default", 0, "how long a reservation holds its code unless it asks (default 10m)")
	f.DurationVar(&pf.holdMax, "hold-max", 0, "the longest hold a reservation may ask for (default 1h)")
	f.Int32Var(&pf.holdsPerUser, "holds-per-user", 0, "reservations one user may have open at once (default 1)")
	f.Int32Var(&pf.shards, "redis-shards", 0, "Redis shards (hash tags) the staged codes spread over, 1 to 64 (default 1)")
}

func parseTimeFlag(name, v string) (*timestamppb.Timestamp, error) {
	if v == "" || v == "none" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return nil, fmt.Errorf("--%s: want an RFC 3339 time like 2026-12-24T18:00:00Z", name)
	}
	return timestamppb.New(t), nil
}

// toPool builds a pool from the flags; for update it also returns the mask of
// the flags that were given.
func (pf *poolFlags) toPool(id string, f *pflag.FlagSet) (*dispenserv1.Pool, []string, error) {
	p := &dispenserv1.Pool{Id: id, DisplayName: pf.name, PerUserLimit: pf.limit, RefillLowWater: pf.lowWater,
		RefillBatchSize: pf.batchSize, WebhookUrl: pf.webhookURL, WebhookSecret: pf.webhookSecret,
		HoldsPerUser: pf.holdsPerUser, RedisShards: pf.shards}
	if pf.holdDefault != 0 {
		p.HoldDefault = durationpb.New(pf.holdDefault)
	}
	if pf.holdMax != 0 {
		p.HoldMax = durationpb.New(pf.holdMax)
	}
	var err error
	if p.ClaimStartsAt, err = parseTimeFlag("starts-at", pf.startsAt); err != nil {
		return nil, nil, err
	}
	if p.ClaimEndsAt, err = parseTimeFlag("ends-at", pf.endsAt); err != nil {
		return nil, nil, err
	}
	fields := map[string]string{
		"name": "display_name", "limit": "per_user_limit", "low-water": "refill_low_water",
		"batch-size": "refill_batch_size", "starts-at": "claim_starts_at", "ends-at": "claim_ends_at",
		"webhook-url": "webhook_url", "webhook-secret": "webhook_secret", "pause": "paused", "resume": "paused",
		"hold-default": "hold_default", "hold-max": "hold_max", "holds-per-user": "holds_per_user",
		"redis-shards": "redis_shards",
	}
	var mask []string
	f.Visit(func(fl *pflag.Flag) {
		if path, ok := fields[fl.Name]; ok && (len(mask) == 0 || mask[len(mask)-1] != path) {
			mask = append(mask, path)
		}
	})
	return p, mask, nil
}

func (a *app) poolsCreateCmd() *cobra.Command {
	var pf poolFlags
	var paused bool
	cmd := &cobra.Command{
		Use:   "create ID",
		Short: "Create an empty pool",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, _, err := pf.toPool(args[0], cmd.Flags())
			if err != nil {
				return err
			}
			p.Paused = paused
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := call(a, cmd.Context(), c.CreatePool, &dispenserv1.CreatePoolRequest{Pool: p})
			if err != nil {
				return err
			}
			return show(a, resp.GetPool(), printPool)
		},
	}
	pf.register(cmd.Flags())
	cmd.Flags().BoolVar(&paused, "paused", false, "create the pool paused")
	return cmd
}

func (a *app) poolsUpdateCmd() *cobra.Command {
	var pf poolFlags
	var pause, resume bool
	cmd := &cobra.Command{
		Use:   "update ID",
		Short: "Change a pool's settings: only the flags given are changed",
		Example: `  dispenserctl pools update summer --pause
  dispenserctl pools update summer --resume --limit 2 --ends-at 2026-12-31T23:59:59Z
  dispenserctl pools update summer --starts-at none`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pause && resume {
				return errors.New("--pause and --resume exclude each other")
			}
			p, mask, err := pf.toPool(args[0], cmd.Flags())
			if err != nil {
				return err
			}
			if len(mask) == 0 {
				return errors.New("nothing to change: give at least one setting flag (see --help)")
			}
			p.Paused = pause
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := call(a, cmd.Context(), c.UpdatePool, &dispenserv1.UpdatePoolRequest{
				Pool: p, UpdateMask: &fieldmaskpb.FieldMask{Paths: mask},
			})
			if err != nil {
				return err
			}
			return show(a, resp.GetPool(), printPool)
		},
	}
	pf.register(cmd.Flags())
	cmd.Flags().BoolVar(&pause, "pause", false, "pause: refuse claims with POOL_PAUSED")
	cmd.Flags().BoolVar(&resume, "resume", false, "resume a paused pool")
	return cmd
}

func (a *app) poolsGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a pool's settings",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := call(a, cmd.Context(), c.GetPool, &dispenserv1.GetPoolRequest{PoolId: args[0]})
			if err != nil {
				return err
			}
			return show(a, resp.GetPool(), printPool)
		},
	}
}

func (a *app) poolsListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List every pool",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			all := &dispenserv1.ListPoolsResponse{}
			token := ""
			for {
				resp, err := call(a, cmd.Context(), c.ListPools, &dispenserv1.ListPoolsRequest{PageSize: 500, PageToken: token})
				if err != nil {
					return err
				}
				all.Pools = append(all.Pools, resp.GetPools()...)
				if token = resp.GetNextPageToken(); token == "" {
					break
				}
			}
			return show(a, all, func(w io.Writer, all *dispenserv1.ListPoolsResponse) { printPoolList(w, all.GetPools()) })
		},
	}
}

func (a *app) poolsStatsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stats ID",
		Short: "Count a pool's codes by state and check that they add up",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := call(a, cmd.Context(), c.GetPoolStats, &dispenserv1.GetPoolStatsRequest{PoolId: args[0]})
			if err != nil {
				return err
			}
			return show(a, resp.GetStats(), printStats)
		},
	}
}
