package pool

import (
	"bufio"
	"context"
	"crypto/rand"
	_ "embed"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

//go:embed sql/generate_pool_size.sql
var generatePoolSizeSQL string

// Charsets the generator draws from by name.
var Charsets = map[string]string{
	// Digits only, for codes typed on a phone keypad.
	"digits": "0123456789",
	// Upper-case letters.
	"upper": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
	// Digits and upper-case letters.
	"alphanumeric": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
	// Digits and upper-case letters without look-alikes (0/O, 1/I): 32
	// characters, 5 bits each. The default.
	"unambiguous": "23456789ABCDEFGHJKLMNPQRSTUVWXYZ",
}

// Generator limits and defaults.
const (
	// DefaultCharset is the charset of a pattern that names none.
	DefaultCharset = "unambiguous"
	// PatternSlot is the pattern character replaced by a random one.
	PatternSlot = '#'
	// MaxGenerateCount is the most codes one GenerateCodes call makes.
	MaxGenerateCount = 10_000_000
	// DefaultSafetyFactor is how many times larger than the pool (after
	// generation) a pattern's space must be: a guesser then hits a valid
	// code once in a million tries.
	DefaultSafetyFactor = 1e6
	// MinSafetyFactor bounds the factor a caller may lower it to.
	MinSafetyFactor = 1e3
)

// GenerateOptions describes one generation.
type GenerateOptions struct {
	PoolID string
	// Count is how many codes to add, 1 to MaxGenerateCount.
	Count int64
	// Pattern is the code's shape: every PatternSlot ('#') becomes a random
	// character of Charset, every other character stays as written
	// ("SALE-####-####"). 4 to 128 characters, at least one slot.
	Pattern string
	// Charset is the set random characters come from, 2 to 256 distinct
	// printable characters; empty: Charsets[DefaultCharset].
	Charset string
	// SafetyFactor: the pattern's space must hold at least this many times
	// the pool's codes after generation. Zero: DefaultSafetyFactor.
	SafetyFactor float64
	// SourceName is kept in the import's record.
	SourceName string
}

// GenerateSummary tells what a generation did.
type GenerateSummary struct {
	// ImportID is the import the codes landed as (void it as a whole with
	// VoidImport).
	ImportID int64
	// Inserted is always the requested count.
	Inserted int64
	// Collisions counts drawn codes the pool already held (or that were
	// drawn twice), drawn again.
	Collisions int64
	// EntropyBits is log2 of the pattern's space.
	EntropyBits float64
	// Staging is how long drawing and copying took; Landing the final
	// transaction.
	Staging, Landing time.Duration
}

// pattern is a parsed, checked GenerateOptions pattern.
type pattern struct {
	parts   []string // literal runs; a slot sits between consecutive parts
	slots   int
	charset []string // one string per character, so multi-byte runes work
	bits    float64
}

// parsePattern checks the pattern and charset and computes the entropy.
func parsePattern(pat, charset string) (pattern, error) {
	if charset == "" {
		charset = Charsets[DefaultCharset]
	}
	if !utf8.ValidString(charset) {
		return pattern{}, fieldErrorf("charset", "must be valid UTF-8")
	}
	seen := map[rune]bool{}
	var p pattern
	for _, r := range charset {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) || r == PatternSlot {
			return pattern{}, fieldErrorf("charset", "must hold printable characters only, no space and no '#'")
		}
		if seen[r] {
			return pattern{}, fieldErrorf("charset", "must not repeat a character")
		}
		seen[r] = true
		p.charset = append(p.charset, string(r))
	}
	if len(p.charset) < 2 || len(p.charset) > 256 {
		return pattern{}, fieldErrorf("charset", "must hold 2 to 256 distinct characters")
	}
	if pat == "" {
		return pattern{}, fieldErrorf("pattern", "is required, e.g. \"SALE-####-####\" ('#' is a random character)")
	}
	if reason := ValidateCode(pat); reason != "" {
		return pattern{}, fieldErrorf("pattern", "%s", strings.Replace(reason, "code is", "is", 1))
	}
	parts := strings.Split(pat, string(PatternSlot))
	p.parts, p.slots = parts, len(parts)-1
	if p.slots == 0 {
		return pattern{}, fieldErrorf("pattern", "must hold at least one '#' (a random character)")
	}
	p.bits = float64(p.slots) * math.Log2(float64(len(p.charset)))
	return p, nil
}

// checkSpace refuses a pattern whose space is under factor times total codes.
func (p pattern) checkSpace(total int64, factor float64) error {
	need := math.Log2(float64(total) * factor)
	if p.bits < need {
		return fieldErrorf("pattern", "has %.1f bits of entropy (%d random characters of %d); %d codes in the pool "+
			"need at least %.1f bits at a safety factor of %g: add random characters or widen the charset",
			p.bits, p.slots, len(p.charset), total, need, factor)
	}
	return nil
}

// drawer makes random codes of a pattern from crypto/rand, by rejection
// sampling so every character is equally likely.
type drawer struct {
	p     pattern
	src   *bufio.Reader
	limit int // bytes at or above it are rejected
	b     strings.Builder
}

func newDrawer(p pattern, src io.Reader) *drawer {
	if src == nil {
		src = rand.Reader
	}
	n := len(p.charset)
	return &drawer{p: p, src: bufio.NewReaderSize(src, 64<<10), limit: 256 - 256%n}
}

func (d *drawer) code() (string, error) {
	d.b.Reset()
	for i, part := range d.p.parts {
		d.b.WriteString(part)
		if i == len(d.p.parts)-1 {
			break
		}
		for {
			c, err := d.src.ReadByte()
			if err != nil {
				return "", fmt.Errorf("random source: %w", err)
			}
			if int(c) < d.limit {
				d.b.WriteString(d.p.charset[int(c)%len(d.p.charset)])
				break
			}
		}
	}
	return d.b.String(), nil
}

