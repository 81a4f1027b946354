package dispenser_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// syncBuffer is a bytes.Buffer safe for concurrent log writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Promise 7: thousands of codes imported, claimed, exported, voided and
// run through the jobs with debug logging on; none of them, and no user id,
// appears in the logs or in the metrics.
func TestNoSecretsInLogsOrMetrics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var logs syncBuffer
	b := setup(t, setupOpts{log: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	const n = 3000
	var data strings.Builder
	var codes []string
	for i := range n {
		c := fmt.Sprintf("S3CR3T%06dX", i)
		codes = append(codes, c)
		data.WriteString(c + "\n")
	}
	data.WriteString("bad\n")
	_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "p1", RefillBatchSize: 1000}})
	require.NoError(t, err)
	_, err = b.importData(ctx, &dispenserv1.ImportOptions{PoolId: "p1", Format: dispenserv1.ImportFormat_IMPORT_FORMAT_LINES}, data.String())
	require.NoError(t, err)
	_, err = b.importData(ctx, &dispenserv1.ImportOptions{PoolId: "p1", Format: dispenserv1.ImportFormat_IMPORT_FORMAT_LINES, Strict: true}, data.String())
	require.Error(t, err)
	_, err = b.admin.RunJob(ctx, &dispenserv1.RunJobRequest{Job: dispenserv1.Job_JOB_REFILL})
	require.NoError(t, err)
	for i := range 1500 {
		u := fmt.Sprintf("USER-PII-%05d", i)
		_, err := b.claim.ClaimCode(ctx, &dispenserv1.ClaimCodeRequest{PoolId: "p1", UserId: u, RequestId: fmt.Sprint("req-", i)})
		require.NoError(t, err)
		if i%100 == 0 {
			_, err = b.claim.ClaimCode(ctx, &dispenserv1.ClaimCodeRequest{PoolId: "p1", UserId: u, RequestId: fmt.Sprint("again-", i)})
			require.Error(t, err) // limit: an error path with the user id in the request
		}
	}
	_, err = b.admin.VoidCodes(ctx, &dispenserv1.VoidCodesRequest{PoolId: "p1", Codes: codes[2900:], Reason: "recall"})
	require.NoError(t, err)
	_, err = b.admin.RunJob(ctx, &dispenserv1.RunJobRequest{Job: dispenserv1.Job_JOB_RECONCILE})
	require.NoError(t, err)

	rec := httptest.NewRecorder()
	b.srv.Metrics().Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	metrics := rec.Body.String()
	require.Contains(t, metrics, `dispenser_claims_total{path="redis",pool="p1",result="ok"}`)
	require.Contains(t, metrics, `dispenser_claims_total{path="none",pool="p1",result="limit"}`)
	require.Contains(t, metrics, `dispenser_pool_codes{pool="p1",state="claimed"} 1500`)
	// Every committed batch is timed once.
	batches := metricValue(t, metrics, "dispenser_group_commit_batch_size_count")
	require.Positive(t, batches)
	require.Equal(t, batches, metricValue(t, metrics, "dispenser_group_commit_duration_seconds_count"))
	require.Positive(t, metricValue(t, metrics, "dispenser_group_commit_duration_seconds_sum"))
	require.Contains(t, metrics, `dispenser_job_runs_total{job="reconcile",result="ok"} 1`)

	out := logs.String()
	require.Greater(t, len(out), 10_000, "debug logging was on")
	require.Contains(t, out, `"request_id":"req-1499"`, "claim log lines carry the request id")
	require.Contains(t, out, `"pool":"p1"`)
	for _, haystack := range []string{out, metrics} {
		require.NotContains(t, haystack, "S3CR3T")
		require.NotContains(t, haystack, "USER-PII")
	}
}

// Only pools that exist become metric labels: thousands of calls with
// random pool ids (some huge) leave the number of series flat.
func TestMetricSeriesBoundedByHostilePoolIDs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var logs syncBuffer
	b := setup(t, setupOpts{log: slog.New(slog.NewJSONHandler(&logs, nil))})
	b.fill(t, &dispenserv1.Pool{Id: "p1", RefillBatchSize: 10}, 10)
	_, err := b.claimCode("u1", "r1")
	require.NoError(t, err)
	series := func() int {
		rec := httptest.NewRecorder()
		b.srv.Metrics().Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		n := 0
		for _, line := range strings.Split(rec.Body.String(), "\n") {
			if strings.HasPrefix(line, "dispenser_claim") {
				n++
			}
		}
		return n
	}
	// One round of unknown-pool answers creates the "unknown" series once.
	_, err = b.claim.ClaimCode(ctx, &dispenserv1.ClaimCodeRequest{PoolId: "nope", UserId: "u", RequestId: "r"})
	require.Error(t, err)
	_, err = b.claim.ClaimCode(ctx, &dispenserv1.ClaimCodeRequest{PoolId: "NOPE{", UserId: "u", RequestId: "r"})
	require.Error(t, err)
	before := series()
	big := strings.Repeat("x", 1<<20)
	for i := range 2000 {
		id := fmt.Sprintf("pool-%d-%d", i, i*7919)
		if i%3 == 0 {
			id = fmt.Sprintf("Bad Id %d", i)
		}
		if i%500 == 0 {
			id = big + id
		}
		_, err := b.claim.ClaimCode(ctx, &dispenserv1.ClaimCodeRequest{PoolId: id, UserId: "u", RequestId: fmt.Sprint("r", i)})
		require.Error(t, err)
	}
	require.Equal(t, before, series(), "random pool ids added metric series")
	require.Less(t, len(logs.String()), 4<<20, "huge pool ids reached the logs")
}

// At info level, the flash-sale path writes no log line per claim; other
// calls still get their access line.
func TestClaimCodeNotLoggedAtInfo(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	b := setup(t, setupOpts{log: slog.New(slog.NewJSONHandler(&logs, nil))})
	b.fill(t, &dispenserv1.Pool{Id: "p1", RefillBatchSize: 100}, 100)
	for i := range 50 {
		_, err := b.claimCode(fmt.Sprint("u", i), fmt.Sprint("r", i))
		require.NoError(t, err)
	}
	out := logs.String()
	require.NotContains(t, out, `"grpc.method":"ClaimCode"`)
	require.Contains(t, out, `"grpc.method":"ImportCodes"`)
}

// metricValue is the value of the sample named exactly name (labels
// included) in a Prometheus text exposition.
func metricValue(t *testing.T, exposition, name string) float64 {
	t.Helper()
	for line := range strings.Lines(exposition) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), name+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(rest, 64)
		require.NoError(t, err, line)
		return v
	}
	require.Failf(t, "no sample", "%s is not in the exposition", name)
	return 0
}
