package jobs

import "context"

// TryRun exposes the scheduled (non-waiting) run to the tests.
func TryRun(r *Runner, ctx context.Context, name Name, poolID string) ([]PoolReport, error) {
	return r.run(ctx, name, poolID, false)
}
