package pool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
)

// codeFile returns a lines-format file of codes PREFIX-from .. PREFIX-(to-1).
func codeFile(prefix string, from, to int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "%s-%08d\n", prefix, i)
	}
	return b.String()
}

func setupImport(t *testing.T) (*pool.Store, *testenv.Schema) {
	t.Helper()
	s, db := newStore(t)
	_, err := s.CreatePool(context.Background(), pool.Pool{ID: "p1"})
	require.NoError(t, err)
	return s, db
}

// mustImport imports file into pool poolID (one code per line).
func mustImport(t *testing.T, s *pool.Store, poolID, file string) pool.ImportSummary {
	t.Helper()
	sum, err := s.Import(context.Background(), lines(poolID), strings.NewReader(file))
	require.NoError(t, err)
	return sum
}

func lines(poolID string) pool.ImportOptions {
	return pool.ImportOptions{PoolID: poolID, Format: pool.FormatLines, SourceName: "codes.txt"}
}

func countRows(t *testing.T, db *testenv.Schema, query string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, db.Pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

func requireBalanced(t *testing.T, s *pool.Store, poolID string) pool.Stats {
	t.Helper()
	st, err := s.PoolStats(context.Background(), poolID)
	require.NoError(t, err)
	require.True(t, st.Balanced(), "imported %d != available %d + staged %d + claimed %d + void %d",
		st.Imported, st.Available, st.Staged, st.Claimed, st.Void)
	return st
}

func TestImportLinesAndReimport(t *testing.T) {
	t.Parallel()
	s, db := setupImport(t)
	file := codeFile("GIFT", 0, 50_000) + "GIFT-00000007\nbad\n\n"

	sum := mustImport(t, s, "p1", file)
	require.Positive(t, sum.ID)
	require.EqualValues(t, 50_002, sum.Lines)
	require.EqualValues(t, 50_000, sum.Inserted)
	require.EqualValues(t, 1, sum.DuplicatesInFile)
	require.EqualValues(t, 0, sum.DuplicatesInPool)
	require.EqualValues(t, 1, sum.Invalid)
	require.Equal(t, []pool.InvalidLine{{Line: 50_002, Reason: "code is shorter than 4 characters"}}, sum.InvalidLines)
	require.EqualValues(t, len(file), sum.Bytes)

	// The same file again inserts nothing.
	again := mustImport(t, s, "p1", file)
	require.EqualValues(t, 0, again.Inserted)
	require.EqualValues(t, 50_000, again.DuplicatesInPool)
	require.EqualValues(t, 1, again.DuplicatesInFile)
	require.EqualValues(t, 1, again.Invalid)

	require.EqualValues(t, 50_000, countRows(t, db, "SELECT count(*) FROM codes WHERE pool_id = 'p1'"))
	require.EqualValues(t, 2, countRows(t, db, "SELECT count(*) FROM imports WHERE pool_id = 'p1'"))
	st := requireBalanced(t, s, "p1")
	require.EqualValues(t, 50_000, st.Available)
	require.EqualValues(t, 2, st.Imports)
}

func TestImportCSV(t *testing.T) {
	ctx, s, db := startImport(t)
	exp := time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second)
	file := "code,expires_at\r\nCSV-0001," + exp.Format(time.RFC3339) + "\r\nCSV-0002,\r\nCSV-0003,soon\r\n"
	sum, err := s.Import(ctx, pool.ImportOptions{PoolID: "p1", Format: pool.FormatCSV}, strings.NewReader(file))
	require.NoError(t, err)
	require.EqualValues(t, 3, sum.Lines)
	require.EqualValues(t, 2, sum.Inserted)
	require.EqualValues(t, 1, sum.Invalid)

	var got time.Time
	require.NoError(t, db.Pool.QueryRow(ctx, "SELECT expires_at FROM codes WHERE code = 'CSV-0001'").Scan(&got))
	require.True(t, got.Equal(exp))
	require.EqualValues(t, 1, countRows(t, db, "SELECT count(*) FROM codes WHERE code = 'CSV-0002' AND expires_at IS NULL"))
	require.EqualValues(t, 1, countRows(t, db, "SELECT count(*) FROM imports WHERE format = 'csv'"))
}

