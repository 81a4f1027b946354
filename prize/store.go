package prize

import (
	"context"
	_ "embed"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dispenserhq/dispenser/internal/input"
	"github.com/dispenserhq/dispenser/internal/pgerr"
	"github.com/dispenserhq/dispenser/pool"
)

var (
	//go:embed sql/record.sql
	recordSQL string
	//go:embed sql/find_external.sql
	findExternalSQL string
	//go:embed sql/get.sql
	getSQL string
	//go:embed sql/list.sql
	listSQL string
	//go:embed sql/mark_ready.sql
	markReadySQL string
	//go:embed sql/same_details.sql
	sameDetailsSQL string
	//go:embed sql/cancel.sql
	cancelSQL string
	//go:embed sql/retry.sql
	retrySQL string
	//go:embed sql/state_of.sql
	stateOfSQL string
)

// Store keeps prizes in Postgres. Every state change is one conditional
// UPDATE, so concurrent calls can never skip a state or apply twice.
type Store struct {
	db    *pgxpool.Pool
	pools *pool.Store
}

// NewStore returns a Store on a migrated database.
func NewStore(db *pgxpool.Pool) *Store {
	return &Store{db: db, pools: pool.NewStore(db)}
}

// RecordRequest records a win.
type RecordRequest struct {
	PoolID, UserID, ExternalID string
	// Metadata is an optional JSON object.
	Metadata string
}

// Record records a win, idempotently by (pool, external id): a repeat with
// the same user and metadata returns the existing prize (created false); a
// repeat with other fields is ErrConflict.
func (s *Store) Record(ctx context.Context, req RecordRequest) (p Prize, created bool, err error) {
	if err := pool.ValidateID("pool_id", req.PoolID); err != nil {
		return Prize{}, false, err
	}
	if err := input.UserID("user_id", req.UserID); err != nil {
		return Prize{}, false, err
	}
	if err := input.ExternalID("external_id", req.ExternalID); err != nil {
		return Prize{}, false, err
	}
	meta, err := validateObject("metadata_json", req.Metadata)
	if err != nil {
		return Prize{}, false, err
	}
	if _, err := s.pools.GetPool(ctx, req.PoolID); err != nil {
		return Prize{}, false, err
	}
	var id int64
	err = s.db.QueryRow(ctx, recordSQL, req.PoolID, req.UserID, req.ExternalID, meta).Scan(&id)
	switch {
	case err == nil:
		created = true
	case errors.Is(err, pgx.ErrNoRows):
		var same bool
		if err := s.db.QueryRow(ctx, findExternalSQL, req.PoolID, req.ExternalID, req.UserID, meta).Scan(&id, &same); err != nil {
			return Prize{}, false, storeError("record prize", "metadata_json", err)
		}
		if !same {
			return Prize{}, false, ErrConflict
		}
	default:
		return Prize{}, false, storeError("record prize", "metadata_json", err)
	}
	p, err = s.Get(ctx, id)
	return p, created, err
}

// Get returns one prize.
func (s *Store) Get(ctx context.Context, id int64) (Prize, error) {
	p, err := scanPrize(s.db.QueryRow(ctx, getSQL, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Prize{}, ErrNotFound
	}
	if err != nil {
		return Prize{}, storeError("get prize", "", err)
	}
	return p, nil
}

// List returns up to limit prizes of a pool with ids after the given one,
// optionally only of one state ("" for all).
func (s *Store) List(ctx context.Context, poolID string, state State, after int64, limit int) ([]Prize, error) {
	if err := pool.ValidateID("pool_id", poolID); err != nil {
		return nil, err
	}
	if _, err := s.pools.GetPool(ctx, poolID); err != nil {
		return nil, err
	}
	rows, err := s.db.Query(ctx, listSQL, poolID, string(state), after, limit)
	if err != nil {
		return nil, storeError("list prizes", "", err)
	}
	prizes, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Prize, error) { return scanPrize(r) })
	if err != nil {
		return nil, storeError("list prizes", "", err)
	}
	return prizes, nil
}

// MarkReady stores the winner's details and queues the prize for delivery.
// Repeating the call with the same details is a no-op; any other state
// change is ErrState.
func (s *Store) MarkReady(ctx context.Context, id int64, details string) (Prize, error) {
	d, err := validateObject("details_json", details)
	if err != nil {
		return Prize{}, err
	}
	tag, err := s.db.Exec(ctx, markReadySQL, id, d)
	if err != nil {
		return Prize{}, storeError("mark prize ready", "details_json", err)
	}
	if tag.RowsAffected() == 0 {
		var same bool
		err := s.db.QueryRow(ctx, sameDetailsSQL, id, d).Scan(&same)
		if errors.Is(err, pgx.ErrNoRows) {
			return Prize{}, ErrNotFound
		}
		if err != nil {
			return Prize{}, storeError("mark prize ready", "details_json", err)
		}
		if !same {
			return Prize{}, s.stateError(ctx, id, "mark ready")
		}
	}
	return s.Get(ctx, id)
}

// Cancel withdraws a prize that has no code yet.
func (s *Store) Cancel(ctx context.Context, id int64) (Prize, error) {
	tag, err := s.db.Exec(ctx, cancelSQL, id)
	if err != nil {
		return Prize{}, storeError("cancel prize", "", err)
	}
	if tag.RowsAffected() == 0 {
		return Prize{}, s.stateError(ctx, id, "cancel")
	}
	return s.Get(ctx, id)
}

// Retry re-queues a parked prize: one without a code goes back to ready, one
// with a code to assigned, to be sent again with the same code and delivery
// id.
func (s *Store) Retry(ctx context.Context, id int64) (Prize, error) {
	var n int64
	if err := s.db.QueryRow(ctx, retrySQL, id).Scan(&n); err != nil {
		return Prize{}, storeError("retry prize", "", err)
	}
	if n == 0 {
		return Prize{}, s.stateError(ctx, id, "retry")
	}
	return s.Get(ctx, id)
}

// stateError tells a missing prize from one in the wrong state.
func (s *Store) stateError(ctx context.Context, id int64, op string) error {
	var st string
	err := s.db.QueryRow(ctx, stateOfSQL, id).Scan(&st)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return storeError(op, "", err)
	}
	return fmt.Errorf("%w: cannot %s a %s prize", ErrState, op, st)
}

func scanPrize(row pgx.Row) (Prize, error) {
	var p Prize
	var state string
	var ready, assigned, delivered, next pgtype.Timestamptz
	err := row.Scan(&p.ID, &p.PoolID, &p.UserID, &p.ExternalID, &p.Metadata, &p.Details, &state, &p.Code,
		&p.DeliveryID, &p.Attempts, &p.ParkReason, &p.LastError, &p.CreatedAt, &ready, &assigned, &delivered, &next)
	p.State = State(state)
	p.ReadyAt, p.AssignedAt, p.DeliveredAt, p.NextAttempt = ready.Time, assigned.Time, delivered.Time, next.Time
	return p, err
}

// storeError wraps a driver error; JSON Postgres cannot store (a \u0000
// escape, say) is the caller's field's fault.
func storeError(op, jsonField string, err error) error {
	var pgErr *pgconn.PgError
	if jsonField != "" && errors.As(err, &pgErr) && len(pgErr.Code) == 5 && pgErr.Code[:2] == "22" {
		return &FieldError{Field: jsonField, Description: "is JSON that Postgres cannot store"}
	}
	return pgerr.Wrap(op, err)
}
