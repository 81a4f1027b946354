// Command dispenser-bench measures a running dispenserd: `claims` drives
// ClaimCode and audits every promise afterwards, `import` times a bulk
// import beside a raw COPY. It is a tool for the project's benchmarks
// (docs/BENCHMARKS.md, make bench), kept apart from dispenserctl, the
// operator CLI.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/dispenserhq/dispenser/internal/cli"
	"github.com/dispenserhq/dispenser/internal/stock"
)

func main() {
	// go-redis's own lines (a Cluster node it could not dial while it
	// found another) are noise here: a command that fails says why.
	stock.RouteLogs(slog.New(slog.DiscardHandler))
	a := &app{stdout: os.Stdout, stderr: os.Stderr}
	err := cli.Execute(a.root())
	a.client.Close()
	if err != nil {
		if !errors.Is(err, exitError{}) {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		os.Exit(1)
	}
}

// app carries the connection flags and the output streams of one run.
type app struct {
	client cli.Client
	stdout io.Writer
	stderr io.Writer
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "dispenser-bench",
		Short:         "Measure a running dispenserd: claims under load (audited), bulk import",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	a.client.Flags(root.PersistentFlags())
	root.AddCommand(a.claimsCmd(), a.benchImportCmd())
	return root
}

// exitError is a failure already reported (an audit that found breaches).
type exitError struct{}

func (exitError) Error() string { return "failed" }
