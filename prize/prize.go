// Package prize records wins that are delivered later: a prize is recorded
// when the lottery draws it, made ready when the winner completes their
// details, assigned one code by the nightly delivery run and sent to the
// pool's webhook. This file holds the records and their state machine.
package prize

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/dispenserhq/dispenser/internal/input"
)

var (
	// ErrNotFound means no prize has the id.
	ErrNotFound = errors.New("prize not found")
	// ErrConflict means (pool, external_id) is recorded with other fields.
	ErrConflict = errors.New("prize recorded with other fields")
	// ErrState means the prize's state does not allow the change.
	ErrState = errors.New("prize state does not allow this")
)

// State is where a prize is in its life.
type State string

// The states, and the transitions the store allows between them:
// pending -> ready (MarkReady); ready -> assigned (delivery run);
// assigned -> delivered; ready or assigned -> failed (parked);
// failed -> ready or assigned (Retry); pending or ready -> cancelled.
const (
	Pending   State = "pending"
	Ready     State = "ready"
	Assigned  State = "assigned"
	Delivered State = "delivered"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// MaxJSONBytes bounds metadata and details.
const MaxJSONBytes = 16 << 10

// Prize is a prize as stored.
type Prize struct {
	ID         int64
	PoolID     string
	UserID     string
	ExternalID string
	// Metadata and Details are JSON objects, as Postgres normalises them.
	Metadata, Details string
	State             State
	// Code is the assigned code, once assigned. Admins only.
	Code        string
	DeliveryID  string
	Attempts    int
	ParkReason  string
	LastError   string
	CreatedAt   time.Time
	ReadyAt     time.Time
	AssignedAt  time.Time
	DeliveredAt time.Time
	NextAttempt time.Time
}

// FieldError reports an invalid input field (see input.FieldError).
type FieldError = input.FieldError

// ParseID reads a prize id as the API spells it (decimal).
func ParseID(field, s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, &FieldError{Field: field, Description: "is not a prize id"}
	}
	return id, nil
}

// validateObject accepts "" (as {}) or a JSON object of at most MaxJSONBytes.
func validateObject(field, s string) (string, error) {
	if s == "" {
		return "{}", nil
	}
	if len(s) > MaxJSONBytes {
		return "", &FieldError{Field: field, Description: fmt.Sprintf("must be at most %d bytes", MaxJSONBytes)}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &obj); err != nil || obj == nil {
		return "", &FieldError{Field: field, Description: "must be a JSON object"}
	}
	return s, nil
}
