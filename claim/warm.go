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
// round twenty). With no items it writes nothing. Where the schema is not
// migrated yet (dispenserd migrate, keys create or --migrate on a new
// database) there is nothing to warm, and it does nothing rather than run
// a statement that fails: each such failure was an ERROR in Postgres's log.
func WarmConn(ctx context.Context, conn *pgx.Conn) error {
	var migrated bool
	if err := conn.QueryRow(ctx, "SELECT to_regproc('dispenser_claim_staged_v3') IS NOT NULL").Scan(&migrated); err != nil {
		return err
	}
	if !migrated {
		return nil
	}
	rows, err := conn.Query(ctx, claimStagedSQL, stagedArgs(nil, RefusalTTLDefault)...)
	if err != nil {
		return err
	}
	rows.Close()
	return rows.Err()
}
