package pool

import (
	"errors"
	"fmt"

	"github.com/dispenserhq/dispenser/internal/input"
)

var (
	// ErrPoolNotFound means no pool has the given id.
	ErrPoolNotFound = errors.New("pool not found")
	// ErrPoolExists means a pool with the given id already exists.
	ErrPoolExists = errors.New("pool already exists")
)

// FieldError reports one invalid input field (see input.FieldError).
type FieldError = input.FieldError

func fieldErrorf(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Description: fmt.Sprintf(format, args...)}
}

// ImportRejectedError is returned by a strict import whose file has invalid
// lines. Nothing of the file was inserted; Summary tells which lines failed.
type ImportRejectedError struct {
	Summary ImportSummary
}

func (e *ImportRejectedError) Error() string {
	return fmt.Sprintf("strict import rejected: %d of %d lines invalid", e.Summary.Invalid, e.Summary.Lines)
}
