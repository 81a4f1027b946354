// Command dispenser-bench measures a running dispenserd: `claims` drives
// ClaimCode and audits every promise afterwards, `import` times a bulk
// import beside a raw COPY. It is a tool for the project's benchmarks
// (docs/BENCHMARKS.md, make bench), kept apart from dispenserctl, the
// operator CLI.
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
	"google.golang.org/grpc"

	"github.com/dispenserhq/dispenser/internal/cli"
	"github.com/dispenserhq/dispenser/internal/cliflag"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := &app{stdout: os.Stdout, stderr: os.Stderr}
	err := a.root().ExecuteContext(ctx)
	a.close()
	if err != nil {
		if !errors.Is(err, exitError{}) {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		os.Exit(1)
	}
}

// app carries the connection flags and the output streams of one run.
type app struct {
	conn    cli.Conn
	timeout time.Duration
	stdout  io.Writer
	stderr  io.Writer
	cc      *grpc.ClientConn
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "dispenser-bench",
		Short:         "Measure a running dispenserd: claims under load (audited), bulk import",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	f := root.PersistentFlags()
	f.StringVar(&a.conn.Addr, "addr", cli.EnvOr("DISPENSER_ADDR", "localhost:50051"), "dispenserd gRPC address [DISPENSER_ADDR]")
	f.DurationVar(&a.timeout, "timeout", 30*time.Second, "deadline of each unary admin call")
	cliflag.Secret(f, &a.conn.Key, "key", "DISPENSER_KEY", "", "API key, sent as a bearer token")
	f.BoolVar(&a.conn.TLS, "tls", os.Getenv("DISPENSER_TLS") == "true", "connect with TLS [DISPENSER_TLS]")
	f.StringVar(&a.conn.CA, "tls-ca", os.Getenv("DISPENSER_TLS_CA"), "trust this CA (PEM) [DISPENSER_TLS_CA]")
	f.StringVar(&a.conn.Cert, "tls-cert", os.Getenv("DISPENSER_TLS_CERT"), "client certificate for mTLS (PEM) [DISPENSER_TLS_CERT]")
	f.StringVar(&a.conn.CertKey, "tls-key", os.Getenv("DISPENSER_TLS_KEY"), "client certificate's key (PEM) [DISPENSER_TLS_KEY]")
	root.AddCommand(a.claimsCmd(), a.benchImportCmd())
	return root
}

// dial connects lazily; gRPC connects on the first call.
func (a *app) dial() (*grpc.ClientConn, error) {
	if a.cc != nil {
		return a.cc, nil
	}
	cc, err := cli.Dial(a.conn)
	if err != nil {
		return nil, err
	}
	a.cc = cc
	return cc, nil
}

func (a *app) admin() (dispenserv1.AdminServiceClient, error) {
	cc, err := a.dial()
	if err != nil {
		return nil, err
	}
	return dispenserv1.NewAdminServiceClient(cc), nil
}

func (a *app) close() {
	if a.cc != nil {
		_ = a.cc.Close()
		a.cc = nil
	}
}

// call runs a unary call under the --timeout deadline.
func call[Req, Resp any](a *app, ctx context.Context, fn func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	return fn(ctx, req)
}

// exitError is a failure already reported (an audit that found breaches).
type exitError struct{}

func (exitError) Error() string { return "failed" }
