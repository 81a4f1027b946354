// Package pool owns pools and their codes in Postgres: pool settings, bulk
// import, voiding and the per-state counts that prove no code is lost.
package pool

import (
	"cmp"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/dispenserhq/dispenser/internal/input"
)

// Defaults applied to zero-valued settings when a pool is created.
const (
	DefaultPerUserLimit    = 1
	DefaultRefillLowWater  = 1000
	DefaultRefillBatchSize = 5000
)

// Limits on pool settings; the schema checks the same bounds.
const (
	MaxPerUserLimit     = 1000
	MaxRefillLowWater   = 1_000_000
	MaxRefillBatchSize  = 100_000
	MaxDisplayNameChars = 200
	MinWebhookSecretLen = 16
)

// Pool is a pool's settings as stored.
type Pool struct {
	ID          string
	DisplayName string
	// Paused pools refuse claims.
	Paused bool
	// ClaimStartsAt and ClaimEndsAt bound the claim window; zero means open.
	ClaimStartsAt time.Time
	ClaimEndsAt   time.Time
	// PerUserLimit is the most claims one user may hold from the pool.
	PerUserLimit int
	// RefillLowWater and RefillBatchSize tune the Redis refill job.
	RefillLowWater  int
	RefillBatchSize int
	// WebhookURL and WebhookSecret configure prize delivery. The secret is
	// never returned through the API.
	WebhookURL    string
	WebhookSecret string
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// ValidateID reports whether id can name a pool; field names the input.
// The id is the hash tag of every Redis key of the pool, so it can never
// hold a brace.
func ValidateID(field, id string) error { return input.PoolID(field, id) }

// withDefaults fills zero-valued tunables of a pool about to be created.
func (p Pool) withDefaults() Pool {
	p.PerUserLimit = cmp.Or(p.PerUserLimit, DefaultPerUserLimit)
	p.RefillLowWater = cmp.Or(p.RefillLowWater, DefaultRefillLowWater)
	p.RefillBatchSize = cmp.Or(p.RefillBatchSize, DefaultRefillBatchSize)
	return p
}

// Validate checks every setting and returns a *FieldError for the first
// invalid one. Fields are named "pool.<field>" as in the API.
func (p Pool) Validate() error {
	if err := ValidateID("pool.id", p.ID); err != nil {
		return err
	}
	if utf8.RuneCountInString(p.DisplayName) > MaxDisplayNameChars || !utf8.ValidString(p.DisplayName) {
		return fieldErrorf("pool.display_name", "must be valid UTF-8 of at most %d characters", MaxDisplayNameChars)
	}
	if !p.ClaimStartsAt.IsZero() && !p.ClaimEndsAt.IsZero() && !p.ClaimStartsAt.Before(p.ClaimEndsAt) {
		return fieldErrorf("pool.claim_ends_at", "must be after pool.claim_starts_at")
	}
	if p.PerUserLimit < 1 || p.PerUserLimit > MaxPerUserLimit {
		return fieldErrorf("pool.per_user_limit", "must be between 1 and %d", MaxPerUserLimit)
	}
	if p.RefillLowWater < 0 || p.RefillLowWater > MaxRefillLowWater {
		return fieldErrorf("pool.refill_low_water", "must be between 0 and %d", MaxRefillLowWater)
	}
	if p.RefillBatchSize < 1 || p.RefillBatchSize > MaxRefillBatchSize {
		return fieldErrorf("pool.refill_batch_size", "must be between 1 and %d", MaxRefillBatchSize)
	}
	if p.WebhookURL != "" {
		u, err := url.Parse(p.WebhookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fieldErrorf("pool.webhook_url", "must be an absolute http or https URL")
		}
	}
	if p.WebhookSecret != "" && len(p.WebhookSecret) < MinWebhookSecretLen {
		return fieldErrorf("pool.webhook_secret", "must be at least %d bytes", MinWebhookSecretLen)
	}
	return nil
}

// ClaimWindowOpen reports whether claims are accepted at instant now.
func (p Pool) ClaimWindowOpen(now time.Time) bool {
	if !p.ClaimStartsAt.IsZero() && now.Before(p.ClaimStartsAt) {
		return false
	}
	if !p.ClaimEndsAt.IsZero() && !now.Before(p.ClaimEndsAt) {
		return false
	}
	return true
}
