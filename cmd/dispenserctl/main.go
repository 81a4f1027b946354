// Command dispenserctl is the admin and operations CLI of dispenser: pools,
// bulk import with progress, stats. It talks to dispenserd over gRPC at
// --addr, else $DISPENSER_ADDR, else localhost:50051.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/dispenserhq/dispenser/internal/cli"
	"github.com/dispenserhq/dispenser/internal/cliflag"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := newApp(os.Stdout, os.Stderr)
	err := app.root().ExecuteContext(ctx)
	app.close()
	if err != nil {
		app.printError(err)
		os.Exit(1)
	}
}

// app carries the global flags and the output streams of one invocation.
type app struct {
	addr    string
	key     string
	tlsCA   string
	tlsCert string
	tlsKey  string
	useTLS  bool
	asJSON  bool
	timeout time.Duration
	stdout  io.Writer
	stderr  io.Writer
	// isTerminal tells whether progress may be drawn as a live bar.
	isTerminal func() bool

	conn *grpc.ClientConn
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
	f.StringVar(&a.addr, "addr", cli.EnvOr("DISPENSER_ADDR", "localhost:50051"), "dispenserd gRPC address [DISPENSER_ADDR]")
	f.BoolVar(&a.asJSON, "json", false, "print results as JSON for scripts")
	f.DurationVar(&a.timeout, "timeout", 30*time.Second, "deadline of each unary call")
	cliflag.Secret(f, &a.key, "key", "DISPENSER_KEY", "", "API key, sent as a bearer token")
	f.BoolVar(&a.useTLS, "tls", os.Getenv("DISPENSER_TLS") == "true", "connect with TLS (implied by --tls-ca or --tls-cert) [DISPENSER_TLS]")
	f.StringVar(&a.tlsCA, "tls-ca", os.Getenv("DISPENSER_TLS_CA"), "trust this CA (PEM) instead of the system's [DISPENSER_TLS_CA]")
	f.StringVar(&a.tlsCert, "tls-cert", os.Getenv("DISPENSER_TLS_CERT"), "client certificate for mTLS (PEM) [DISPENSER_TLS_CERT]")
	f.StringVar(&a.tlsKey, "tls-key", os.Getenv("DISPENSER_TLS_KEY"), "client certificate's key (PEM) [DISPENSER_TLS_KEY]")
	root.AddCommand(a.keysCmd(), a.poolsCmd(), a.importCmd(), a.claimCmd(), a.voidCmd(), a.prizesCmd(), a.jobsCmd(), a.auditCmd())
	return root
}

// dial connects lazily; gRPC connects on the first call.
func (a *app) dial() (*grpc.ClientConn, error) {
	if a.conn != nil {
		return a.conn, nil
	}
	conn, err := cli.Dial(cli.Conn{Addr: a.addr, Key: a.key, TLS: a.useTLS, CA: a.tlsCA, Cert: a.tlsCert, CertKey: a.tlsKey})
	if err != nil {
		return nil, err
	}
	a.conn = conn
	return conn, nil
}

// close releases the connection, if one was made.
func (a *app) close() {
	if a.conn != nil {
		_ = a.conn.Close()
		a.conn = nil
	}
}

func (a *app) admin() (dispenserv1.AdminServiceClient, error) {
	conn, err := a.dial()
	if err != nil {
		return nil, err
	}
	return dispenserv1.NewAdminServiceClient(conn), nil
}

// call runs a unary call under the --timeout deadline.
func call[Req, Resp any](a *app, ctx context.Context, fn func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	return fn(ctx, req)
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
