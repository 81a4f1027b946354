package claim

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// WarmConn runs the group commit's statement once, with no items, on a new
// connection: its backend then compiles the function and loads the catalog
// entries it reads, and the connection prepares the statement, before a
// sale's first batch has to wait for all that (on a cold backend the first
// claims of a burst took tens of milliseconds longer: docs/BENCHMARKS.md,
// round twenty). With no items it writes nothing. It fails where the
// schema is not migrated yet; the caller decides what that means.
func WarmConn(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, claimStagedSQL, stagedArgs(nil, RefusalTTLDefault)...)
	if err != nil {
		return err
	}
	rows.Close()
	return rows.Err()
}
