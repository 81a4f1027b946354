// Command dispenserctl is the admin and operations CLI of dispenser: pools,
// bulk import with progress, stats. It talks to dispenserd over gRPC at
// --addr, else $DISPENSER_ADDR, else localhost:50051.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/dispenserhq/dispenser/internal/cli"
	"github.com/dispenserhq/dispenser/internal/stock"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func main() {
	// go-redis's own lines (a Cluster node it could not dial while it
	// found another) are noise here: a command that fails says why.
	stock.RouteLogs(slog.New(slog.DiscardHandler))
	app := newApp(os.Stdout, os.Stderr)
	err := cli.Execute(app.root())
	app.close()
	if err != nil {
		app.printError(err)
		os.Exit(1)
	}
}

// app carries the global flags and the output streams of one invocation.
type app struct {
	client cli.Client
	asJSON bool
	stdout io.Writer
	stderr io.Writer
	// isTerminal tells whether progress may be drawn as a live bar.
	isTerminal func() bool
}

func newApp(stdout, stderr io.Writer) *app {
	return &app{stdout: stdout, stderr: stderr, isTerminal: stderrIsTerminal}
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "dispenserctl",
		Short:         "Administer a dispenser: pools, imports, stats",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	f := root.PersistentFlags()
	a.client.Flags(f)
	f.BoolVar(&a.asJSON, "json", false, "print results as JSON for scripts")
	root.AddCommand(a.keysCmd(), a.poolsCmd(), a.importCmd(), a.generateCmd(), a.claimCmd(), a.reserveCmd(), a.confirmCmd(), a.cancelCmd(), a.voidCmd(), a.prizesCmd(), a.jobsCmd(), a.auditCmd())
	return root
}

func (a *app) dial() (*grpc.ClientConn, error) { return a.client.ClientConn() }

func (a *app) admin() (dispenserv1.AdminServiceClient, error) { return a.client.Admin() }

func (a *app) close() { a.client.Close() }

// call runs a unary call under the --timeout deadline.
func call[Req, Resp any](a *app, ctx context.Context, fn func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	return cli.Call(ctx, &a.client, fn, req)
}

// exitError is an error already reported to the user; main only exits 1.
type exitError struct{}

func (exitError) Error() string { return "failed" }

// printError reports an error with what the caller can act on: the gRPC code,
// the ErrorInfo reason and any field violations.
func (a *app) printError(err error) {
	if errors.Is(err, exitError{}) {
		return
	}
	st, ok := status.FromError(err)
	if !ok {
		fmt.Fprintln(a.stderr, "error:", err)
		return
	}
	reason := ""
	var violations []*errdetails.BadRequest_FieldViolation
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			reason = ", " + d.GetReason()
		case *errdetails.BadRequest:
			violations = d.GetFieldViolations()
		}
	}
	fmt.Fprintf(a.stderr, "error: %s (%s%s)\n", st.Message(), st.Code(), reason)
	for i, v := range violations {
		if i == 20 {
			fmt.Fprintf(a.stderr, "  … and %d more\n", len(violations)-i)
			break
		}
		fmt.Fprintf(a.stderr, "  %s: %s\n", v.GetField(), v.GetDescription())
	}
}
