package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func (a *app) jobsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "jobs", Short: "Run scheduled jobs now"}
	var poolID string
	run := &cobra.Command{
		Use:   "run refill|reconcile|deliver|expire-holds",
		Short: "Run a job once, on the server, and show what it did",
		Long: `Runs a job once on the server you reach, for every pool or one (--pool), and
waits for it. refill stages available codes into Redis for pools below their
low-water mark; reconcile voids expired codes and returns to available the
staged codes Redis lost or that stayed in flight past the grace period;
deliver assigns codes to ready prizes and sends them to the pools' webhooks,
retrying until each is delivered or parked (the nightly run, now);
expire-holds ends the reservations whose hold ran out and puts their codes
back (it runs every second anyway). If another replica is running the job,
it waits for that run first.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"refill", "reconcile", "deliver", "expire-holds"},
		RunE: func(cmd *cobra.Command, args []string) error {
			var job dispenserv1.Job
			switch args[0] {
			case "refill":
				job = dispenserv1.Job_JOB_REFILL
			case "reconcile":
				job = dispenserv1.Job_JOB_RECONCILE
			case "deliver":
				job = dispenserv1.Job_JOB_DELIVER
			case "expire-holds":
				job = dispenserv1.Job_JOB_EXPIRE_HOLDS
			default:
				return fmt.Errorf("unknown job %q: want refill, reconcile, deliver or expire-holds", args[0])
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			resp, err := call(a, cmd.Context(), c.RunJob, &dispenserv1.RunJobRequest{Job: job, PoolId: poolID})
			if err != nil {
				return err
			}
			if a.asJSON {
				return a.printJSON(resp)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
			if job == dispenserv1.Job_JOB_DELIVER {
				fmt.Fprintln(tw, "POOL\tASSIGNED\tDELIVERED\tRETRIES\tPARKED")
				for _, p := range resp.GetPools() {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", p.GetPoolId(), p.GetPrizesAssigned(), p.GetPrizesDelivered(),
						p.GetDeliveryRetries(), p.GetPrizesParked())
				}
				return tw.Flush()
			}
			if job == dispenserv1.Job_JOB_EXPIRE_HOLDS {
				fmt.Fprintln(tw, "POOL\tHOLDS_EXPIRED")
				for _, p := range resp.GetPools() {
					fmt.Fprintf(tw, "%s\t%d\n", p.GetPoolId(), p.GetHoldsExpired())
				}
				return tw.Flush()
			}
			fmt.Fprintln(tw, "POOL\tSTAGED\tEXPIRED\tRETURNED\tBALANCED\tERROR")
			failed := false
			for _, p := range resp.GetPools() {
				returned := p.GetReturnedLostBatches() + p.GetReturnedStale() + p.GetReturnedOrphans() + p.GetReturnedDroppedShards()
				balanced := "-"
				if job == dispenserv1.Job_JOB_RECONCILE {
					balanced = fmt.Sprint(p.GetBalanced())
				}
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\n", p.GetPoolId(), p.GetStaged(), p.GetExpired(), returned, balanced, p.GetError())
				failed = failed || p.GetError() != ""
			}
			_ = tw.Flush()
			if failed {
				return exitError{}
			}
			return nil
		},
	}
	run.Flags().StringVar(&poolID, "pool", "", "only this pool")
	cmd.AddCommand(run)
	return cmd
}

func (a *app) claimCmd() *cobra.Command {
	var poolID, userID, requestID string
	cmd := &cobra.Command{
		Use:   "claim --pool ID --user USER --request REQUEST_ID",
		Short: "Claim one code, as a lottery backend would (prints the code)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := a.dial()
			if err != nil {
				return err
			}
			c := dispenserv1.NewClaimServiceClient(conn)
			resp, err := call(a, cmd.Context(), c.ClaimCode, &dispenserv1.ClaimCodeRequest{PoolId: poolID, UserId: userID, RequestId: requestID})
			if err != nil {
				return err
			}
			if a.asJSON {
				return a.printJSON(resp)
			}
			replay := ""
			if resp.GetReplayed() {
				replay = " (replayed)"
			}
			fmt.Fprintf(a.stdout, "%s%s\n", resp.GetClaim().GetCode(), replay)
			return nil
		},
	}
	cmd.Flags().StringVar(&poolID, "pool", "", "the pool")
	cmd.Flags().StringVar(&userID, "user", "", "the user")
	cmd.Flags().StringVar(&requestID, "request", "", "the idempotency key")
	for _, f := range []string{"pool", "user", "request"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}
