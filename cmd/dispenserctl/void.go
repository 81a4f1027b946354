package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dispenserhq/dispenser/internal/cli"
	"github.com/dispenserhq/dispenser/pool"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func (a *app) voidCmd() *cobra.Command {
	var poolID, reason string
	var importID int64
	cmd := &cobra.Command{
		Use:   "void --pool ID --reason TEXT (--import N | FILE)",
		Short: "Take codes out of circulation: listed in FILE (one per line, - for stdin), or a whole import",
		Long: `Voids codes that no claim holds, so they are never handed out (also when they
are staged in Redis: Postgres refuses them when popped). Claimed codes stay
claimed. FILE lists codes one per line; they are sent in calls of 10,000.
The summary counts codes, it never prints them.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if poolID == "" || reason == "" {
				return errors.New("--pool and --reason are required")
			}
			if (len(args) == 1) == (importID != 0) {
				return errors.New("give either FILE or --import")
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			total := &dispenserv1.VoidCodesResponse{}
			send := func(req *dispenserv1.VoidCodesRequest) error {
				resp, err := call(a, cmd.Context(), c.VoidCodes, req)
				if err != nil {
					return err
				}
				total.Voided += resp.GetVoided()
				total.AlreadyVoid += resp.GetAlreadyVoid()
				total.Claimed += resp.GetClaimed()
				total.NotFound += resp.GetNotFound()
				return nil
			}
			if importID != 0 {
				err = send(&dispenserv1.VoidCodesRequest{PoolId: poolID, ImportId: importID, Reason: reason})
			} else {
				err = a.voidFile(args[0], func(codes []string) error {
					return send(&dispenserv1.VoidCodesRequest{PoolId: poolID, Codes: codes, Reason: reason})
				})
			}
			if err != nil {
				return err
			}
			return show(a, total, func(w io.Writer, r *dispenserv1.VoidCodesResponse) {
				fmt.Fprintf(w, "voided %s, already void %s, claimed or held (left as is) %s, not found %s\n",
					cli.FormatInt(r.GetVoided()), cli.FormatInt(r.GetAlreadyVoid()), cli.FormatInt(r.GetClaimed()), cli.FormatInt(r.GetNotFound()))
			})
		},
	}
	cmd.Flags().StringVar(&poolID, "pool", "", "the pool (required)")
	cmd.Flags().StringVar(&reason, "reason", "", "why, kept with each voided code (required)")
	cmd.Flags().Int64Var(&importID, "import", 0, "void every unclaimed code of this import")
	return cmd
}

// voidFile reads codes one per line and hands them out in chunks.
func (a *app) voidFile(path string, fn func([]string) error) error {
	src, _, _, err := openSource(path)
	if err != nil {
		return err
	}
	defer src.Close()
	sc := bufio.NewScanner(src)
	chunk := make([]string, 0, pool.MaxVoidCodes)
	for sc.Scan() {
		if code := strings.TrimSpace(strings.TrimPrefix(sc.Text(), "\ufeff")); code != "" {
			chunk = append(chunk, code)
		}
		if len(chunk) == pool.MaxVoidCodes {
			if err := fn(chunk); err != nil {
				return err
			}
			chunk = chunk[:0]
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(chunk) > 0 {
		return fn(chunk)
	}
	return nil
}
