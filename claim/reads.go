package claim

import (
	"context"
	_ "embed"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dispenserhq/dispenser/internal/input"
	"github.com/dispenserhq/dispenser/internal/pgerr"
	"github.com/dispenserhq/dispenser/pool"
)

var (
	//go:embed sql/get_claim.sql
	getClaimSQL string
	//go:embed sql/list_user_claims.sql
	listUserClaimsSQL string
	//go:embed sql/export_claims.sql
	exportClaimsSQL string
)

// Reads answers what has been claimed: one claim by request, a user's
// claims, a pool's claims for export. It reads Postgres only (the claims
// are there, whatever Redis holds) and never takes part in a claim.
type Reads struct {
	db    *pgxpool.Pool
	pools *pool.Store
}

// NewReads returns the claim reads of db.
func NewReads(db *pgxpool.Pool) *Reads {
	return &Reads{db: db, pools: pool.NewStore(db)}
}

// GetClaim returns the claim made for a request, or ErrNotFound. With a
// userID, a claim of another user is ErrRequestReused, as ClaimCode would
// answer: nothing of it is returned. An open reservation is
// ErrReservationPending: it is not a claim until confirmed.
func (r *Reads) GetClaim(ctx context.Context, poolID, requestID, userID string) (Claim, error) {
	if err := pool.ValidateID("pool_id", poolID); err != nil {
		return Claim{}, err
	}
	if err := input.RequestID("request_id", requestID); err != nil {
		return Claim{}, err
	}
	if userID != "" {
		if err := input.UserID("user_id", userID); err != nil {
			return Claim{}, err
		}
	}
	var owner string
	var held bool
	var row claimRow
	err := r.db.QueryRow(ctx, getClaimSQL, poolID, requestID).Scan(append([]any{&owner, &held}, row.dest()...)...)
	if err == nil && userID != "" && owner != userID {
		return Claim{}, ErrRequestReused
	}
	if err == nil && held {
		// Not a claim until confirmed; Postgres did not send its code.
		return Claim{}, ErrReservationPending
	}
	if errors.Is(err, pgx.ErrNoRows) {
		if _, perr := r.pools.GetPool(ctx, poolID); perr != nil {
			return Claim{}, perr
		}
		return Claim{}, ErrNotFound
	}
	if err != nil {
		return Claim{}, pgerr.Wrap("get claim", err)
	}
	return row.claim(poolID, requestID, owner), nil
}

// ListUserClaims returns a user's claims in a pool, in claim order.
func (r *Reads) ListUserClaims(ctx context.Context, poolID, userID string) ([]Claim, error) {
	if err := pool.ValidateID("pool_id", poolID); err != nil {
		return nil, err
	}
	if err := input.UserID("user_id", userID); err != nil {
		return nil, err
	}
	if _, err := r.pools.GetPool(ctx, poolID); err != nil {
		return nil, err
	}
	rows, err := r.db.Query(ctx, listUserClaimsSQL, poolID, userID)
	if err != nil {
		return nil, pgerr.Wrap("list user claims", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Claim, error) {
		var requestID string
		var c claimRow
		err := row.Scan(append([]any{&requestID}, c.dest()...)...)
		return c.claim(poolID, requestID, userID), err
	})
	if err != nil {
		return nil, pgerr.Wrap("list user claims", err)
	}
	return out, nil
}

// exportPage is how many claims one export statement reads.
const exportPage = 1000

// ExportClaims calls fn with the pool's claims committed in [since, until),
// in claim order, a page at a time. Zero bounds are open.
func (r *Reads) ExportClaims(ctx context.Context, poolID string, since, until time.Time, fn func([]Claim) error) error {
	if err := pool.ValidateID("pool_id", poolID); err != nil {
		return err
	}
	if _, err := r.pools.GetPool(ctx, poolID); err != nil {
		return err
	}
	if since.IsZero() {
		since = time.Unix(0, 0)
	}
	if until.IsZero() {
		until = time.Now().Add(time.Hour)
	}
	afterAt, afterID := time.Unix(0, 0), int64(0)
	for {
		rows, err := r.db.Query(ctx, exportClaimsSQL, poolID, since, until, afterAt, afterID, exportPage)
		if err != nil {
			return pgerr.Wrap("export claims", err)
		}
		var page []Claim
		var lastID int64
		for rows.Next() {
			var requestID, userID string
			var c claimRow
			if err := rows.Scan(append([]any{&lastID, &requestID, &userID}, c.dest()...)...); err != nil {
				rows.Close()
				return pgerr.Wrap("export claims", err)
			}
			page = append(page, c.claim(poolID, requestID, userID))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return pgerr.Wrap("export claims", err)
		}
		if len(page) == 0 {
			return nil
		}
		if err := fn(page); err != nil {
			return err
		}
		if len(page) < exportPage {
			return nil
		}
		afterAt, afterID = page[len(page)-1].ClaimedAt, lastID
	}
}
