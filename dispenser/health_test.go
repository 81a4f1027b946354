package dispenser_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// GetHealth reports the stores, the breaker of the shard claims came from,
// the jobs that ran (with what they changed) and the claims by path.
func TestGetHealth(t *testing.T) {
	ctx, b := start(t)
	h, err := b.admin.GetHealth(ctx, &dispenserv1.GetHealthRequest{})
	require.NoError(t, err)
	require.True(t, h.GetPostgresUp())
	require.True(t, h.GetRedisUp())
	require.NotEmpty(t, h.GetReplica())
	require.Empty(t, h.GetBreakers())
	require.Len(t, h.GetJobs(), 4)
	for _, j := range h.GetJobs() {
		require.Zero(t, j.GetRuns(), j.GetJob())
	}

	b.fill(t, &dispenserv1.Pool{Id: "p1"}, 5)
	_, err = b.claimCode("u1", "r1")
	require.NoError(t, err)
	_, err = b.claimCode("u1", "r1") // a replay
	require.NoError(t, err)
	_, err = b.claimCode("u1", "r2") // the user's limit
	require.Error(t, err)

	h, err = b.admin.GetHealth(ctx, &dispenserv1.GetHealthRequest{})
	require.NoError(t, err)
	require.Len(t, h.GetBreakers(), 1)
	require.Equal(t, "closed", h.GetBreakers()[0].GetState())
	require.Contains(t, h.GetBreakers()[0].GetShard(), "p1")
	var refill *dispenserv1.JobStatus
	for _, j := range h.GetJobs() {
		if j.GetJob() == "refill" {
			refill = j
		}
	}
	require.NotNil(t, refill)
	require.Equal(t, int64(1), refill.GetRuns())
	require.Equal(t, "ok", refill.GetLastResult())
	require.Equal(t, int64(5), refill.GetLastChanges()["staged"])
	require.NotNil(t, refill.GetLastStart())
	paths := map[string]*dispenserv1.ClaimPathCount{}
	for _, p := range h.GetClaimPaths() {
		require.Equal(t, "p1", p.GetPoolId())
		paths[p.GetPath()] = p
	}
	require.Equal(t, int64(1), paths["redis"].GetClaimed())
	require.Equal(t, int64(1), paths["replay"].GetClaimed())
	require.Equal(t, int64(1), paths["none"].GetRefused())
}
