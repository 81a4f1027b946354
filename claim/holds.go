package claim

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dispenserhq/dispenser/internal/input"
	"github.com/dispenserhq/dispenser/internal/pgerr"
	"github.com/dispenserhq/dispenser/pool"
)

var (
	//go:embed sql/confirm.sql
	confirmSQL string
	//go:embed sql/cancel.sql
	cancelSQL string
	//go:embed sql/expire_holds.sql
	expireHoldsSQL string
)

// ReserveRequest asks to hold one code for a user, as a flash-sale checkout
// does while the buyer pays.
type ReserveRequest struct {
	PoolID    string
	UserID    string
	RequestID string
	// HoldFor is how long the code is held; zero takes the pool's
	// hold_default. At least a second, at most the pool's hold_max.
	HoldFor time.Duration
}

// ReservationState is where a reservation stands.
type ReservationState string

// The states of a reservation.
const (
	// ReservationHeld: the code is held for the user until HeldUntil.
	ReservationHeld ReservationState = "held"
	// ReservationConfirmed: the hold became a claim (see ConfirmedAt).
	ReservationConfirmed ReservationState = "confirmed"
	// ReservationCancelled: cancelled; the code went back to the pool.
	ReservationCancelled ReservationState = "cancelled"
	// ReservationExpired: the hold ran out; the code went back to the pool.
	ReservationExpired ReservationState = "expired"
)

// Reservation is a hold on one code. It never carries the code: that is
// shown only when the reservation is confirmed.
type Reservation struct {
	PoolID    string
	RequestID string
	UserID    string
	State     ReservationState
	// ReservedAt is when the hold began.
	ReservedAt time.Time
	// HeldUntil is when the hold ends (or ended); zero once confirmed.
	HeldUntil time.Time
	// ConfirmedAt is when it was confirmed, for ReservationConfirmed.
	ConfirmedAt time.Time
	// Replayed is true when the answer is an earlier call's.
	Replayed bool
	// Path is how a new hold was served (redis or fallback).
	Path Path
}

// Reserve holds one code for the user until the hold ends, with the same
// path, rules and promises as Claim: idempotent by request id (a retry
// answers the same reservation), the pool's per-user limit (holds count
// toward it) and its holds_per_user (ErrHoldLimit). The code stays hidden
// until Confirm.
func (s *Service) Reserve(ctx context.Context, r ReserveRequest) (Reservation, error) {
	req := Request{PoolID: r.PoolID, UserID: r.UserID, RequestID: r.RequestID, reserve: true, hold: r.HoldFor}
	if err := pool.ValidateID("pool_id", req.PoolID); err != nil {
		return Reservation{}, err
	}
	if err := req.Validate(); err != nil {
		return Reservation{}, err
	}
	if r.HoldFor != 0 && (r.HoldFor < pool.MinHold || r.HoldFor > pool.MaxHold) {
		return Reservation{}, &FieldError{Field: "hold_for", Description: fmt.Sprintf("must be between %s and %s", pool.MinHold, pool.MaxHold)}
	}
	res, err := s.claim(ctx, req, true)
	if err != nil {
		return Reservation{}, err
	}
	c := res.Claim
	out := Reservation{PoolID: c.PoolID, RequestID: c.RequestID, UserID: c.UserID, ReservedAt: c.ReservedAt,
		Replayed: res.Replayed, Path: res.Path}
	switch {
	case !c.HeldUntil.IsZero():
		out.State, out.HeldUntil = ReservationHeld, c.HeldUntil
	case !c.ReservedAt.IsZero():
		out.State, out.ConfirmedAt = ReservationConfirmed, c.ClaimedAt
	default:
		// The request id names a ClaimCode claim of this user.
		return Reservation{}, ErrNotReservation
	}
	return out, nil
}

// Confirm turns the reservation made with the request id into a claim and
// returns it with its code; a retry returns the same claim (Replayed).
// After the hold ran out it is ErrReservationExpired, never another code.
// With a userID, another user's reservation is ErrRequestReused. A paused
// pool or a closed claim window does not stop a confirm: the hold was
// granted while they allowed it.
func (s *Service) Confirm(ctx context.Context, poolID, requestID, userID string) (Result, error) {
	if err := validateHoldCall(poolID, requestID, userID); err != nil {
		return Result{}, err
	}
	if !s.running.Load() {
		return Result{}, ErrStopped
	}
	it := &confirmItem{poolID: poolID, requestID: requestID, userID: userID, done: make(chan confirmAnswer, 1)}
	ans, err := await(ctx, s.confirms, it, it.done)
	if err != nil {
		return Result{}, err
	}
	if ans.err != nil {
		return Result{}, ans.err
	}
	out, owner, row := ans.out, ans.owner, ans.row
	switch o := outcome(out); o {
	case outConfirmed, outReplay:
		c := row.claim(poolID, requestID, owner.String)
		c.HeldUntil = time.Time{}
		return Result{Claim: c, Replayed: o == outReplay, Path: PathConfirm}, nil
	case outNotFound:
		return Result{}, s.notFound(ctx, poolID)
	case outReused:
		return Result{}, ErrRequestReused
	default:
		if err := o.refusal(); err != nil {
			return Result{}, err
		}
		return Result{}, fmt.Errorf("confirm reservation: unexpected outcome %q", out)
	}
}

