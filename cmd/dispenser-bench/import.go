package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/dispenserhq/dispenser/internal/cli"
	"github.com/dispenserhq/dispenser/internal/cliflag"
	"github.com/dispenserhq/dispenser/internal/upload"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func (a *app) claimsCmd() *cobra.Command {
	var o benchOpts
	cmd := &cobra.Command{
		Use:   "claims",
		Short: "Drive ClaimCode through a running dispenserd, then audit every promise",
		Long: `Drives ClaimCode through a running server over gRPC: --claims calls from
--concurrency callers for --users users, a --replay-ratio share of them retrying
an earlier request_id. Calls that fail Unavailable are retried with the same
request_id, as a lottery backend would. Then it audits Postgres and Redis and
prints duplicates, lost codes, limit violations and replay mismatches, and
ends with one JSON line. It exits non-zero if any of the four is not zero.

Without --pool it creates a fresh pool, fills it with enough codes and stages
them. The best hand-written claim to compare with is measured by
'make bench' (scripts/bench-claims.sh: the classic SKIP LOCKED claim under
pgbench, on the same Postgres).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.runBenchClaims(cmd.Context(), o) },
	}
	a.benchClaimsFlags(cmd, &o)
	return cmd
}

// importBenchResult is the JSON line the import benchmark ends with.
type importBenchResult struct {
	Codes            int     `json:"codes"`
	Pool             string  `json:"pool"`
	ImportSeconds    float64 `json:"import_s"`
	ImportRowsPerS   float64 `json:"import_rows_per_s"`
	ReimportSeconds  float64 `json:"reimport_s"`
	ReimportRowsPerS float64 `json:"reimport_rows_per_s"`
	RawCopySeconds   float64 `json:"raw_copy_s,omitempty"`
	RawCopyRowsPerS  float64 `json:"raw_copy_rows_per_s,omitempty"`
	ImportVsRaw      float64 `json:"import_vs_raw,omitempty"`
}

func (a *app) benchImportCmd() *cobra.Command {
	var n int
	var dbURL, dir string
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Time an import of N random codes through the server, a re-import, and a raw COPY beside it",
		Long: `Generates N random 16-character codes into a file, creates a fresh pool, and
imports the file through the running server exactly as 'dispenserctl import'
does; then imports the same file again (it must insert nothing). With
--database-url it also times a bare pgx CopyFrom of N other random codes into
the same codes table (inside a transaction that is rolled back), so the import
rate can be read against the raw rate of the same machine in the same run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := a.client.Admin()
			if err != nil {
				return err
			}
			file := filepath.Join(dir, fmt.Sprintf("bench-codes-%d.txt", n))
			fmt.Fprintf(a.stderr, "writing %s random codes to %s\n", cli.FormatInt(int64(n)), file)
			if err := writeRandomCodes(file, n); err != nil {
				return err
			}
			defer os.Remove(file)

			poolID := fmt.Sprintf("bench-import-%d", time.Now().Unix())
			if _, err := cli.Call(ctx, &a.client, c.CreatePool, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{
				Id: poolID, DisplayName: "import benchmark", Paused: true,
			}}); err != nil {
				return err
			}
			res := importBenchResult{Codes: n, Pool: poolID}

			// The raw copy, then the import, each from the same state: no
			// dead rows left by the copy in the table and its indexes, and
			// each just after a checkpoint, so that neither pays for a
			// checkpoint the other's WAL started (a million rows write
			// about half of a stock max_wal_size).
			var conn *pgx.Conn
			if dbURL != "" {
				if conn, err = pgx.Connect(ctx, dbURL); err != nil {
					return err
				}
				defer conn.Close(context.WithoutCancel(ctx))
				secs, err := rawCopy(ctx, conn, poolID, n)
				if err != nil {
					return fmt.Errorf("raw copy: %w", err)
				}
				res.RawCopySeconds, res.RawCopyRowsPerS = secs, float64(n)/secs
				if _, err := conn.Exec(ctx, "VACUUM codes"); err != nil {
					return fmt.Errorf("vacuum after the raw copy: %w", err)
				}
			}
			run := func(wantInserted int64) (float64, error) {
				f, err := os.Open(file)
				if err != nil {
					return 0, err
				}
				defer f.Close()
				opts := &dispenserv1.ImportOptions{PoolId: poolID, Format: dispenserv1.ImportFormat_IMPORT_FORMAT_LINES, SourceName: filepath.Base(file)}
				start := time.Now()
				resp, err := upload.Import(ctx, c, opts, f, upload.NoProgress{})
				secs := time.Since(start).Seconds()
				if err != nil {
					return 0, err
				}
				if resp.GetInserted() != wantInserted || resp.GetLines() != int64(n) {
					return 0, fmt.Errorf("import of %d lines inserted %d, want %d", resp.GetLines(), resp.GetInserted(), wantInserted)
				}
				return secs, nil
			}
			if conn != nil {
				if err := checkpoint(ctx, conn); err != nil {
					return err
				}
			}
			if res.ImportSeconds, err = run(int64(n)); err != nil {
				return err
			}
			res.ImportRowsPerS = float64(n) / res.ImportSeconds
			if res.ReimportSeconds, err = run(0); err != nil {
				return err
			}
			res.ReimportRowsPerS = float64(n) / res.ReimportSeconds
			if res.RawCopyRowsPerS > 0 {
				res.ImportVsRaw = res.ImportRowsPerS / res.RawCopyRowsPerS
			}
			printImportBench(a, res)
			line, err := json.Marshal(res)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, string(line))
			return nil
		},
	}
	cmd.Flags().IntVar(&n, "codes", 1_000_000, "how many codes to import")
	cliflag.Secret(cmd.Flags(), &dbURL, "database-url", "DISPENSER_DATABASE_URL", "",
		"Postgres of the server, for the raw CopyFrom comparison; empty skips it")
	cmd.Flags().StringVar(&dir, "dir", os.TempDir(), "where to write the generated file")
	return cmd
}

