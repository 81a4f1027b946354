package claim

import (
	"context"
	"errors"
	"fmt"

	"github.com/dispenserhq/dispenser/pool"
)

// storeError wraps a Postgres error with what was being done; lost
// connections become pool.ErrUnavailable so the API answers Unavailable.
func storeError(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", op, err)
	case pool.IsConnectionError(err):
		return fmt.Errorf("%s: %w: %w", op, pool.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
