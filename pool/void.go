package pool

import (
	"context"
	_ "embed"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

var (
	//go:embed sql/void_codes.sql
	voidCodesSQL string
	//go:embed sql/void_import.sql
	voidImportSQL string
	//go:embed sql/void_lock_cursor.sql
	voidLockCursorSQL string
)

// MaxVoidCodes is the most codes one VoidCodes call may list.
const MaxVoidCodes = 10_000

// VoidRequest selects codes to void: listed Codes, or every code of ImportID.
type VoidRequest struct {
	PoolID   string
	Codes    []string
	ImportID int64
	Reason   string
}

// VoidResult counts what happened to the selected codes. Voided +
// AlreadyVoid + Claimed + NotFound equals the distinct codes selected.
type VoidResult struct {
	Voided, AlreadyVoid, Claimed, NotFound int64
}

// Void takes codes out of circulation. Codes no claim holds (available or
// staged) become void and are never handed out: a voided code still in Redis
// is refused by Postgres when popped. Claimed codes stay claimed.
func (s *Store) Void(ctx context.Context, req VoidRequest) (VoidResult, error) {
	if err := ValidateID("pool_id", req.PoolID); err != nil {
		return VoidResult{}, err
	}
	switch {
	case len(req.Codes) > 0 && req.ImportID != 0:
		return VoidResult{}, fieldErrorf("codes", "give either codes or import_id, not both")
	case len(req.Codes) == 0 && req.ImportID <= 0:
		return VoidResult{}, fieldErrorf("codes", "give the codes to void, or an import_id")
	case len(req.Codes) > MaxVoidCodes:
		return VoidResult{}, fieldErrorf("codes", "at most %d codes per call", MaxVoidCodes)
	}
	if n := utf8.RuneCountInString(req.Reason); n < 1 || n > 200 || !utf8.ValidString(req.Reason) {
		return VoidResult{}, fieldErrorf("reason", "must be 1 to 200 characters")
	}
	if _, err := s.GetPool(ctx, req.PoolID); err != nil {
		return VoidResult{}, err
	}
	query, arg := voidCodesSQL, any(req.Codes)
	if req.ImportID != 0 {
		query, arg = voidImportSQL, req.ImportID
	}
	var voided, already, found, selected int64
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, voidLockCursorSQL, req.PoolID); err != nil {
			return err
		}
		return tx.QueryRow(ctx, query, req.PoolID, arg, req.Reason).Scan(&voided, &already, &found, &selected)
	})
	if err != nil {
		return VoidResult{}, storeError("void codes", err)
	}
	// Claimed counts the found codes neither voided now nor void before,
	// including any claimed while this ran.
	return VoidResult{Voided: voided, AlreadyVoid: already, Claimed: found - voided - already, NotFound: selected - found}, nil
}
