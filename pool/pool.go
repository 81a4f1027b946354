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
	DefaultHoldDefault     = 10 * time.Minute
	DefaultHoldMax         = time.Hour
	DefaultHoldsPerUser    = 1
	DefaultRedisShards     = 1
)

// Limits on pool settings; the schema checks the same bounds.
const (
	MaxPerUserLimit     = 1000
	MaxRefillLowWater   = 1_000_000
	MaxRefillBatchSize  = 100_000
	MaxDisplayNameChars = 200
	MinWebhookSecretLen = 16
	// Holds are whole seconds from one second to a day.
	MinHold         = time.Second
	MaxHold         = 24 * time.Hour
	MaxHoldsPerUser = 1000
	// MaxRedisShards is the most Redis shards one pool spreads over.
	MaxRedisShards = 64
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
	// HoldDefault is how long a reservation that names no hold time holds
	// its code; HoldMax bounds every hold. Whole seconds.
	HoldDefault time.Duration
	HoldMax     time.Duration
	// HoldsPerUser is how many reservations one user may have open at once
	// (they also count toward PerUserLimit).
	HoldsPerUser int
	// RedisShards is how many Redis shards (hash tags) hold the pool's
	// staged codes, 1 to MaxRedisShards: a pool hotter than one Redis
	// Cluster master spreads over several. A claim pops from its user's
	// shard first; Postgres decides every claim whatever the shard.
	RedisShards int
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
	p.HoldMax = cmp.Or(p.HoldMax, max(DefaultHoldMax, p.HoldDefault))
	p.HoldDefault = cmp.Or(p.HoldDefault, min(DefaultHoldDefault, p.HoldMax))
	p.HoldsPerUser = cmp.Or(p.HoldsPerUser, DefaultHoldsPerUser)
	p.RedisShards = cmp.Or(p.RedisShards, DefaultRedisShards)
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
	for _, h := range []struct {
		field string
		d     time.Duration
	}{{"pool.hold_default", p.HoldDefault}, {"pool.hold_max", p.HoldMax}} {
		if h.d < MinHold || h.d > MaxHold || h.d%time.Second != 0 {
			return fieldErrorf(h.field, "must be whole seconds between %s and %s", MinHold, MaxHold)
		}
	}
	if p.HoldDefault > p.HoldMax {
		return fieldErrorf("pool.hold_default", "must not exceed pool.hold_max")
	}
	if p.HoldsPerUser < 1 || p.HoldsPerUser > MaxHoldsPerUser {
		return fieldErrorf("pool.holds_per_user", "must be between 1 and %d", MaxHoldsPerUser)
	}
	if p.RedisShards < 1 || p.RedisShards > MaxRedisShards {
		return fieldErrorf("pool.redis_shards", "must be between 1 and %d", MaxRedisShards)
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
