// Package scanread runs the reads that count a whole pool (the audit, pool
// stats): one statement, in a read-only transaction of its own with JIT
// compilation off.
//
// Such a statement has many small expressions over hundreds of thousands of
// rows, so the planner's cost passes jit_above_cost (and, for the audit, the
// inlining and optimisation thresholds) on a stock server: compiling took
// about 500 ms of an audit of 730 to 810 ms, which runs in about 200 ms
// without it, on a pool of 300,000 codes (docs/BENCHMARKS.md). SET LOCAL keeps the setting to this
// transaction, so it works behind a transaction pooler too.
package scanread

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Batcher is what Row needs of a pool or a connection.
type Batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Row runs query with args and scans its one row into dest, in one round
// trip: BEGIN READ ONLY, SET LOCAL jit = off, the query, COMMIT. A query
// that answers no row returns pgx.ErrNoRows, as QueryRow does.
func Row(ctx context.Context, db Batcher, query string, args []any, dest ...any) error {
	b := &pgx.Batch{}
	b.Queue("BEGIN READ ONLY")
	b.Queue("SET LOCAL jit = off")
	b.Queue(query, args...).QueryRow(func(row pgx.Row) error { return row.Scan(dest...) })
	b.Queue("COMMIT")
	return db.SendBatch(ctx, b).Close()
}
