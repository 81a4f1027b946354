package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/internal/cli"
	"github.com/dispenserhq/dispenser/internal/cliflag"
	"github.com/dispenserhq/dispenser/internal/stock"
)

// auditOpts are the flags of dispenserctl audit.
type auditOpts struct {
	poolID                           string
	databaseURL, redisURL, namespace string
}

func (a *app) auditCmd() *cobra.Command {
	var o auditOpts
	cmd := &cobra.Command{
		Use:   "audit --pool ID",
		Short: "Reconcile a pool against the promises, straight from Postgres and Redis",
		Long: `Reads a pool's codes, claims and Redis keys and counts every breach of the
promises: duplicates (a code with two claims, a prize sent a code that is
not its own claim's), lost codes
(imported != available + staged + held + claimed + void, claimed codes without a
claim), users over the limit. Exits non-zero if any count is not zero.
It also reports the Redis lists' entries staged twice (left by a failover
that lost writes: Postgres still issues such a code once) and stale entries.
Reads only; changes nothing. Needs the server's database (and Redis).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.poolID == "" {
				return fmt.Errorf("--pool is required")
			}
			db, rdb, err := cli.OpenStores(cmd.Context(), o.databaseURL, o.redisURL, 2)
			if err != nil {
				return err
			}
			defer db.Close()
			defer rdb.Close()
			r, err := claim.Audit(cmd.Context(), db, stock.New(rdb, stock.NewKeys(o.namespace)), o.poolID)
			if err != nil {
				return err
			}
			w := a.stdout
			fmt.Fprintf(w, "pool %s: imported %s = available %s + staged %s + held %s + claimed %s + void %s (off by %d)\n", r.PoolID,
				cli.FormatInt(r.Imported), cli.FormatInt(r.Available), cli.FormatInt(r.Staged), cli.FormatInt(r.Held),
				cli.FormatInt(r.Claimed), cli.FormatInt(r.Void), r.Unbalanced())
			fmt.Fprintf(w, "claims %s; codes with two claims %d; claims on unclaimed codes %d; claimed codes without claim %d; staged codes outside live batches %d; available codes no refill finds %d; users over limit %d\n",
				cli.FormatInt(r.Claims), r.MultiClaimed, r.ClaimsOnUnclaimed, r.ClaimedNoClaim, r.StagedUnfindable, r.AvailableUnfindable, r.UsersOverLimit)
			fmt.Fprintf(w, "prizes sent a code not their own claim's %d; prize claims no prize holds %d\n",
				r.PrizesAstray, r.PrizeClaimsAstray)
			if r.RedisError != "" {
				fmt.Fprintf(w, "redis: not audited: %s\n", r.RedisError)
			} else {
				fmt.Fprintf(w, "redis: %d entries staged twice, %d stale entries, %d in flight\n", r.RedisDuplicates, r.RedisStale, r.RedisInFlight)
			}
			bad := r.Duplicates() + r.Lost() + r.UsersOverLimit
			fmt.Fprintf(w, "duplicates %d, lost %d, limit violations %d\n", r.Duplicates(), r.Lost(), r.UsersOverLimit)
			if bad > 0 {
				return exitError{}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.poolID, "pool", "", "the pool (required)")
	cliflag.Secret(f, &o.databaseURL, "database-url", "DISPENSER_DATABASE_URL", cli.DefaultDatabaseURL, "the server's Postgres")
	cliflag.Secret(f, &o.redisURL, "redis-url", "DISPENSER_REDIS_URL", cli.DefaultRedisURL, "the server's Redis")
	f.StringVar(&o.namespace, "redis-namespace", cli.EnvOr("DISPENSER_REDIS_NAMESPACE", "dispenser"), "[DISPENSER_REDIS_NAMESPACE]")
	return cmd
}
