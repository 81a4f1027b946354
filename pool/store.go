package pool

import (
	"context"
	_ "embed"
	"errors"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dispenserhq/dispenser/internal/pgerr"
	"github.com/dispenserhq/dispenser/internal/scanread"
)

var (
	//go:embed sql/create_pool.sql
	createPoolSQL string
	//go:embed sql/get_pool.sql
	getPoolSQL string
	//go:embed sql/lock_pool.sql
	lockPoolSQL string
	//go:embed sql/update_pool.sql
	updatePoolSQL string
	//go:embed sql/list_pools.sql
	listPoolsSQL string
	//go:embed sql/pool_stats.sql
	poolStatsSQL string
)

// Store keeps pools and codes in Postgres. It is safe for concurrent use.
type Store struct {
	db *pgxpool.Pool
	// session holds a connection across statements (an import's temporary
	// table); it is db unless db sits behind a transaction pooler.
	session *pgxpool.Pool
	// random is the generator's source; nil is crypto/rand (tests replace it
	// to force collisions).
	random io.Reader
}

// NewStore returns a Store on db, whose schema must be migrated.
func NewStore(db *pgxpool.Pool) *Store {
	return &Store{db: db, session: db}
}

// WithSession returns the store with imports on session, a pool that
// reaches the same database without a transaction pooler (nil: db).
func (s *Store) WithSession(session *pgxpool.Pool) *Store {
	c := *s
	if session != nil {
		c.session = session
	}
	return &c
}

// CreatePool stores a new pool, filling defaults for zero tunables, and
// returns it as stored. An existing id gives ErrPoolExists.
func (s *Store) CreatePool(ctx context.Context, p Pool) (Pool, error) {
	p = p.withDefaults()
	if err := p.Validate(); err != nil {
		return Pool{}, err
	}
	err := s.db.QueryRow(ctx, createPoolSQL, p.ID, p.DisplayName, p.Paused,
		nullTime(p.ClaimStartsAt), nullTime(p.ClaimEndsAt), p.PerUserLimit,
		p.RefillLowWater, p.RefillBatchSize, p.WebhookURL, p.WebhookSecret,
		seconds(p.HoldDefault), seconds(p.HoldMax), p.HoldsPerUser, p.RedisShards,
	).Scan(&p.CreatedAt, &p.UpdatedAt)
	if isUniqueViolation(err, "pools_pkey") {
		return Pool{}, ErrPoolExists
	}
	if err != nil {
		return Pool{}, storeError("create pool", err)
	}
	return p, nil
}

// GetPool returns the pool with the given id, or ErrPoolNotFound.
func (s *Store) GetPool(ctx context.Context, id string) (Pool, error) {
	p, err := scanPool(s.db.QueryRow(ctx, getPoolSQL, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Pool{}, ErrPoolNotFound
	}
	if err != nil {
		return Pool{}, storeError("get pool", err)
	}
	return p, nil
}

// UpdatePool applies change to the stored pool under a row lock, validates
// the result and stores it. change must only modify the settings it means to
// change; the id cannot change.
func (s *Store) UpdatePool(ctx context.Context, id string, change func(*Pool) error) (Pool, error) {
	var out Pool
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		p, err := scanPool(tx.QueryRow(ctx, lockPoolSQL, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrPoolNotFound
		}
		if err != nil {
			return storeError("lock pool", err)
		}
		if err := change(&p); err != nil {
			return err
		}
		p.ID = id
		if err := p.Validate(); err != nil {
			return err
		}
		err = tx.QueryRow(ctx, updatePoolSQL, p.ID, p.DisplayName, p.Paused,
			nullTime(p.ClaimStartsAt), nullTime(p.ClaimEndsAt), p.PerUserLimit,
			p.RefillLowWater, p.RefillBatchSize, p.WebhookURL, p.WebhookSecret,
			seconds(p.HoldDefault), seconds(p.HoldMax), p.HoldsPerUser, p.RedisShards,
		).Scan(&p.UpdatedAt)
		if err != nil {
			return storeError("update pool", err)
		}
		out = p
		return nil
	})
	if err != nil {
		return Pool{}, storeError("update pool", err)
	}
	return out, nil
}

