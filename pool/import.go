package pool

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"
)

var (
	//go:embed sql/import_create_temp.sql
	importCreateTempSQL string
	//go:embed sql/import_lock_pool.sql
	importLockPoolSQL string
	//go:embed sql/import_begin.sql
	importBeginSQL string
	//go:embed sql/import_insert_codes.sql
	importInsertCodesSQL string
	//go:embed sql/import_count_distinct.sql
	importCountDistinctSQL string
	//go:embed sql/import_finish.sql
	importFinishSQL string
)

// importBatchRows is how many parsed rows go to Postgres in one COPY. Each
// COPY is its own short statement, so a slow upload never holds a snapshot
// open (which would stall vacuum and the claim path's SKIP LOCKED scans).
const importBatchRows = 20_000

// ImportOptions describes one import.
type ImportOptions struct {
	// PoolID is the pool to load into; it must exist.
	PoolID string
	// Format is the file's layout.
	Format Format
	// Strict refuses the whole file if any line is invalid.
	Strict bool
	// SourceName is the file name, kept in the import's record.
	SourceName string
}

// ImportSummary tells what an import did. Lines = Inserted + DuplicatesInFile
// + DuplicatesInPool + Invalid.
type ImportSummary struct {
	ID               int64
	Lines            int64
	Inserted         int64
	DuplicatesInFile int64
	DuplicatesInPool int64
	Invalid          int64
	// InvalidLines lists the first 100 invalid lines.
	InvalidLines []InvalidLine
	Bytes        int64
	// Staging is how long the upload, parsing and copying into the staging
	// table took; Landing how long the final transaction took.
	Staging, Landing time.Duration
}

// Import reads a file of codes from src and adds its new codes to the pool,
// all or nothing.
//
// Rows are parsed while they arrive and copied in batches into a temporary
// table of a dedicated connection; once src ends, one short transaction moves
// them into the pool, skipping codes the pool already holds. If src fails or
// ctx ends first, the temporary table goes away with nothing inserted: an
// import lands whole or not at all, and importing a file twice inserts
// nothing the second time. Imports into one pool take turns only for the
// final transaction, so they run concurrently and never deadlock.
func (s *Store) Import(ctx context.Context, opts ImportOptions, src io.Reader) (ImportSummary, error) {
	if err := ValidateID("options.pool_id", opts.PoolID); err != nil {
		return ImportSummary{}, err
	}
	if opts.Format != FormatLines && opts.Format != FormatCSV {
		return ImportSummary{}, fieldErrorf("options.format", "must be lines or csv")
	}
	if len(opts.SourceName) > 1024 {
		return ImportSummary{}, fieldErrorf("options.source_name", "must be at most 1024 bytes")
	}
	if _, err := s.GetPool(ctx, opts.PoolID); err != nil {
		return ImportSummary{}, err
	}

	conn, err := s.session.Acquire(ctx)
	if err != nil {
		return ImportSummary{}, storeError("import: acquire connection", err)
	}
	defer releaseImportConn(conn)

	if _, err := conn.Exec(ctx, importCreateTempSQL); err != nil {
		return ImportSummary{}, storeError("import: create staging table", err)
	}

	started := time.Now()
	counter := &countingReader{r: src}
	p := &parser{format: opts.Format, now: time.Now(), batchSize: importBatchRows}
	valid, err := copyParsed(ctx, conn, p, counter)
	if err != nil {
		return ImportSummary{}, storeError("import", err)
	}

	sum := ImportSummary{Lines: p.lines, Invalid: p.invalid, InvalidLines: p.samples, Bytes: counter.n,
		Staging: time.Since(started)}
	if opts.Strict && p.invalid > 0 {
		return ImportSummary{}, &ImportRejectedError{Summary: sum}
	}
	landing := time.Now()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		return landImport(ctx, tx, opts, valid, &sum)
	})
	if err != nil {
		return ImportSummary{}, storeError("import", err)
	}
	sum.Landing = time.Since(landing)
	return sum, nil
}