func printImportBench(a *app, r importBenchResult) {
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%s codes into pool %s\tseconds\trows/s\t\n", cli.FormatInt(int64(r.Codes)), r.Pool)
	if r.RawCopyRowsPerS > 0 {
		fmt.Fprintf(tw, "raw pgx CopyFrom (same table)\t%.2f\t%s\t\n", r.RawCopySeconds, cli.FormatInt(int64(r.RawCopyRowsPerS)))
	}
	fmt.Fprintf(tw, "dispenserctl import via server\t%.2f\t%s\t\n", r.ImportSeconds, cli.FormatInt(int64(r.ImportRowsPerS)))
	fmt.Fprintf(tw, "re-import (all duplicates)\t%.2f\t%s\t\n", r.ReimportSeconds, cli.FormatInt(int64(r.ReimportRowsPerS)))
	_ = tw.Flush()
	if r.ImportVsRaw > 0 {
		fmt.Fprintf(a.stdout, "import runs at %.0f%% of the raw CopyFrom rate (the goal: at least 70%%)\n", 100*r.ImportVsRaw)
	}
}

// codeAlphabet has 32 symbols, so a random byte maps to one without bias.
const codeAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

func randomCode(buf []byte) []byte {
	_, _ = rand.Read(buf)
	for i, b := range buf {
		buf[i] = codeAlphabet[b&31]
	}
	return buf
}

func writeRandomCodes(path string, n int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	code := make([]byte, 16)
	for range n {
		_, _ = w.Write(randomCode(code))
		_ = w.WriteByte('\n')
	}
	return errors.Join(w.Flush(), f.Close())
}

// checkpoint runs CHECKPOINT (a superuser's or pg_checkpoint's right, as on
// the bench's private cluster).
func checkpoint(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint before a timed step (the role needs pg_checkpoint): %w", err)
	}
	return nil
}

// rawCopy times a bare CopyFrom of n fresh random codes into the codes table,
// with all its indexes, from a checkpoint, then rolls the transaction back.
func rawCopy(ctx context.Context, conn *pgx.Conn, poolID string, n int) (float64, error) {
	rows := make([][]any, n)
	for i := range rows {
		rows[i] = []any{poolID, string(randomCode(make([]byte, 16))), int64(0)}
	}
	if err := checkpoint(ctx, conn); err != nil {
		return 0, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	start := time.Now()
	copied, err := tx.CopyFrom(ctx, pgx.Identifier{"codes"}, []string{"pool_id", "code", "import_id"}, pgx.CopyFromRows(rows))
	if err != nil {
		return 0, err
	}
	secs := time.Since(start).Seconds()
	if copied != int64(n) {
		return 0, fmt.Errorf("copied %d rows, want %d", copied, n)
	}
	return secs, nil
}