// Generate adds opts.Count new codes of a pattern to the pool, drawn with
// crypto/rand, unique within the pool, as one import: all or nothing, with
// an import id, voidable as a whole. It refuses a pattern whose space is
// under the safety factor times the pool's codes after generation, naming
// the entropy it has and needs. progress, if set, is told how many codes are
// drawn so far.
func (s *Store) Generate(ctx context.Context, opts GenerateOptions, progress func(drawn int64)) (GenerateSummary, error) {
	if err := ValidateID("pool_id", opts.PoolID); err != nil {
		return GenerateSummary{}, err
	}
	if opts.Count < 1 || opts.Count > MaxGenerateCount {
		return GenerateSummary{}, fieldErrorf("count", "must be between 1 and %d", MaxGenerateCount)
	}
	factor := opts.SafetyFactor
	if factor == 0 {
		factor = DefaultSafetyFactor
	}
	if math.IsNaN(factor) || factor < MinSafetyFactor || factor > 1e18 {
		return GenerateSummary{}, fieldErrorf("safety_factor", "must be between %g and 1e18", MinSafetyFactor)
	}
	if len(opts.SourceName) > 1024 {
		return GenerateSummary{}, fieldErrorf("source_name", "must be at most 1024 bytes")
	}
	p, err := parsePattern(opts.Pattern, opts.Charset)
	if err != nil {
		return GenerateSummary{}, err
	}
	if _, err := s.GetPool(ctx, opts.PoolID); err != nil {
		return GenerateSummary{}, err
	}
	var existing int64
	if err := s.db.QueryRow(ctx, generatePoolSizeSQL, opts.PoolID).Scan(&existing); err != nil {
		return GenerateSummary{}, storeError("generate: pool size", err)
	}
	if err := p.checkSpace(existing+opts.Count, factor); err != nil {
		return GenerateSummary{}, err
	}
	if progress == nil {
		progress = func(int64) {}
	}

	conn, err := s.session.Acquire(ctx)
	if err != nil {
		return GenerateSummary{}, storeError("generate: acquire connection", err)
	}
	defer releaseImportConn(conn)
	if _, err := conn.Exec(ctx, importCreateTempSQL); err != nil {
		return GenerateSummary{}, storeError("generate: create staging table", err)
	}
	sum := GenerateSummary{EntropyBits: p.bits}
	d := newDrawer(p, s.random)
	started := time.Now()
	var line int64
	// stage draws n codes into the staging table, in COPY batches.
	stage := func(conn interface {
		CopyFrom(context.Context, pgx.Identifier, []string, pgx.CopyFromSource) (int64, error)
	}, n int64) error {
		rows := make([]importRow, 0, min(n, importBatchRows))
		for left := n; left > 0; {
			rows = rows[:0]
			for range min(left, importBatchRows) {
				code, err := d.code()
				if err != nil {
					return err
				}
				line++
				rows = append(rows, importRow{line: line, code: code})
			}
			if _, err := conn.CopyFrom(ctx, pgx.Identifier{"import_rows"}, []string{"line", "code", "expires_at"},
				&rowSource{rows: rows, i: -1}); err != nil {
				return fmt.Errorf("copy codes: %w", err)
			}
			left -= int64(len(rows))
			progress(line)
		}
		return nil
	}
	if err := stage(conn, opts.Count); err != nil {
		return GenerateSummary{}, storeError("generate", err)
	}
	sum.Staging = time.Since(started)

	landing := time.Now()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, landingWorkMemSQL); err != nil {
			return fmt.Errorf("set work_mem: %w", err)
		}
		if _, err := tx.Exec(ctx, importLockPoolSQL, opts.PoolID); err != nil {
			return fmt.Errorf("lock pool for generation: %w", err)
		}
		if err := tx.QueryRow(ctx, importBeginSQL, opts.PoolID, opts.SourceName, "generated", false).Scan(&sum.ImportID); err != nil {
			return fmt.Errorf("record import: %w", err)
		}
		// Insert, then draw again for every code that collided (with the
		// pool or within the draw), until the count is met. At the safety
		// factor a collision is a one-in-a-million event per code.
		for round := 0; sum.Inserted < opts.Count; round++ {
			if round == 20 {
				return fmt.Errorf("generation kept colliding: %d of %d codes after %d rounds", sum.Inserted, opts.Count, round)
			}
			if round > 0 {
				if _, err := tx.Exec(ctx, "TRUNCATE pg_temp.import_rows"); err != nil {
					return fmt.Errorf("clear staging table: %w", err)
				}
				if err := stage(tx, opts.Count-sum.Inserted); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, analyzeStagedSQL); err != nil {
				return fmt.Errorf("analyze staged codes: %w", err)
			}
			tag, err := tx.Exec(ctx, importInsertCodesSQL, opts.PoolID, sum.ImportID)
			if err != nil {
				return fmt.Errorf("insert codes: %w", err)
			}
			sum.Inserted += tag.RowsAffected()
		}
		sum.Collisions = line - sum.Inserted
		_, err := tx.Exec(ctx, importFinishSQL, sum.ImportID, line, sum.Inserted, int64(0), sum.Collisions, int64(0), int64(0))
		if err != nil {
			return fmt.Errorf("finish import record: %w", err)
		}
		return nil
	})
	if err != nil {
		return GenerateSummary{}, storeError("generate", err)
	}
	sum.Landing = time.Since(landing)
	return sum, nil
}