// copyParsed runs the parser over src in one goroutine while this one copies
// its batches into the staging table, and returns how many rows were copied.
func copyParsed(ctx context.Context, conn *pgxpool.Conn, p *parser, src io.Reader) (int64, error) {
	g, gctx := errgroup.WithContext(ctx)
	batches := make(chan []importRow, 2)
	p.emit = func(b []importRow) error {
		select {
		case batches <- b:
			return nil
		case <-gctx.Done():
			return context.Cause(gctx)
		}
	}
	g.Go(func() error {
		defer close(batches)
		return p.run(src)
	})
	var copied int64
	g.Go(func() error {
		for b := range batches {
			n, err := conn.CopyFrom(gctx, pgx.Identifier{"import_rows"}, []string{"line", "code", "expires_at"}, &rowSource{rows: b, i: -1})
			if err != nil {
				return fmt.Errorf("copy rows: %w", err)
			}
			copied += n
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			// The caller went away; whatever failed after that is its echo
			// (a statement cancelled mid-COPY, say).
			return 0, ctx.Err()
		}
		return 0, err
	}
	return copied, ctx.Err()
}

// landingWorkMemSQL gives a landing transaction the memory to sort millions
// of staged codes (the insert's DISTINCT ON and ORDER BY, an import's
// count(DISTINCT)) in memory rather than in temporary files.
const landingWorkMemSQL = "SET LOCAL work_mem = '256MB'"

// analyzeStagedSQL gives the planner the staged rows' statistics before the
// landing insert: without them it takes a million distinct codes for 200,
// and probes the unique index once per code (a nested loop) where one merge
// of the sorted rows with the pool's codes costs a quarter less
// (docs/BENCHMARKS.md, "Bulk import"). About 0.1 s for a million rows.
const analyzeStagedSQL = "ANALYZE pg_temp.import_rows"

// landImport moves the staged rows into the pool inside tx and fills in the
// summary's counts and id.
func landImport(ctx context.Context, tx pgx.Tx, opts ImportOptions, valid int64, sum *ImportSummary) error {
	if _, err := tx.Exec(ctx, landingWorkMemSQL); err != nil {
		return fmt.Errorf("set work_mem: %w", err)
	}
	// Before the pool's lock: the statistics are this session's own, and
	// other imports into the pool need not wait for them.
	if _, err := tx.Exec(ctx, analyzeStagedSQL); err != nil {
		return fmt.Errorf("analyze staged rows: %w", err)
	}
	if _, err := tx.Exec(ctx, importLockPoolSQL, opts.PoolID); err != nil {
		return fmt.Errorf("lock pool for import: %w", err)
	}
	if err := tx.QueryRow(ctx, importBeginSQL, opts.PoolID, opts.SourceName, opts.Format.String(), opts.Strict).Scan(&sum.ID); err != nil {
		return fmt.Errorf("record import: %w", err)
	}
	tag, err := tx.Exec(ctx, importInsertCodesSQL, opts.PoolID, sum.ID)
	if err != nil {
		return fmt.Errorf("insert codes: %w", err)
	}
	sum.Inserted = tag.RowsAffected()
	if sum.Inserted < valid {
		// Some rows were skipped: tell repeats within the file from codes
		// the pool already held. Only paid for when there were skips.
		var distinct int64
		if err := tx.QueryRow(ctx, importCountDistinctSQL).Scan(&distinct); err != nil {
			return fmt.Errorf("count distinct codes: %w", err)
		}
		sum.DuplicatesInFile = valid - distinct
		sum.DuplicatesInPool = distinct - sum.Inserted
	}
	_, err = tx.Exec(ctx, importFinishSQL, sum.ID, sum.Lines, sum.Inserted, sum.DuplicatesInFile,
		sum.DuplicatesInPool, sum.Invalid, sum.Bytes)
	if err != nil {
		return fmt.Errorf("finish import record: %w", err)
	}
	return nil
}

// releaseImportConn drops the staging table before the connection goes back
// to the pool. If that fails, the connection is closed instead, which drops
// the table with it; either way no later user of the connection sees it.
func releaseImportConn(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS pg_temp.import_rows"); err != nil {
		_ = conn.Conn().Close(ctx)
	}
	conn.Release()
}

// rowSource feeds a batch of rows to CopyFrom without building a []any per row.
type rowSource struct {
	rows []importRow
	i    int
	vals [3]any
}

func (r *rowSource) Next() bool { r.i++; return r.i < len(r.rows) }

func (r *rowSource) Values() ([]any, error) {
	row := &r.rows[r.i]
	r.vals[0], r.vals[1] = row.line, row.code
	if row.expiresAt.IsZero() {
		r.vals[2] = nil
	} else {
		r.vals[2] = row.expiresAt
	}
	return r.vals[:], nil
}

func (r *rowSource) Err() error { return nil }

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