func TestImportDuplicatesInPoolAndFile(t *testing.T) {
	t.Parallel()
	s, _ := setupImport(t)
	mustImport(t, s, "p1", codeFile("A", 0, 100))
	// 50 old codes, 50 new, and every line twice.
	file := codeFile("A", 50, 150) + codeFile("A", 50, 150)
	sum := mustImport(t, s, "p1", file)
	require.EqualValues(t, 200, sum.Lines)
	require.EqualValues(t, 50, sum.Inserted)
	require.EqualValues(t, 50, sum.DuplicatesInPool)
	require.EqualValues(t, 100, sum.DuplicatesInFile)
	require.EqualValues(t, 150, requireBalanced(t, s, "p1").Imported)
}

func TestImportStrictRejectsWholeFile(t *testing.T) {
	ctx, s, db := startImport(t)
	file := codeFile("S", 0, 1000) + "x\n" + codeFile("S", 1000, 2000) + "with space\n"
	opts := lines("p1")
	opts.Strict = true
	_, err := s.Import(ctx, opts, strings.NewReader(file))
	var rej *pool.ImportRejectedError
	require.ErrorAs(t, err, &rej)
	require.EqualValues(t, 2, rej.Summary.Invalid)
	require.Equal(t, []pool.InvalidLine{
		{Line: 1001, Reason: "code is shorter than 4 characters"},
		{Line: 2002, Reason: "contains a space or control character"},
	}, rej.Summary.InvalidLines)
	require.Zero(t, countRows(t, db, "SELECT count(*) FROM codes"))
	require.Zero(t, countRows(t, db, "SELECT count(*) FROM imports"))
}

// An upload that breaks after many batches were copied leaves no trace.
func TestImportInterruptedLeavesNothing(t *testing.T) {
	ctx, s, db := startImport(t)
	boom := errors.New("connection reset by client")
	src := io.MultiReader(strings.NewReader(codeFile("CUT", 0, 100_000)), iotest.ErrReader(boom))
	_, err := s.Import(ctx, lines("p1"), src)
	require.ErrorIs(t, err, boom)
	require.Zero(t, countRows(t, db, "SELECT count(*) FROM codes"))
	require.Zero(t, countRows(t, db, "SELECT count(*) FROM imports"))

	// The pool's connections hold no leftover staging table: a full import
	// afterwards sees exactly its own rows.
	sum := mustImport(t, s, "p1", codeFile("CUT", 0, 10))
	require.EqualValues(t, 10, sum.Inserted)
	requireBalanced(t, s, "p1")
}

// A caller that goes away mid-upload (context cancelled) leaves no trace.
func TestImportCancelledLeavesNothing(t *testing.T) {
	t.Parallel()
	s, db := setupImport(t)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.WriteString(pw, codeFile("CNL", 0, 60_000))
		cancel() // the upload stalls here and the caller gives up
		<-time.After(50 * time.Millisecond)
		pw.CloseWithError(context.Canceled)
	}()
	_, err := s.Import(ctx, lines("p1"), pr)
	require.ErrorIs(t, err, context.Canceled)
	require.Zero(t, countRows(t, db, "SELECT count(*) FROM codes"))
	require.Zero(t, countRows(t, db, "SELECT count(*) FROM imports"))
}

func TestImportUnknownPoolAndBadOptions(t *testing.T) {
	ctx, s, _ := startImport(t)
	_, err := s.Import(ctx, lines("nope"), strings.NewReader("AAAA\n"))
	require.ErrorIs(t, err, pool.ErrPoolNotFound)

	var fe *pool.FieldError
	_, err = s.Import(ctx, pool.ImportOptions{PoolID: "p1"}, strings.NewReader("AAAA\n"))
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "options.format", fe.Field)
	_, err = s.Import(ctx, lines("Bad Id"), strings.NewReader("AAAA\n"))
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "options.pool_id", fe.Field)
}

