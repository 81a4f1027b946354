package pool

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/testenv"
)

// A source that draws the same few codes over and over: every collision,
// with the pool and within the draw, is drawn again until the count is
// met, in the same import.
func TestGenerateRedrawsCollisions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.Postgres(t)
	s := NewStore(db.Pool)
	_, err := s.CreatePool(ctx, Pool{ID: "p"})
	require.NoError(t, err)
	// Byte i%32 draws charset[i%32]: codes of 12 characters cycle through
	// 8 distinct values, and then fresh bytes follow.
	var seq bytes.Buffer
	for i := range 40 * 12 {
		seq.WriteByte(byte(i % 32 * 8 % 32))
	}
	s.random = &repeatThen{first: seq.Bytes(), rest: newCounterSource()}
	sum, err := s.Generate(ctx, GenerateOptions{PoolID: "p", Count: 30, Pattern: "############"}, nil)
	require.NoError(t, err)
	require.EqualValues(t, 30, sum.Inserted)
	require.Positive(t, sum.Collisions)
	var n, distinct, imports int64
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT code), count(DISTINCT import_id) FROM codes WHERE pool_id = 'p'`).
		Scan(&n, &distinct, &imports))
	require.EqualValues(t, 30, n)
	require.EqualValues(t, 30, distinct)
	require.EqualValues(t, 1, imports)
	st, err := s.PoolStats(ctx, "p")
	require.NoError(t, err)
	require.True(t, st.Balanced())
}

// repeatThen reads first, then rest.
type repeatThen struct {
	first []byte
	rest  *counterSource
}

func (r *repeatThen) Read(p []byte) (int, error) {
	if len(r.first) > 0 {
		n := copy(p, r.first)
		r.first = r.first[n:]
		return n, nil
	}
	return r.rest.Read(p)
}

// counterSource yields bytes that never repeat a 12-character code soon.
type counterSource struct{ i uint64 }

func newCounterSource() *counterSource { return &counterSource{i: 1} }

func (c *counterSource) Read(p []byte) (int, error) {
	for k := range p {
		c.i = c.i*6364136223846793005 + 1442695040888963407
		p[k] = byte(c.i >> 56)
	}
	return len(p), nil
}
