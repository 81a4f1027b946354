package claim

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dispenserhq/dispenser/internal/pgerr"
)

//go:embed sql/stale_probe_stats.sql
var staleProbeStatsSQL string

// ProbeTables are the tables the claim path probes by key for every claim
// (a request's claim, refusal or ended hold; a user's claims). Their plans
// are only as good as their statistics.
var ProbeTables = []string{"claims", "refusals", "hold_releases"}

// ProbeStatsMinPages is how large a probe table must be before
// RefreshProbeStats analyzes it: below it, any plan reads little.
const ProbeStatsMinPages = 8

// RefreshProbeStats analyzes each of ProbeTables that has grown to four
// times or more the size its planner statistics last counted (and to at
// least ProbeStatsMinPages), logs what it analyzed or why it failed,
// and returns the tables it found so. A table never analyzed is left to
// autovacuum: the planner reckons with its size on disk, and its plans
// probe each key through its own index. Analyzing it in a sale cost
// Postgres an ANALYZE at each fourfold of the table and the replanning of
// every session's cached statements (docs/BENCHMARKS.md, round
// twenty-two).
//
// Why: a probe table analyzed while empty (an ANALYZE of a new database, a
// restore, or autovacuum after the last refusals or holds were deleted)
// tells the planner that every way of reading it costs the same. A plan
// cached then can probe a request's claim through the index of a user's
// claims (seen in the bench), reading the whole pool's rows for
// every item of every group commit. Measured on a flash sale of 60,000
// claims: 938 claims/s and 1,019 µs of Postgres CPU per claim, against
// 5,600 and 96 (docs/BENCHMARKS.md, round eleven). Autovacuum would
// analyze the table again within its naptime (a minute), or never with it
// off; this runs with the refill job, every few seconds, and from the
// group commit early in a sale (committer.checkStats). An ANALYZE also
// drops every session's cached plans of the table, so the group commit's
// next plans see the table as it is.
//
// A table another ANALYZE or VACUUM is working on is skipped (SKIP_LOCKED):
// it will have statistics soon, or the next run analyzes it.
func RefreshProbeStats(ctx context.Context, db *pgxpool.Pool, log *slog.Logger) ([]string, error) {
	stale, err := analyzeStaleProbeTables(ctx, db)
	switch {
	case err != nil:
		log.WarnContext(ctx, "refreshing the claim tables' statistics failed", "err", err)
	case len(stale) > 0:
		log.InfoContext(ctx, "claim tables analyzed: their statistics counted a fraction of their size", "tables", stale)
	}
	return stale, err
}

func analyzeStaleProbeTables(ctx context.Context, db *pgxpool.Pool) ([]string, error) {
	rows, err := db.Query(ctx, staleProbeStatsSQL, ProbeStatsMinPages, ProbeTables)
	if err != nil {
		return nil, pgerr.Wrap("probe table sizes", err)
	}
	stale, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, pgerr.Wrap("probe table sizes", err)
	}
	for _, table := range stale {
		// The names come from ProbeTables, never from input.
		if _, err := db.Exec(ctx, "ANALYZE (SKIP_LOCKED) "+pgx.Identifier{table}.Sanitize()); err != nil {
			return nil, pgerr.Wrap(fmt.Sprintf("analyze %s", table), err)
		}
	}
	return stale, nil
}
