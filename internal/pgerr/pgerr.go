// Package pgerr gives every package that talks to Postgres one meaning for
// "the database is unavailable": Wrap marks lost connections and refused
// connects as ErrUnavailable, so callers can tell "retry later" from a bug,
// and the API answers both the same way wherever they happen.
package pgerr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrUnavailable means Postgres could not be reached or dropped the
// connection. Nothing was written; the call may be retried.
var ErrUnavailable = errors.New("store unavailable")

// Wrap wraps a Postgres error with what was being done (op), marking
// connection failures as ErrUnavailable. It returns nil for nil.
func Wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", op, err)
	case IsConnectionError(err):
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// IsConnectionError reports whether err means Postgres could not be reached
// or dropped the connection (restart, failover, pg_terminate_backend), as
// opposed to refusing the statement.
func IsConnectionError(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "08": // connection exception
			return true
		case pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03": // shutdown, crash, cannot connect now
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		pgconn.SafeToRetry(err)
}
