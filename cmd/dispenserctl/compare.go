package main

import (
	"context"
	_ "embed"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	//go:embed sql/classic_replay.sql
	classicReplaySQL string
	//go:embed sql/classic_pessimistic_pick.sql
	classicPessimisticPickSQL string
	//go:embed sql/classic_peek.sql
	classicPeekSQL string
	//go:embed sql/classic_take.sql
	classicTakeSQL string
	//go:embed sql/classic_skip_locked_pick.sql
	classicSkipLockedPickSQL string
	//go:embed sql/classic_insert_claim.sql
	classicInsertClaimSQL string
)

// classicApproach is a home-made claim straight against Postgres, as teams
// write it before they reach for a service: same tables, same constraints,
// same idempotency and limit, one transaction per claim.
type classicApproach struct {
	name, title string
	claim       func(ctx context.Context, db *pgxpool.Pool, poolID string, req claimReq) (string, bool, error)
}

var (
	errClassicExhausted = status.Error(codes.ResourceExhausted, "POOL_EXHAUSTED")
	errClassicRefused   = status.Error(codes.FailedPrecondition, "USER_LIMIT_REACHED")
)

var classicApproaches = []classicApproach{
	{"pessimistic", "(a) SELECT ... FOR UPDATE", func(ctx context.Context, db *pgxpool.Pool, poolID string, req claimReq) (string, bool, error) {
		return classicTx(ctx, db, poolID, req, func(tx pgx.Tx) (int64, string, error) {
			var id int64
			var code string
			err := tx.QueryRow(ctx, classicPessimisticPickSQL, poolID).Scan(&id, &code)
			if err == nil {
				_, err = tx.Exec(ctx, classicTakeSQL, id)
			}
			return id, code, err
		})
	}},
	{"optimistic", "(b) conditional UPDATE, retry", func(ctx context.Context, db *pgxpool.Pool, poolID string, req claimReq) (string, bool, error) {
		for {
			var id int64
			var code string
			if err := db.QueryRow(ctx, classicPeekSQL, poolID).Scan(&id, &code); err != nil {
				if errors.Is(err, pgx.ErrNoRows) {
					return "", false, errClassicExhausted
				}
				return "", false, err
			}
			got, replayed, err := classicTx(ctx, db, poolID, req, func(tx pgx.Tx) (int64, string, error) {
				tag, err := tx.Exec(ctx, classicTakeSQL, id)
				if err == nil && tag.RowsAffected() == 0 {
					err = errLostRace
				}
				return id, code, err
			})
			if errors.Is(err, errLostRace) {
				continue // another claim took it first: read again
			}
			return got, replayed, err
		}
	}},
	{"skip_locked", "(c) one SKIP LOCKED tx per claim", func(ctx context.Context, db *pgxpool.Pool, poolID string, req claimReq) (string, bool, error) {
		return classicTx(ctx, db, poolID, req, func(tx pgx.Tx) (int64, string, error) {
			var id int64
			var code string
			err := tx.QueryRow(ctx, classicSkipLockedPickSQL, poolID).Scan(&id, &code)
			return id, code, err
		})
	}},
}

var errLostRace = errors.New("lost the race for the row")

// classicTx runs one claim: replay check, pick (which marks the code
// claimed), insert the claim; any refusal rolls the whole transaction back.
func classicTx(ctx context.Context, db *pgxpool.Pool, poolID string, req claimReq, pick func(pgx.Tx) (int64, string, error)) (string, bool, error) {
	var code string
	var replayed bool
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, classicReplaySQL, poolID, req.id).Scan(&code)
		if err == nil {
			replayed = true
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		id, c, err := pick(tx)
		if errors.Is(err, pgx.ErrNoRows) {
			return errClassicExhausted
		}
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, classicInsertClaimSQL, poolID, req.id, req.user, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errClassicRefused
		}
		code = c
		return nil
	})
	return code, replayed, err
}
