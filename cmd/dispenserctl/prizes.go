package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func (a *app) prizesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "prizes", Short: "Inspect prizes and re-queue parked deliveries"}
	cmd.AddCommand(a.prizesListCmd(), a.prizesGetCmd(), a.prizesRetryCmd())
	return cmd
}

func (a *app) prizeClient() (dispenserv1.PrizeServiceClient, error) {
	conn, err := a.dial()
	if err != nil {
		return nil, err
	}
	return dispenserv1.NewPrizeServiceClient(conn), nil
}

// enumName is a proto enum value as people write it: PRIZE_STATE_READY is
// "ready", KEY_ROLE_ADMIN is "admin".
func enumName(v fmt.Stringer, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(v.String(), prefix))
}

func stateName(s dispenserv1.PrizeState) string { return enumName(s, "PRIZE_STATE_") }

func (a *app) prizesListCmd() *cobra.Command {
	var poolID, state string
	cmd := &cobra.Command{
		Use:   "list --pool ID [--state STATE]",
		Short: "List a pool's prizes, e.g. the parked ones: --state failed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st := dispenserv1.PrizeState_PRIZE_STATE_UNSPECIFIED
			if state != "" {
				v, ok := dispenserv1.PrizeState_value["PRIZE_STATE_"+strings.ToUpper(state)]
				if !ok {
					return fmt.Errorf("--state must be pending, ready, assigned, delivered, failed or cancelled")
				}
				st = dispenserv1.PrizeState(v)
			}
			c, err := a.prizeClient()
			if err != nil {
				return err
			}
			all := &dispenserv1.ListPrizesResponse{}
			token := ""
			for {
				resp, err := call(a, cmd.Context(), c.ListPrizes, &dispenserv1.ListPrizesRequest{PoolId: poolID, State: st, PageSize: 1000, PageToken: token})
				if err != nil {
					return err
				}
				all.Prizes = append(all.Prizes, resp.GetPrizes()...)
				if token = resp.GetNextPageToken(); token == "" {
					break
				}
			}
			return show(a, all, func(w io.Writer, r *dispenserv1.ListPrizesResponse) {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSTATE\tUSER\tEXTERNAL ID\tATTEMPTS\tPARKED FOR\tLAST ERROR")
				for _, p := range r.GetPrizes() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", p.GetId(), stateName(p.GetState()), p.GetUserId(),
						p.GetExternalId(), p.GetAttempts(), p.GetParkReason(), p.GetLastError())
				}
				_ = tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&poolID, "pool", "", "the pool (required)")
	cmd.Flags().StringVar(&state, "state", "", "only prizes in this state")
	_ = cmd.MarkFlagRequired("pool")
	return cmd
}

// printPrize shows a prize; hidden says a code is assigned but was withheld.
func printPrize(hidden bool) func(io.Writer, *dispenserv1.Prize) {
	return func(w io.Writer, p *dispenserv1.Prize) {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		code := "-"
		switch {
		case p.GetCode() != "":
			code = p.GetCode()
		case hidden:
			code = "(assigned; --show-code prints it)"
		}
		for _, row := range [][2]string{
			{"prize", p.GetId()}, {"pool", p.GetPoolId()}, {"user", p.GetUserId()}, {"external id", p.GetExternalId()},
			{"state", stateName(p.GetState())}, {"code", code}, {"delivery id", p.GetDeliveryId()},
			{"attempts", fmt.Sprint(p.GetAttempts())}, {"parked for", p.GetParkReason()}, {"last error", p.GetLastError()},
			{"recorded", fmtTime(p.GetCreateTime())}, {"ready", fmtTime(p.GetReadyTime())},
			{"assigned", fmtTime(p.GetAssignTime())}, {"delivered", fmtTime(p.GetDeliverTime())},
			{"next attempt", fmtTime(p.GetNextAttemptTime())}, {"metadata", p.GetMetadataJson()}, {"details", p.GetDetailsJson()},
		} {
			fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
		}
		_ = tw.Flush()
	}
}

// withhold clears a prize's code unless asked for, and says whether it did.
func withhold(p *dispenserv1.Prize, showCode bool) bool {
	hidden := !showCode && p.GetCode() != ""
	if hidden {
		p.Code = ""
	}
	return hidden
}

func (a *app) prizesGetCmd() *cobra.Command {
	var showCode bool
	cmd := &cobra.Command{
		Use:   "get PRIZE_ID",
		Short: "Show one prize",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.prizeClient()
			if err != nil {
				return err
			}
			resp, err := call(a, cmd.Context(), c.GetPrize, &dispenserv1.GetPrizeRequest{PrizeId: args[0]})
			if err != nil {
				return err
			}
			hidden := withhold(resp.GetPrize(), showCode)
			return show(a, resp.GetPrize(), printPrize(hidden))
		},
	}
	cmd.Flags().BoolVar(&showCode, "show-code", false, "print the assigned code")
	return cmd
}

func (a *app) prizesRetryCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "retry PRIZE_ID",
		Short: "Re-queue a parked prize (same code and delivery id if it has one)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.prizeClient()
			if err != nil {
				return err
			}
			resp, err := call(a, cmd.Context(), c.RetryDelivery, &dispenserv1.RetryDeliveryRequest{PrizeId: args[0]})
			if err != nil {
				return err
			}
			hidden := withhold(resp.GetPrize(), false)
			return show(a, resp.GetPrize(), printPrize(hidden))
		},
	}
}
