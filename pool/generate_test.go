package pool_test

import (
	"math"
	"regexp"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
)

func TestGenerateCodes(t *testing.T) {
	ctx, s, db := startStore(t)
	_, err := s.CreatePool(ctx, pool.Pool{ID: "gen"})
	require.NoError(t, err)

	var drawn int64
	sum, err := s.Generate(ctx, pool.GenerateOptions{PoolID: "gen", Count: 5000, Pattern: "SALE-####-####-####"},
		func(n int64) { drawn = n })
	require.NoError(t, err)
	require.EqualValues(t, 5000, sum.Inserted)
	require.Positive(t, sum.ImportID)
	require.InDelta(t, 60, sum.EntropyBits, 0.01) // 12 characters of 32
	require.GreaterOrEqual(t, drawn, int64(5000))

	codes, err := pgx.CollectRows(testenv.Must(db.Pool.Query(ctx,
		`SELECT code FROM codes WHERE pool_id = 'gen' AND import_id = $1`, sum.ImportID)), pgx.RowTo[string])
	require.NoError(t, err)
	require.Len(t, codes, 5000)
	shape := regexp.MustCompile(`^SALE-[23456789ABCDEFGHJKLMNPQRSTUVWXYZ]{4}-[23456789ABCDEFGHJKLMNPQRSTUVWXYZ]{4}-[23456789ABCDEFGHJKLMNPQRSTUVWXYZ]{4}$`)
	seen := map[string]bool{}
	counts := map[rune]int{}
	for _, c := range codes {
		require.Regexp(t, shape, c)
		require.False(t, seen[c])
		seen[c] = true
		for _, r := range c[5:] {
			if r != '-' {
				counts[r]++
			}
		}
	}
	// Every character of the charset is drawn about as often (60,000 draws
	// over 32 characters: 1,875 each; a 20% band is over 9 sigmas wide).
	require.Len(t, counts, 32)
	for r, n := range counts {
		require.InDelta(t, 1875, n, 375, "character %q drawn %d times", r, n)
	}
	st, err := s.PoolStats(ctx, "gen")
	require.NoError(t, err)
	require.EqualValues(t, 5000, st.Available)
	require.True(t, st.Balanced())

	// A generated batch is voided as a whole, like an import.
	res, err := s.Void(ctx, pool.VoidRequest{PoolID: "gen", ImportID: sum.ImportID, Reason: "campaign cancelled"})
	require.NoError(t, err)
	require.Equal(t, pool.VoidResult{Voided: 5000}, res)
}

