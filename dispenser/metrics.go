package dispenser

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/internal/input"
	"github.com/dispenserhq/dispenser/internal/pgerr"
	"github.com/dispenserhq/dispenser/jobs"
	"github.com/dispenserhq/dispenser/pool"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// Metrics are the service's Prometheus metrics, on a registry of their own.
// Pool ids are labels; codes, user ids and request ids never are.
type Metrics struct {
	Registry *prometheus.Registry

	claims        *prometheus.CounterVec
	claimSeconds  *prometheus.HistogramVec
	batchSize     prometheus.Histogram
	commitSeconds prometheus.Histogram // each group commit's transaction
	poolCodes     *prometheus.GaugeVec
	redisStaged   *prometheus.GaugeVec
	jobRuns       *prometheus.CounterVec
	jobSeconds    *prometheus.HistogramVec
	jobChanges    *prometheus.CounterVec
	prizes        *prometheus.CounterVec
	holds         *prometheus.CounterVec
	holdSeconds   *prometheus.HistogramVec
}

// NewMetrics registers the metrics; breaker reads the Redis breaker's state.
func NewMetrics(breaker func() string) *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.claims = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dispenser_claims_total",
		Help: "ClaimCode answers by pool, path (redis, fallback, replay, none) and result.",
	}, []string{"pool", "path", "result"})
	m.claimSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "dispenser_claim_duration_seconds",
		Help:    "ClaimCode latency by pool and path.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"pool", "path"})
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "dispenser_group_commit_batch_size",
		Help:    "Claims persisted per group-commit transaction.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
	})
	m.commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "dispenser_group_commit_duration_seconds",
		Help:    "Time of each group-commit transaction, from sending it to Postgres's answer to its COMMIT (retries included); every claim of the batch waits for it.",
		Buckets: []float64{.0005, .001, .002, .004, .008, .016, .032, .064, .128, .256, .512, 1, 2, 5, 10},
	})
	m.poolCodes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dispenser_pool_codes",
		Help: "Codes of a pool by state (available, staged, held, claimed, void, imported), as of the last reconcile.",
	}, []string{"pool", "state"})
	m.redisStaged = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "dispenser_pool_redis_staged",
		Help: "Length of a pool's staged list in Redis, as of the last reconcile.",
	}, []string{"pool"})
	m.jobRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dispenser_job_runs_total",
		Help: "Job runs by job and result (ok, busy, error).",
	}, []string{"job", "result"})
	m.jobSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "dispenser_job_duration_seconds",
		Help:    "Job run duration.",
		Buckets: prometheus.ExponentialBuckets(0.005, 4, 9),
	}, []string{"job"})
	m.jobChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dispenser_job_codes_total",
		Help: "Codes the jobs moved, by job and kind (staged, expired, returned_lost_batches, returned_stale, returned_orphans, holds_expired).",
	}, []string{"job", "kind"})
	m.prizes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dispenser_prizes_total",
		Help: "Prize delivery outcomes by pool (assigned, delivered, retried, parked).",
	}, []string{"pool", "outcome"})
	m.holds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dispenser_reservations_total",
		Help: "ReserveCode, ConfirmReservation and CancelReservation answers by pool, op (reserve, confirm, cancel), path (a new hold's: redis, fallback; else replay or none) and result.",
	}, []string{"pool", "op", "path", "result"})
	m.holdSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "dispenser_reservation_duration_seconds",
		Help:    "Reservation call latency by pool and op.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"pool", "op"})
	breakerGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dispenser_redis_breaker_open",
		Help: "1 while any pool's Redis breaker is open or half-open (its claims served by Postgres), else 0.",
	}, func() float64 {
		if breaker() == "closed" {
			return 0
		}
		return 1
	})
	m.Registry.MustRegister(m.claims, m.claimSeconds, m.batchSize, m.commitSeconds, m.poolCodes, m.redisStaged, m.jobRuns,
		m.jobSeconds, m.jobChanges, m.prizes, m.holds, m.holdSeconds, breakerGauge,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// observeClaim records one ClaimCode answer.
func (m *Metrics) observeClaim(poolID string, res claim.Result, err error, took time.Duration) {
	path := string(res.Path)
	if err != nil {
		path = "none"
	}
	m.claims.WithLabelValues(poolID, path, claimResult(err)).Inc()
	m.claimSeconds.WithLabelValues(poolID, path).Observe(took.Seconds())
}

// claimPaths reads the ClaimCode answers counted since start, by pool and
// path: claimed (result ok) and refused (any other result).
func (m *Metrics) claimPaths() []*dispenserv1.ClaimPathCount {
	families, err := m.Registry.Gather()
	if err != nil {
		return nil
	}
	type key struct{ pool, path string }
	counts := map[key]*dispenserv1.ClaimPathCount{}
	for _, f := range families {
		if f.GetName() != "dispenser_claims_total" {
			continue
		}
		for _, mt := range f.GetMetric() {
			var k key
			var ok bool
			for _, l := range mt.GetLabel() {
				switch l.GetName() {
				case "pool":
					k.pool = l.GetValue()
				case "path":
					k.path = l.GetValue()
				case "result":
					ok = l.GetValue() == "ok"
				}
			}
			c := counts[k]
			if c == nil {
				c = &dispenserv1.ClaimPathCount{PoolId: k.pool, Path: k.path}
				counts[k] = c
			}
			if ok {
				c.Claimed += int64(mt.GetCounter().GetValue())
			} else {
				c.Refused += int64(mt.GetCounter().GetValue())
			}
		}
	}
	out := slices.Collect(maps.Values(counts))
	slices.SortFunc(out, func(a, b *dispenserv1.ClaimPathCount) int {
		return cmp.Or(strings.Compare(a.PoolId, b.PoolId), strings.Compare(a.Path, b.Path))
	})
	return out
}

// observeHold records one reservation call's answer.
func (m *Metrics) observeHold(poolID, op string, path claim.Path, err error, took time.Duration) {
	if err != nil || path == "" {
		path = "none"
	}
	m.holds.WithLabelValues(poolID, op, string(path), claimResult(err)).Inc()
	m.holdSeconds.WithLabelValues(poolID, op).Observe(took.Seconds())
}

// claimResult names the outcome of a claim for the result label.
func claimResult(err error) string {
	var fe *input.FieldError
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, claim.ErrPoolExhausted):
		return "exhausted"
	case errors.Is(err, claim.ErrUserLimit):
		return "limit"
	case errors.Is(err, claim.ErrRequestReused):
		return "reused"
	case errors.Is(err, claim.ErrPoolPaused):
		return "paused"
	case errors.Is(err, claim.ErrPoolClosed):
		return "closed"
	case errors.Is(err, claim.ErrHoldLimit):
		return "hold_limit"
	case errors.Is(err, claim.ErrReservationExpired):
		return "expired"
	case errors.Is(err, claim.ErrReservationCancelled):
		return "cancelled"
	case errors.Is(err, claim.ErrReservationPending), errors.Is(err, claim.ErrReservationConfirmed),
		errors.Is(err, claim.ErrNotReservation):
		return "conflict"
	case errors.Is(err, claim.ErrReservationNotFound):
		return "not_found"
	case errors.Is(err, pool.ErrPoolNotFound):
		return "not_found"
	case errors.As(err, &fe):
		return "invalid"
	case errors.Is(err, pgerr.ErrUnavailable), errors.Is(err, claim.ErrStopped):
		return "unavailable"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "error"
}