// ListPools returns up to limit pools with ids after the given one, in id
// order.
func (s *Store) ListPools(ctx context.Context, after string, limit int) ([]Pool, error) {
	rows, err := s.db.Query(ctx, listPoolsSQL, after, limit)
	if err != nil {
		return nil, storeError("list pools", err)
	}
	pools, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Pool, error) { return scanPool(row) })
	if err != nil {
		return nil, storeError("list pools", err)
	}
	return pools, nil
}

// Stats counts a pool's codes by state and its prizes by state, all read in
// one snapshot.
type Stats struct {
	PoolID    string
	Imported  int64
	Imports   int64
	Available int64
	Staged    int64
	// Held codes are reserved by an open hold: given to nobody else until
	// it is confirmed (claimed) or ends (available).
	Held      int64
	Claimed   int64
	Void      int64
	Claimants int64
	// HoldsDue counts open holds past their time that the expiry job has
	// not ended yet (it runs every second or so).
	HoldsDue int64
	Prizes   PrizeCounts
	ReadAt   time.Time
	// RedisShards is the pool's shard count (where to read its Redis levels).
	RedisShards int
}

// PrizeCounts counts prizes by state.
type PrizeCounts struct {
	Pending, Ready, Assigned, Delivered, Failed, Cancelled int64
}

// Balanced reports whether every imported code is in exactly one state:
// imported = available + staged + held + claimed + void (promise 2).
func (st Stats) Balanced() bool {
	return st.Imported == st.Available+st.Staged+st.Held+st.Claimed+st.Void
}

// PoolStats reads the counts of one pool, or returns ErrPoolNotFound.
func (s *Store) PoolStats(ctx context.Context, id string) (Stats, error) {
	if _, err := s.GetPool(ctx, id); err != nil {
		return Stats{}, err
	}
	st := Stats{PoolID: id}
	pz := &st.Prizes
	err := scanread.Row(ctx, s.db, poolStatsSQL, []any{id},
		&st.Imported, &st.Imports, &st.Available, &st.Staged, &st.Held, &st.Claimed, &st.Void, &st.Claimants, &st.HoldsDue,
		&pz.Pending, &pz.Ready, &pz.Assigned, &pz.Delivered, &pz.Failed, &pz.Cancelled, &st.ReadAt, &st.RedisShards)
	if err != nil {
		return Stats{}, storeError("pool stats", err)
	}
	return st, nil
}

func scanPool(row pgx.Row) (Pool, error) {
	var p Pool
	var starts, ends pgtype.Timestamptz
	var holdDefault, holdMax int64
	err := row.Scan(&p.ID, &p.DisplayName, &p.Paused, &starts, &ends, &p.PerUserLimit,
		&p.RefillLowWater, &p.RefillBatchSize, &p.WebhookURL, &p.WebhookSecret,
		&holdDefault, &holdMax, &p.HoldsPerUser, &p.RedisShards, &p.CreatedAt, &p.UpdatedAt)
	p.HoldDefault, p.HoldMax = time.Duration(holdDefault)*time.Second, time.Duration(holdMax)*time.Second
	if starts.Valid {
		p.ClaimStartsAt = starts.Time
	}
	if ends.Valid {
		p.ClaimEndsAt = ends.Time
	}
	return p, err
}

// seconds is a hold time as the schema stores it.
func seconds(d time.Duration) int64 { return int64(d / time.Second) }

// nullTime maps the zero time to SQL NULL.
func nullTime(t time.Time) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: t, Valid: !t.IsZero()}
}

func isUniqueViolation(err error, constraint string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == constraint
}

// storeError wraps a driver error with what was being done, and marks lost
// connections and refused connects as pgerr.ErrUnavailable so that callers can tell
// "retry later" from a bug. Domain errors and context errors pass unchanged.
func storeError(op string, err error) error {
	var fe *FieldError
	var rej *ImportRejectedError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrPoolNotFound), errors.Is(err, ErrPoolExists), errors.Is(err, pgerr.ErrUnavailable),
		errors.As(err, &fe), errors.As(err, &rej):
		return err
	}
	return pgerr.Wrap(op, err)
}
