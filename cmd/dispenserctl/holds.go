package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// holdFlags are the flags naming one reservation.
type holdFlags struct{ poolID, userID, requestID string }

func (h *holdFlags) add(cmd *cobra.Command, userRequired bool) {
	cmd.Flags().StringVar(&h.poolID, "pool", "", "the pool")
	cmd.Flags().StringVar(&h.requestID, "request", "", "the reservation's request id")
	user := "the user (optional: another user's reservation is then refused)"
	if userRequired {
		user = "the user"
	}
	cmd.Flags().StringVar(&h.userID, "user", "", user)
	required := []string{"pool", "request"}
	if userRequired {
		required = append(required, "user")
	}
	for _, f := range required {
		_ = cmd.MarkFlagRequired(f)
	}
}

// printReservation writes a reservation's state and times; it has no code.
func (a *app) printReservation(r *dispenserv1.Reservation, replayed bool) {
	state := map[dispenserv1.ReservationState]string{
		dispenserv1.ReservationState_RESERVATION_STATE_HELD:      "held",
		dispenserv1.ReservationState_RESERVATION_STATE_CONFIRMED: "confirmed",
		dispenserv1.ReservationState_RESERVATION_STATE_CANCELLED: "cancelled",
		dispenserv1.ReservationState_RESERVATION_STATE_EXPIRED:   "expired",
	}[r.GetState()]
	line := state
	switch {
	case r.GetState() == dispenserv1.ReservationState_RESERVATION_STATE_HELD:
		line += " until " + r.GetExpireTime().AsTime().Format(time.RFC3339)
	case r.GetConfirmTime() != nil:
		line += " at " + r.GetConfirmTime().AsTime().Format(time.RFC3339)
	}
	if replayed {
		line += " (replayed)"
	}
	fmt.Fprintln(a.stdout, line)
}

func (a *app) reserveCmd() *cobra.Command {
	var h holdFlags
	var holdFor time.Duration
	cmd := &cobra.Command{
		Use:   "reserve --pool ID --user USER --request REQUEST_ID [--hold 15m]",
		Short: "Hold one code for a user, as a checkout would (prints the hold, never the code)",
		Long: `Holds one code for the user until the hold ends: the pool's hold_default, or
--hold (at most the pool's hold_max). The code is shown by confirm; cancel
gives it back at once; a hold not confirmed in time expires and its code
goes back to the pool. Retrying with the same request id answers the same
reservation.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := a.dial()
			if err != nil {
				return err
			}
			req := &dispenserv1.ReserveCodeRequest{PoolId: h.poolID, UserId: h.userID, RequestId: h.requestID}
			if holdFor != 0 {
				req.HoldFor = durationpb.New(holdFor)
			}
			resp, err := call(a, cmd.Context(), dispenserv1.NewClaimServiceClient(conn).ReserveCode, req)
			if err != nil {
				return err
			}
			if a.asJSON {
				return a.printJSON(resp)
			}
			a.printReservation(resp.GetReservation(), resp.GetReplayed())
			return nil
		},
	}
	h.add(cmd, true)
	cmd.Flags().DurationVar(&holdFor, "hold", 0, "how long to hold the code (default: the pool's hold_default)")
	return cmd
}

func (a *app) confirmCmd() *cobra.Command {
	var h holdFlags
	cmd := &cobra.Command{
		Use:   "confirm --pool ID --request REQUEST_ID [--user USER]",
		Short: "Confirm a reservation: it becomes a claim (prints the code)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := a.dial()
			if err != nil {
				return err
			}
			resp, err := call(a, cmd.Context(), dispenserv1.NewClaimServiceClient(conn).ConfirmReservation,
				&dispenserv1.ConfirmReservationRequest{PoolId: h.poolID, RequestId: h.requestID, UserId: h.userID})
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
	h.add(cmd, false)
	return cmd
}

func (a *app) cancelCmd() *cobra.Command {
	var h holdFlags
	cmd := &cobra.Command{
		Use:   "cancel --pool ID --request REQUEST_ID [--user USER]",
		Short: "Cancel a reservation: its code goes back to the pool at once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := a.dial()
			if err != nil {
				return err
			}
			resp, err := call(a, cmd.Context(), dispenserv1.NewClaimServiceClient(conn).CancelReservation,
				&dispenserv1.CancelReservationRequest{PoolId: h.poolID, RequestId: h.requestID, UserId: h.userID})
			if err != nil {
				return err
			}
			if a.asJSON {
				return a.printJSON(resp)
			}
			a.printReservation(resp.GetReservation(), false)
			return nil
		},
	}
	h.add(cmd, false)
	return cmd
}