// confirmItem is one confirm waiting for its batch.
type confirmItem struct {
	poolID, requestID, userID string
	done                      chan confirmAnswer
}

// confirmAnswer is Postgres's answer for one confirm.
type confirmAnswer struct {
	out   string
	owner pgtype.Text
	row   claimRow
	err   error
}

// confirmBatch confirms a batch in one transaction (one statement: Postgres
// commits it before the answers are read to the end, so no code is shown
// before its claim is durable) and hands each item its answer. A batch that
// lost a deadlock is run again: nothing of it stayed.
func (s *Service) confirmBatch(batch []*confirmItem) {
	ctx, cancel := context.WithTimeout(context.Background(), CommitTimeoutDefault)
	defer cancel()
	n := len(batch)
	pools, reqs, users := make([]string, n), make([]string, n), make([]string, n)
	for i, it := range batch {
		pools[i], reqs[i], users[i] = it.poolID, it.requestID, it.userID
	}
	answers := make([]confirmAnswer, n)
	var err error
	for attempt := 1; attempt <= 5; attempt++ {
		if err = s.confirmOnce(ctx, pools, reqs, users, answers); err == nil || !isRetryable(err) {
			break
		}
		time.Sleep(time.Duration(attempt) * 2 * time.Millisecond)
	}
	for i, it := range batch {
		if err != nil {
			answers[i] = confirmAnswer{err: pgerr.Wrap("confirm reservation", err)}
		}
		it.done <- answers[i]
	}
}

// confirmOnce runs one batch and fills answers.
func (s *Service) confirmOnce(ctx context.Context, pools, reqs, users []string, answers []confirmAnswer) error {
	rows, err := s.db.Query(ctx, confirmSQL, pools, reqs, users)
	if err != nil {
		return err
	}
	got, err := itemRows(rows, len(answers), func(a *confirmAnswer) []any {
		return append(append([]any{&a.out}, a.row.holdDest()...), &a.owner)
	})
	if err != nil {
		return err
	}
	copy(answers, got)
	return nil
}

// Cancel ends the reservation made with the request id at once: its code
// goes back to the pool. Cancelling again answers the same; cancelling a
// hold that ran out answers it as expired (its code went back too). A
// confirmed reservation is a claim: ErrReservationConfirmed.
func (s *Service) Cancel(ctx context.Context, poolID, requestID, userID string) (Reservation, error) {
	if err := validateHoldCall(poolID, requestID, userID); err != nil {
		return Reservation{}, err
	}
	var out string
	var owner pgtype.Text
	var row claimRow
	err := s.db.QueryRow(ctx, cancelSQL, poolID, requestID, userID).Scan(&out, &row.heldUntil, &row.reservedAt, &owner)
	if err != nil {
		return Reservation{}, pgerr.Wrap("cancel reservation", err)
	}
	r := Reservation{PoolID: poolID, RequestID: requestID, UserID: owner.String,
		ReservedAt: timeOrZero(row.reservedAt), HeldUntil: timeOrZero(row.heldUntil)}
	switch o := outcome(out); o {
	case outCancelled:
		r.State = ReservationCancelled
	case outExpired:
		r.State = ReservationExpired
	case outConfirmed:
		return Reservation{}, ErrReservationConfirmed
	case outNotFound:
		return Reservation{}, s.notFound(ctx, poolID)
	case outReused:
		return Reservation{}, ErrRequestReused
	case outNotReservation:
		return Reservation{}, ErrNotReservation
	default:
		return Reservation{}, fmt.Errorf("cancel reservation: unexpected outcome %q", out)
	}
	return r, nil
}

// notFound is ErrReservationNotFound, or the pool's own error when the
// pool does not exist.
func (s *Service) notFound(ctx context.Context, poolID string) error {
	if _, err := s.pools.GetPool(ctx, poolID); err != nil {
		return err
	}
	return ErrReservationNotFound
}

// validateHoldCall checks the ids of a confirm or cancel; userID is optional.
func validateHoldCall(poolID, requestID, userID string) error {
	if err := pool.ValidateID("pool_id", poolID); err != nil {
		return err
	}
	if err := input.RequestID("request_id", requestID); err != nil {
		return err
	}
	if userID != "" {
		return input.UserID("user_id", userID)
	}
	return nil
}

// expireHoldsBatch is how many holds one expiry statement ends.
const expireHoldsBatch = 1000

// ExpireHolds ends every hold in db whose time is up (of one pool, or of
// all when poolID is empty), putting its code back to available, and
// returns how many ended per pool. Replicas may run it at once: each hold
// ends once, and a confirm racing it has one winner (the row lock decides).
func ExpireHolds(ctx context.Context, db *pgxpool.Pool, poolID string) (map[string]int64, error) {
	out := map[string]int64{}
	var pid *string
	if poolID != "" {
		pid = &poolID
	}
	for {
		rows, err := db.Query(ctx, expireHoldsSQL, pid, expireHoldsBatch)
		if err != nil {
			return out, pgerr.Wrap("expire holds", err)
		}
		var total int64
		for rows.Next() {
			var id string
			var n int64
			if err := rows.Scan(&id, &n); err != nil {
				rows.Close()
				return out, pgerr.Wrap("expire holds", err)
			}
			out[id] += n
			total += n
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return out, pgerr.Wrap("expire holds", err)
		}
		if total < expireHoldsBatch {
			return out, nil
		}
	}
}