// The space check counts the codes the pool already holds: a pool that
// grows is refused once the pattern is too small for it, and every code
// drawn until then is unique.
func TestGenerateRefusedAsThePoolGrows(t *testing.T) {
	ctx, s, db := startStore(t)
	_, err := s.CreatePool(ctx, pool.Pool{ID: "tiny"})
	require.NoError(t, err)
	// 7 digits (23.3 bits) hold 10 codes at factor 1e6: 8 go in, 8 more
	// would make 16.
	opts := pool.GenerateOptions{PoolID: "tiny", Count: 8, Pattern: "C-#######", Charset: "0123456789"}
	_, err = s.Generate(ctx, opts, nil)
	require.NoError(t, err)
	_, err = s.Generate(ctx, opts, nil)
	require.ErrorContains(t, err, "has 23.3 bits of entropy (7 random characters of 10); 16 codes in the pool need at least 23.9 bits")
	opts.Count = 2
	_, err = s.Generate(ctx, opts, nil)
	require.NoError(t, err)
	var n, distinct int64
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT code) FROM codes WHERE pool_id = 'tiny'`).Scan(&n, &distinct))
	require.EqualValues(t, 10, n)
	require.Equal(t, n, distinct)
}

func TestGenerateRefusals(t *testing.T) {
	ctx, s, _ := startStore(t)
	_, err := s.CreatePool(ctx, pool.Pool{ID: "gen"})
	require.NoError(t, err)
	for _, c := range []struct {
		opts  pool.GenerateOptions
		field string
		text  string
	}{
		{pool.GenerateOptions{PoolID: "gen", Count: 1000, Pattern: "SALE-####"}, "pattern", "has 20.0 bits of entropy (4 random characters of 32); 1000 codes in the pool need at least 29.9 bits"},
		{pool.GenerateOptions{PoolID: "gen", Count: 10, Pattern: "SALE-2024"}, "pattern", "at least one '#'"},
		{pool.GenerateOptions{PoolID: "gen", Count: 10, Pattern: "AB#"}, "pattern", "shorter than 4"},
		{pool.GenerateOptions{PoolID: "gen", Count: 10, Pattern: "SALE ####-####-####"}, "pattern", "space"},
		{pool.GenerateOptions{PoolID: "gen", Count: 10, Pattern: "####-####-####", Charset: "A"}, "charset", "2 to 256"},
		{pool.GenerateOptions{PoolID: "gen", Count: 10, Pattern: "####-####-####", Charset: "ABA"}, "charset", "repeat"},
		{pool.GenerateOptions{PoolID: "gen", Count: 10, Pattern: "####-####-####", Charset: "AB C"}, "charset", "no space"},
		{pool.GenerateOptions{PoolID: "gen", Count: 0, Pattern: "####-####-####"}, "count", "between 1 and"},
		{pool.GenerateOptions{PoolID: "gen", Count: pool.MaxGenerateCount + 1, Pattern: "####-####-####"}, "count", "between 1 and"},
		{pool.GenerateOptions{PoolID: "gen", Count: 10, Pattern: "####-####-####", SafetyFactor: 10}, "safety_factor", "between"},
		{pool.GenerateOptions{PoolID: "gen", Count: 10, Pattern: "####-####-####", SafetyFactor: math.NaN()}, "safety_factor", "between"},
	} {
		_, err := s.Generate(ctx, c.opts, nil)
		var fe *pool.FieldError
		require.ErrorAs(t, err, &fe, "%+v", c.opts)
		require.Equal(t, c.field, fe.Field, "%+v", c.opts)
		require.Contains(t, fe.Description, c.text, "%+v", c.opts)
	}
	_, err = s.Generate(ctx, pool.GenerateOptions{PoolID: "nope", Count: 10, Pattern: "####-####-####"}, nil)
	require.ErrorIs(t, err, pool.ErrPoolNotFound)
	// The space counts the codes already in the pool: 20 bits hold 1 code
	// at factor 1e6 (19.9 bits), not 2.
	_, err = s.Generate(ctx, pool.GenerateOptions{PoolID: "gen", Count: 1, Pattern: "X-####", Charset: "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"[:32]}, nil)
	require.NoError(t, err)
	_, err = s.Generate(ctx, pool.GenerateOptions{PoolID: "gen", Count: 1, Pattern: "X-####"}, nil)
	require.ErrorContains(t, err, "2 codes in the pool")
	st, err := s.PoolStats(ctx, "gen")
	require.NoError(t, err)
	require.EqualValues(t, 1, st.Imported, "refusals write nothing")
}

func TestGenerateCustomCharsetUnicode(t *testing.T) {
	ctx, s, db := startStore(t)
	_, err := s.CreatePool(ctx, pool.Pool{ID: "uni"})
	require.NoError(t, err)
	sum, err := s.Generate(ctx, pool.GenerateOptions{PoolID: "uni", Count: 100, Pattern: "福-##########", Charset: "甲乙丙丁戊己庚辛壬癸"}, nil)
	require.NoError(t, err)
	require.EqualValues(t, 100, sum.Inserted)
	codes, err := pgx.CollectRows(testenv.Must(db.Pool.Query(ctx, `SELECT code FROM codes WHERE pool_id = 'uni'`)), pgx.RowTo[string])
	require.NoError(t, err)
	for _, c := range codes {
		require.Regexp(t, `^福-[甲乙丙丁戊己庚辛壬癸]{10}$`, c)
	}
}