// codeChanges is what a job did to one pool's codes, by kind.
func codeChanges(r jobs.PoolReport) map[string]int64 {
	return map[string]int64{"staged": int64(r.Staged), "expired": r.Reconcile.Expired,
		"returned_lost_batches": r.Reconcile.LostBatches, "returned_stale": r.Reconcile.Stale,
		"returned_orphans": r.Reconcile.Orphans, "returned_dropped_shards": r.Reconcile.Dropped,
		"holds_expired": r.HoldsExpired}
}

// prizeOutcomes is what a delivery run did to one pool's prizes.
func prizeOutcomes(r jobs.PoolReport) map[string]int64 {
	return map[string]int64{"assigned": int64(r.Deliver.Assigned), "delivered": int64(r.Deliver.Delivered),
		"retried": int64(r.Deliver.Retried), "parked": int64(r.Deliver.Parked)}
}

// observeJob records one job run and what it changed.
func (m *Metrics) observeJob(name jobs.Name, reports []jobs.PoolReport, err error, took time.Duration) {
	result := "ok"
	switch {
	case errors.Is(err, jobs.ErrBusy):
		result = "busy"
	case err != nil:
		result = "error"
	}
	m.jobRuns.WithLabelValues(string(name), result).Inc()
	m.jobSeconds.WithLabelValues(string(name)).Observe(took.Seconds())
	for _, r := range reports {
		for kind, n := range codeChanges(r) {
			if n > 0 {
				m.jobChanges.WithLabelValues(string(name), kind).Add(float64(n))
			}
		}
		for outcome, n := range prizeOutcomes(r) {
			if n > 0 {
				m.prizes.WithLabelValues(r.PoolID, outcome).Add(float64(n))
			}
		}
		if r.Stats != nil {
			st := r.Stats
			for state, n := range map[string]int64{"available": st.Available, "staged": st.Staged, "held": st.Held,
				"claimed": st.Claimed, "void": st.Void, "imported": st.Imported} {
				m.poolCodes.WithLabelValues(r.PoolID, state).Set(float64(n))
			}
		}
		if r.RedisStaged >= 0 && name == jobs.Reconcile {
			m.redisStaged.WithLabelValues(r.PoolID).Set(float64(r.RedisStaged))
		}
	}
}