// Two imports of overlapping files into one pool, at once, leave each code
// exactly once and account for every line.
func TestImportConcurrentOverlapping(t *testing.T) {
	ctx, s, db := startImport(t)
	files := []string{
		codeFile("OV", 0, 60_000),
		codeFile("OV", 30_000, 90_000),
		codeFile("OV", 45_000, 75_000) + codeFile("OV", 0, 10),
	}
	var wg sync.WaitGroup
	sums := make([]pool.ImportSummary, len(files))
	errs := make([]error, len(files))
	for i, f := range files {
		wg.Go(func() { sums[i], errs[i] = s.Import(ctx, lines("p1"), strings.NewReader(f)) })
	}
	wg.Wait()
	var inserted, inPool int64
	for i := range files {
		require.NoError(t, errs[i])
		inserted += sums[i].Inserted
		inPool += sums[i].DuplicatesInPool
		require.Equal(t, sums[i].Lines, sums[i].Inserted+sums[i].DuplicatesInPool+sums[i].DuplicatesInFile+sums[i].Invalid)
	}
	require.EqualValues(t, 90_000, inserted)
	require.EqualValues(t, 60_000+60_000+30_010-90_000, inPool)
	require.EqualValues(t, 90_000, countRows(t, db, "SELECT count(DISTINCT code) FROM codes WHERE pool_id = 'p1'"))
	require.EqualValues(t, 90_000, countRows(t, db, "SELECT count(*) FROM codes WHERE pool_id = 'p1'"))
	requireBalanced(t, s, "p1")
}

// Codes are unique per pool, not globally: the same file loads into two pools.
func TestImportSameCodesTwoPools(t *testing.T) {
	ctx, s, _ := startImport(t)
	_, err := s.CreatePool(ctx, pool.Pool{ID: "p2"})
	require.NoError(t, err)
	for _, id := range []string{"p1", "p2"} {
		sum := mustImport(t, s, id, codeFile("X", 0, 100))
		require.EqualValues(t, 100, sum.Inserted)
	}
}

// Stats add up whatever state the codes are in.
func TestStatsBalancedAcrossStates(t *testing.T) {
	ctx, s, db := startImport(t)
	mustImport(t, s, "p1", codeFile("ST", 0, 1000))
	_, err := db.Pool.Exec(ctx, `UPDATE codes SET state = 'staged', stage_batch = 1 WHERE id IN (SELECT id FROM codes ORDER BY id LIMIT 300)`)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `UPDATE codes SET state = 'void', void_reason = 'recall' WHERE id IN (SELECT id FROM codes WHERE state = 'available' ORDER BY id LIMIT 50)`)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `WITH c AS (SELECT id FROM codes WHERE state = 'available' ORDER BY id LIMIT 20),
		u AS (UPDATE codes SET state = 'claimed' FROM c WHERE codes.id = c.id RETURNING codes.id)
		INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id)
		SELECT 'p1', 'r' || id, 'u' || (id % 7), 1 + (id / 7) % 5, id FROM u`)
	require.NoError(t, err)
	st := requireBalanced(t, s, "p1")
	require.EqualValues(t, 1000, st.Imported)
	require.EqualValues(t, 630, st.Available)
	require.EqualValues(t, 300, st.Staged)
	require.EqualValues(t, 50, st.Void)
	require.EqualValues(t, 20, st.Claimed)
	require.EqualValues(t, 7, st.Claimants)

	// A code deleted behind the store's back shows as unbalanced.
	_, err = db.Pool.Exec(ctx, `DELETE FROM codes WHERE id = (SELECT min(id) FROM codes WHERE state = 'available')`)
	require.NoError(t, err)
	st, err = s.PoolStats(ctx, "p1")
	require.NoError(t, err)
	require.False(t, st.Balanced())
}

// Among duplicate lines of one file, the first one wins, also when the import
// sorts rows by code before inserting them.
func TestImportFirstDuplicateWins(t *testing.T) {
	ctx, s, db := startImport(t)
	first := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	var b strings.Builder
	b.WriteString("code,expires_at\n")
	for i := range 5000 {
		fmt.Fprintf(&b, "DUP-%05d,%s\n", i%50, first.Add(time.Duration(i)*time.Minute).Format(time.RFC3339))
	}
	sum, err := s.Import(ctx, pool.ImportOptions{PoolID: "p1", Format: pool.FormatCSV}, strings.NewReader(b.String()))
	require.NoError(t, err)
	require.EqualValues(t, 50, sum.Inserted)
	require.EqualValues(t, 4950, sum.DuplicatesInFile)
	// Code DUP-000nn first appears on data line nn+1, with expiry first+nn min.
	require.Zero(t, countRows(t, db, `SELECT count(*) FROM codes
		WHERE expires_at <> $1::timestamptz + (substr(code, 5)::int * interval '1 minute')`, first))
}
