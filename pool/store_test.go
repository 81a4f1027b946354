package pool_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
)

// startStore begins a parallel test on a store of its own.
func startStore(t *testing.T) (context.Context, *pool.Store, *testenv.Schema) {
	t.Helper()
	t.Parallel()
	s, db := newStore(t)
	return context.Background(), s, db
}

// startImport begins a parallel test on a store with a pool p1 (setupImport).
func startImport(t *testing.T) (context.Context, *pool.Store, *testenv.Schema) {
	t.Helper()
	t.Parallel()
	s, db := setupImport(t)
	return context.Background(), s, db
}

func newStore(t *testing.T) (*pool.Store, *testenv.Schema) {
	t.Helper()
	db := testenv.Postgres(t)
	return pool.NewStore(db.Pool), db
}

func TestCreatePoolDefaults(t *testing.T) {
	ctx, s, _ := startStore(t)

	p, err := s.CreatePool(ctx, pool.Pool{ID: "summer-2026", DisplayName: "Summer"})
	require.NoError(t, err)
	require.Equal(t, pool.DefaultPerUserLimit, p.PerUserLimit)
	require.Equal(t, pool.DefaultRefillLowWater, p.RefillLowWater)
	require.Equal(t, pool.DefaultRefillBatchSize, p.RefillBatchSize)
	require.False(t, p.CreatedAt.IsZero())

	got, err := s.GetPool(ctx, "summer-2026")
	require.NoError(t, err)
	require.Equal(t, p.ID, got.ID)
	require.Equal(t, "Summer", got.DisplayName)
	require.True(t, got.ClaimStartsAt.IsZero())

	_, err = s.CreatePool(ctx, pool.Pool{ID: "summer-2026"})
	require.ErrorIs(t, err, pool.ErrPoolExists)

	_, err = s.GetPool(ctx, "winter")
	require.ErrorIs(t, err, pool.ErrPoolNotFound)
}

func TestCreatePoolValidation(t *testing.T) {
	ctx, s, db := startStore(t)
	now := time.Now()
	tests := []struct {
		name  string
		pool  pool.Pool
		field string
	}{
		{"empty id", pool.Pool{}, "pool.id"},
		{"upper case id", pool.Pool{ID: "Summer"}, "pool.id"},
		{"brace in id", pool.Pool{ID: "a{b}"}, "pool.id"},
		{"id too long", pool.Pool{ID: string(make([]byte, 64))}, "pool.id"},
		{"leading dash", pool.Pool{ID: "-a"}, "pool.id"},
		{"long name", pool.Pool{ID: "a", DisplayName: string(make([]rune, 201))}, "pool.display_name"},
		{"window backwards", pool.Pool{ID: "a", ClaimStartsAt: now, ClaimEndsAt: now.Add(-time.Hour)}, "pool.claim_ends_at"},
		{"empty window", pool.Pool{ID: "a", ClaimStartsAt: now, ClaimEndsAt: now}, "pool.claim_ends_at"},
		{"negative limit", pool.Pool{ID: "a", PerUserLimit: -1}, "pool.per_user_limit"},
		{"limit too big", pool.Pool{ID: "a", PerUserLimit: 1001}, "pool.per_user_limit"},
		{"negative low water", pool.Pool{ID: "a", RefillLowWater: -5}, "pool.refill_low_water"},
		{"batch too big", pool.Pool{ID: "a", RefillBatchSize: 100_001}, "pool.refill_batch_size"},
		{"webhook not http", pool.Pool{ID: "a", WebhookURL: "ftp://x"}, "pool.webhook_url"},
		{"webhook relative", pool.Pool{ID: "a", WebhookURL: "/hook"}, "pool.webhook_url"},
		{"short secret", pool.Pool{ID: "a", WebhookSecret: "short"}, "pool.webhook_secret"},
	}
	for _, tt := range tests {
		_, err := s.CreatePool(ctx, tt.pool)
		var fe *pool.FieldError
		require.ErrorAs(t, err, &fe, tt.name)
		require.Equal(t, tt.field, fe.Field, tt.name)
	}
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, "SELECT count(*) FROM pools").Scan(&n))
	require.Zero(t, n, "no invalid pool may be written")
}

func TestUpdatePool(t *testing.T) {
	ctx, s, _ := startStore(t)
	_, err := s.CreatePool(ctx, pool.Pool{ID: "p1"})
	require.NoError(t, err)

	start := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	p, err := s.UpdatePool(ctx, "p1", func(p *pool.Pool) error {
		p.Paused = true
		p.PerUserLimit = 3
		p.ClaimStartsAt = start
		return nil
	})
	require.NoError(t, err)
	require.True(t, p.Paused)
	require.Equal(t, 3, p.PerUserLimit)
	require.True(t, p.ClaimStartsAt.Equal(start))
	require.False(t, p.ClaimWindowOpen(time.Now()))
	require.True(t, p.ClaimWindowOpen(start))

	// An invalid change is refused and nothing of it is written.
	_, err = s.UpdatePool(ctx, "p1", func(p *pool.Pool) error {
		p.Paused = false
		p.ClaimEndsAt = start.Add(-time.Minute)
		return nil
	})
	var fe *pool.FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "pool.claim_ends_at", fe.Field)
	got, err := s.GetPool(ctx, "p1")
	require.NoError(t, err)
	require.True(t, got.Paused)
	require.True(t, got.ClaimEndsAt.IsZero())

	_, err = s.UpdatePool(ctx, "nope", func(*pool.Pool) error { return nil })
	require.ErrorIs(t, err, pool.ErrPoolNotFound)
}

// Concurrent updates of different fields must both land: the row lock makes
// each read-modify-write see the other's result.
func TestUpdatePoolConcurrent(t *testing.T) {
	ctx, s, _ := startStore(t)
	_, err := s.CreatePool(ctx, pool.Pool{ID: "p1"})
	require.NoError(t, err)
	errs := make(chan error, 20)
	for i := range 20 {
		go func() {
			_, err := s.UpdatePool(ctx, "p1", func(p *pool.Pool) error {
				if i%2 == 0 {
					p.PerUserLimit++
				} else {
					p.RefillLowWater++
				}
				return nil
			})
			errs <- err
		}()
	}
	for range 20 {
		require.NoError(t, <-errs)
	}
	got, err := s.GetPool(ctx, "p1")
	require.NoError(t, err)
	require.Equal(t, pool.DefaultPerUserLimit+10, got.PerUserLimit)
	require.Equal(t, pool.DefaultRefillLowWater+10, got.RefillLowWater)
}

func TestListPools(t *testing.T) {
	ctx, s, _ := startStore(t)
	for _, id := range []string{"c", "a", "e", "b", "d"} {
		_, err := s.CreatePool(ctx, pool.Pool{ID: id})
		require.NoError(t, err)
	}
	page, err := s.ListPools(ctx, "", 2)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, ids(page))
	page, err = s.ListPools(ctx, "b", 10)
	require.NoError(t, err)
	require.Equal(t, []string{"c", "d", "e"}, ids(page))
}

func ids(ps []pool.Pool) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.ID
	}
	return out
}
