package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"

	"github.com/dispenserhq/dispenser/internal/cli"
	"github.com/dispenserhq/dispenser/internal/upload"
)

func (a *app) importCmd() *cobra.Command {
	var poolID, format string
	var strict bool
	cmd := &cobra.Command{
		Use:   "import --pool ID FILE",
		Short: "Load a file of codes into a pool, all or nothing",
		Long: `Load a file of codes into a pool. FILE is one code per line, or CSV with a
header naming a "code" column and an optional "expires_at" column (RFC 3339);
"-" reads standard input. The import lands whole or not at all, and codes the
pool already holds are skipped, so re-running an import is safe.

The summary never shows the codes themselves: invalid lines are reported by
line number and reason.`,
		Example: `  dispenserctl import --pool summer codes.txt
  dispenserctl import --pool summer --strict supplier.csv
  gunzip -c codes.txt.gz | dispenserctl import --pool summer -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if poolID == "" {
				return errors.New("--pool is required")
			}
			src, name, size, err := openSource(args[0])
			if err != nil {
				return err
			}
			defer src.Close()
			f, err := resolveFormat(format, name)
			if err != nil {
				return err
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			opts := &dispenserv1.ImportOptions{PoolId: poolID, Format: f, Strict: strict, SourceName: filepath.Base(name)}
			start := time.Now()
			resp, err := upload.Import(cmd.Context(), c, opts, src, a.newProgress(size))
			if err != nil {
				return err
			}
			if a.asJSON {
				return a.printJSON(resp)
			}
			printImportSummary(a.stdout, poolID, opts.GetSourceName(), resp, time.Since(start))
			return nil
		},
	}
	cmd.Flags().StringVar(&poolID, "pool", "", "the pool to load into (required)")
	cmd.Flags().StringVar(&format, "format", "auto", "lines, csv, or auto (csv for *.csv files)")
	cmd.Flags().BoolVar(&strict, "strict", false, "refuse the whole file if any line is invalid")
	return cmd
}

// openSource opens FILE or stdin and returns its size when known (else -1).
func openSource(arg string) (io.ReadCloser, string, int64, error) {
	if arg == "-" {
		return io.NopCloser(os.Stdin), "stdin", -1, nil
	}
	f, err := os.Open(arg)
	if err != nil {
		return nil, "", 0, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, "", 0, err
	}
	return f, arg, st.Size(), nil
}

func resolveFormat(format, name string) (dispenserv1.ImportFormat, error) {
	switch strings.ToLower(format) {
	case "lines":
		return dispenserv1.ImportFormat_IMPORT_FORMAT_LINES, nil
	case "csv":
		return dispenserv1.ImportFormat_IMPORT_FORMAT_CSV, nil
	case "auto":
		if strings.EqualFold(filepath.Ext(name), ".csv") {
			return dispenserv1.ImportFormat_IMPORT_FORMAT_CSV, nil
		}
		return dispenserv1.ImportFormat_IMPORT_FORMAT_LINES, nil
	}
	return 0, fmt.Errorf("--format must be lines, csv or auto, not %q", format)
}

func printImportSummary(w io.Writer, poolID, source string, r *dispenserv1.ImportCodesResponse, took time.Duration) {
	fmt.Fprintf(w, "import %d into pool %s (%s): %s in %s (%s lines/s)\n", r.GetImportId(), poolID, source,
		fmtBytes(r.GetBytes()), took.Round(time.Millisecond), cli.FormatInt(int64(float64(r.GetLines())/took.Seconds())))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, row := range []struct {
		name string
		n    int64
	}{
		{"lines", r.GetLines()},
		{"inserted", r.GetInserted()},
		{"duplicates in file", r.GetDuplicatesInFile()},
		{"already in pool", r.GetDuplicatesInPool()},
		{"invalid", r.GetInvalid()},
	} {
		fmt.Fprintf(tw, "  %s\t%s\t\n", row.name, cli.FormatInt(row.n))
	}
	_ = tw.Flush()
	for _, l := range r.GetInvalidLines() {
		fmt.Fprintf(w, "    line %d: %s\n", l.GetLine(), l.GetReason())
	}
	if n := r.GetInvalid() - int64(len(r.GetInvalidLines())); n > 0 {
		fmt.Fprintf(w, "    … and %s more invalid lines\n", cli.FormatInt(n))
	}
}

func (a *app) newProgress(size int64) upload.Progress {
	if a.asJSON {
		return upload.NoProgress{}
	}
	if a.isTerminal() {
		return newBarProgress(a.stderr, size)
	}
	return &lineProgress{w: a.stderr, size: size, start: time.Now(), every: 2 * time.Second}
}

// barProgress draws a live bar: bytes, rate, ETA, and rows sent.
type barProgress struct {
	bar   *progressbar.ProgressBar
	w     io.Writer
	rows  int64
	start time.Time
}

func newBarProgress(w io.Writer, size int64) *barProgress {
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(w),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetWidth(30),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetDescription("uploading"),
	)
	return &barProgress{bar: bar, w: w, start: time.Now()}
}

func (p *barProgress) Add(n, rows int64) {
	p.rows += rows
	rate := float64(p.rows) / time.Since(p.start).Seconds()
	p.bar.Describe(fmt.Sprintf("%s rows (%s rows/s)", cli.FormatInt(p.rows), cli.FormatInt(int64(rate))))
	_ = p.bar.Add64(n)
}

func (p *barProgress) Uploaded() {
	_ = p.bar.Finish()
	fmt.Fprintf(p.w, "\nsent %s rows; the server is landing the import…\n", cli.FormatInt(p.rows))
}

func (p *barProgress) Abort() { _ = p.bar.Exit() }

// lineProgress prints a plain line every few seconds, for logs and pipes.
type lineProgress struct {
	w          io.Writer
	size       int64
	sent, rows int64
	printed    int64 // sent at the last line printed
	start      time.Time
	last       time.Time
	every      time.Duration
}

func (p *lineProgress) Add(n, rows int64) {
	p.sent += n
	p.rows += rows
	if time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	p.print()
}

func (p *lineProgress) print() {
	p.printed = p.sent
	el := time.Since(p.start).Seconds()
	rate := float64(p.rows) / el
	line := fmt.Sprintf("import: %s rows, %s", cli.FormatInt(p.rows), fmtBytes(p.sent))
	if p.size > 0 {
		line += fmt.Sprintf(" of %s (%.0f%%)", fmtBytes(p.size), 100*float64(p.sent)/float64(p.size))
	}
	line += fmt.Sprintf(", %s rows/s", cli.FormatInt(int64(rate)))
	if p.size > 0 && p.sent > 0 && p.sent < p.size {
		eta := time.Duration(el * float64(p.size-p.sent) / float64(p.sent) * float64(time.Second))
		line += ", ETA " + eta.Round(time.Second).String()
	}
	fmt.Fprintln(p.w, line)
}

func (p *lineProgress) Uploaded() {
	if p.printed != p.sent {
		p.print()
	}
	fmt.Fprintln(p.w, "import: upload complete; the server is landing the import")
}

func (p *lineProgress) Abort() {}
