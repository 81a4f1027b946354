package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/dispenserhq/dispenser/internal/cli"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// generateOpts are the flags of dispenserctl generate.
type generateOpts struct {
	poolID, pattern, charset, prefix, suffix string
	count                                    int64
	length, group                            int
	safety                                   float64
}

// charsetFlag maps --charset to the API's charset (and custom set).
func charsetFlag(v string) (dispenserv1.CodeCharset, string, error) {
	switch {
	case v == "" || v == "unambiguous":
		return dispenserv1.CodeCharset_CODE_CHARSET_UNAMBIGUOUS, "", nil
	case v == "digits":
		return dispenserv1.CodeCharset_CODE_CHARSET_DIGITS, "", nil
	case v == "upper":
		return dispenserv1.CodeCharset_CODE_CHARSET_UPPER, "", nil
	case v == "alphanumeric":
		return dispenserv1.CodeCharset_CODE_CHARSET_ALPHANUMERIC, "", nil
	case strings.HasPrefix(v, "custom:"):
		return dispenserv1.CodeCharset_CODE_CHARSET_CUSTOM, strings.TrimPrefix(v, "custom:"), nil
	}
	return 0, "", fmt.Errorf("--charset: want unambiguous, digits, upper, alphanumeric or custom:CHARS")
}

// buildPattern is --pattern, or the pattern --length, --group, --prefix and
// --suffix describe: length random characters in groups joined by '-'.
func (o generateOpts) buildPattern() (string, error) {
	if o.pattern != "" {
		if o.length != 0 || o.group != 0 || o.prefix != "" || o.suffix != "" {
			return "", errors.New("give --pattern, or --length with --group, --prefix and --suffix, not both")
		}
		return o.pattern, nil
	}
	if o.length <= 0 {
		return "", errors.New("give --pattern (e.g. 'SALE-####-####') or --length")
	}
	var b strings.Builder
	b.WriteString(o.prefix)
	for i := range o.length {
		if o.group > 0 && i > 0 && i%o.group == 0 {
			b.WriteByte('-')
		}
		b.WriteByte('#')
	}
	b.WriteString(o.suffix)
	return b.String(), nil
}

func (a *app) generateCmd() *cobra.Command {
	var o generateOpts
	cmd := &cobra.Command{
		Use:   "generate --pool ID --count N (--pattern P | --length L [--group G] [--prefix X] [--suffix Y])",
		Short: "Mint unique, unguessable codes for a pool (lands like an import)",
		Long: `Asks the server to mint N new codes for the pool from a cryptographic random
source. In --pattern every '#' is a random character and everything else is
kept as written; --length, --group, --prefix and --suffix build one
(--length 12 --group 4 --prefix SALE- is SALE-####-####-####). Characters come
from --charset: unambiguous (default: digits and upper-case letters without
0/O and 1/I), digits, upper, alphanumeric, or custom:CHARS.

The codes are unique within the pool and land all or nothing, as one import
(void them all with 'dispenserctl void --import ID'). A pattern too small for
the pool is refused with the bits of entropy it has and needs: its space
must hold --safety-factor (default 1e6) times the pool's codes. The codes are
never printed; claim or export them like imported ones.`,
		Example: `  dispenserctl generate --pool summer --count 1000000 --pattern 'SALE-####-####-####'
  dispenserctl generate --pool summer --count 50000 --length 16 --group 4 --charset digits`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pat, err := o.buildPattern()
			if err != nil {
				return err
			}
			cs, custom, err := charsetFlag(o.charset)
			if err != nil {
				return err
			}
			c, err := a.admin()
			if err != nil {
				return err
			}
			stream, err := c.GenerateCodes(cmd.Context(), &dispenserv1.GenerateCodesRequest{PoolId: o.poolID,
				Count: o.count, Pattern: pat, Charset: cs, CustomCharset: custom, SafetyFactor: o.safety,
				SourceName: "dispenserctl generate"})
			if err != nil {
				return err
			}
			prog := a.newGenerateProgress(o.count)
			for {
				msg, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					prog.done()
					return errors.New("the server ended the stream without a summary")
				}
				if err != nil {
					prog.done()
					return err
				}
				prog.set(msg.GetDrawn())
				if sum := msg.GetSummary(); sum != nil {
					prog.done()
					if a.asJSON {
						return a.printJSON(sum)
					}
					fmt.Fprintf(a.stdout, "generated %s codes into pool %s as import %d (%.1f bits of entropy each, %s collisions drawn again)\n",
						cli.FormatInt(sum.GetInserted()), o.poolID, sum.GetImportId(), sum.GetEntropyBits(),
						cli.FormatInt(sum.GetCollisions()))
					return nil
				}
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.poolID, "pool", "", "the pool")
	f.Int64Var(&o.count, "count", 0, "how many codes to mint (1 to 10,000,000)")
	f.StringVar(&o.pattern, "pattern", "", "the codes' shape: '#' is a random character, the rest stays")
	f.IntVar(&o.length, "length", 0, "random characters per code (instead of --pattern)")
	f.IntVar(&o.group, "group", 0, "with --length: a '-' every this many characters")
	f.StringVar(&o.prefix, "prefix", "", "with --length: fixed text before the random part")
	f.StringVar(&o.suffix, "suffix", "", "with --length: fixed text after the random part")
	f.StringVar(&o.charset, "charset", "unambiguous", "unambiguous, digits, upper, alphanumeric or custom:CHARS")
	f.Float64Var(&o.safety, "safety-factor", 0, "how many times the pool's codes the pattern's space must hold (default 1e6)")
	_ = cmd.MarkFlagRequired("pool")
	_ = cmd.MarkFlagRequired("count")
	return cmd
}

// generateProgress shows codes drawn: a bar on a terminal, a line every two
// seconds otherwise, nothing with --json.
type generateProgress struct {
	bar   *progressbar.ProgressBar
	w     io.Writer
	last  time.Time
	start time.Time
	total int64
}

func (a *app) newGenerateProgress(total int64) *generateProgress {
	p := &generateProgress{w: a.stderr, start: time.Now(), total: total}
	switch {
	case a.asJSON:
		p.w = nil
	case a.isTerminal():
		p.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(a.stderr),
			progressbar.OptionSetPredictTime(true), progressbar.OptionSetElapsedTime(true),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionSetWidth(30),
			progressbar.OptionShowCount(), progressbar.OptionSetDescription("drawing"))
	}
	return p
}

func (p *generateProgress) set(drawn int64) {
	switch {
	case p.w == nil:
	case p.bar != nil:
		_ = p.bar.Set64(min(drawn, p.total))
	case time.Since(p.last) >= 2*time.Second:
		p.last = time.Now()
		fmt.Fprintf(p.w, "generate: %s of %s codes drawn (%.0f%%), %s codes/s\n", cli.FormatInt(drawn),
			cli.FormatInt(p.total), 100*float64(drawn)/float64(p.total),
			cli.FormatInt(int64(float64(drawn)/time.Since(p.start).Seconds())))
	}
}

func (p *generateProgress) done() {
	if p.bar != nil {
		_ = p.bar.Finish()
		fmt.Fprintln(p.w)
	}
}
