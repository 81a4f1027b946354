package pool_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/pool"
)

func TestVoidCodes(t *testing.T) {
	ctx, s, db := startImport(t)
	mustImport(t, s, "p1", codeFile("V", 0, 10))
	// One code is claimed already; it must stay so.
	_, err := db.Pool.Exec(ctx, `WITH c AS (UPDATE codes SET state = 'claimed' WHERE code = 'V-00000001' RETURNING id)
		INSERT INTO claims (pool_id, request_id, user_id, user_slot, code_id) SELECT 'p1', 'r', 'u', 1, id FROM c`)
	require.NoError(t, err)

	res, err := s.Void(ctx, pool.VoidRequest{PoolID: "p1", Reason: "supplier recall",
		Codes: []string{"V-00000000", "V-00000001", "V-00000002", "V-00000002", "NOPE-1234"}})
	require.NoError(t, err)
	require.Equal(t, pool.VoidResult{Voided: 2, AlreadyVoid: 0, Claimed: 1, NotFound: 1}, res)

	res, err = s.Void(ctx, pool.VoidRequest{PoolID: "p1", Reason: "again", Codes: []string{"V-00000000"}})
	require.NoError(t, err)
	require.Equal(t, pool.VoidResult{AlreadyVoid: 1}, res)

	var reason string
	require.NoError(t, db.Pool.QueryRow(ctx, "SELECT void_reason FROM codes WHERE code = 'V-00000002'").Scan(&reason))
	require.Equal(t, "supplier recall", reason)
	st := requireBalanced(t, s, "p1")
	require.EqualValues(t, 2, st.Void)
	require.EqualValues(t, 1, st.Claimed)
}

func TestVoidImport(t *testing.T) {
	ctx, s, _ := startImport(t)
	first := mustImport(t, s, "p1", codeFile("A", 0, 30))
	mustImport(t, s, "p1", codeFile("B", 0, 20))
	res, err := s.Void(ctx, pool.VoidRequest{PoolID: "p1", ImportID: first.ID, Reason: "leaked batch"})
	require.NoError(t, err)
	require.Equal(t, pool.VoidResult{Voided: 30}, res)
	st := requireBalanced(t, s, "p1")
	require.EqualValues(t, 30, st.Void)
	require.EqualValues(t, 20, st.Available)
}

func TestVoidValidation(t *testing.T) {
	ctx, s, _ := startImport(t)
	for name, tt := range map[string]struct {
		req   pool.VoidRequest
		field string
	}{
		"nothing selected": {pool.VoidRequest{PoolID: "p1", Reason: "r"}, "codes"},
		"both selectors":   {pool.VoidRequest{PoolID: "p1", Reason: "r", Codes: []string{"AAAA"}, ImportID: 1}, "codes"},
		"too many":         {pool.VoidRequest{PoolID: "p1", Reason: "r", Codes: make([]string, pool.MaxVoidCodes+1)}, "codes"},
		"no reason":        {pool.VoidRequest{PoolID: "p1", Codes: []string{"AAAA"}}, "reason"},
		"bad pool id":      {pool.VoidRequest{PoolID: "P!", Reason: "r", Codes: []string{"AAAA"}}, "pool_id"},
	} {
		_, err := s.Void(ctx, tt.req)
		var fe *pool.FieldError
		require.ErrorAs(t, err, &fe, name)
		require.Equal(t, tt.field, fe.Field, name)
	}
	_, err := s.Void(ctx, pool.VoidRequest{PoolID: "nope", Reason: "r", Codes: []string{"AAAA"}})
	require.ErrorIs(t, err, pool.ErrPoolNotFound)
}
