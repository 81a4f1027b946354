package prize

import (
	"bytes"
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/internal/pgerr"
	"github.com/dispenserhq/dispenser/pool"
	"github.com/dispenserhq/dispenser/webhook"
)

var (
	//go:embed sql/ready_batch.sql
	readyBatchSQL string
	//go:embed sql/assign.sql
	assignSQL string
	//go:embed sql/park.sql
	parkSQL string
	//go:embed sql/lease_due.sql
	leaseDueSQL string
	//go:embed sql/delivery_payloads.sql
	deliveryPayloadsSQL string
	//go:embed sql/delivered.sql
	deliveredSQL string
	//go:embed sql/attempt_failed.sql
	attemptFailedSQL string
	//go:embed sql/next_due.sql
	nextDueSQL string
	//go:embed sql/ready_counts.sql
	readyCountsSQL string
)

// Park reasons, as ListPrizes shows them.
const (
	ParkPoolExhausted = "POOL_EXHAUSTED"
	ParkUserLimit     = "USER_LIMIT_REACHED"
	ParkWebhookFailed = "WEBHOOK_FAILED"
	ParkNoWebhook     = "WEBHOOK_NOT_CONFIGURED"
	// ParkWebhookInsecure: the pool's webhook URL is plain http to a host
	// that is not loopback, and the server does not allow insecure webhooks.
	ParkWebhookInsecure = "WEBHOOK_INSECURE"
	// ParkInvalidPrize: the stored record cannot be claimed for (an id
	// that no claim may carry).
	ParkInvalidPrize = "INVALID_PRIZE"
	// ParkPoolNotFound: the prize's pool does not exist.
	ParkPoolNotFound = "POOL_NOT_FOUND"
	// ParkAssignFailed: anything else that refused this prize's claim.
	ParkAssignFailed = "ASSIGN_FAILED"

	maxResponseBodyRead = 64 << 10
)

// runStopping reports an error that stops the whole run rather than park
// one prize: the store is down, the service stops, the run was cancelled.
func runStopping(err error) bool {
	return errors.Is(err, pgerr.ErrUnavailable) || errors.Is(err, claim.ErrStopped) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// parkReason is why a prize whose claim answered err is parked ("" when it
// was assigned).
func parkReason(err error) string {
	var fe *FieldError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, claim.ErrPoolExhausted):
		return ParkPoolExhausted
	case errors.Is(err, claim.ErrUserLimit):
		return ParkUserLimit
	case errors.Is(err, pool.ErrPoolNotFound):
		return ParkPoolNotFound
	case errors.As(err, &fe):
		return ParkInvalidPrize
	}
	return ParkAssignFailed
}

// MaxAttemptsDefault is how many webhook attempts a delivery gets before
// its prize is parked; dispenserd's flag uses it.
const MaxAttemptsDefault = 6

// DeliverConfig configures the delivery run.
type DeliverConfig struct {
	// HTTP sends the webhooks; default a client with a 10s timeout.
	HTTP *http.Client
	// BatchSize is how many prizes one transaction assigns, and how many
	// deliveries one lease takes; default 500.
	BatchSize int
	// Concurrency is how many claims or webhooks run at once; default 32.
	Concurrency int
	// MaxAttempts is how many times a delivery is tried before it is
	// parked; default 6.
	MaxAttempts int
	// BaseBackoff and MaxBackoff bound the wait between attempts: base *
	// 2^(attempt-1), capped, with jitter; defaults 1s and 30s.
	BaseBackoff, MaxBackoff time.Duration
	// AllowInsecureWebhooks delivers over plain http to any host. Off, a
	// pool whose URL is plain http to a host that is not loopback has its
	// prizes parked (WEBHOOK_INSECURE) and nothing is sent.
	AllowInsecureWebhooks bool
	Logger                *slog.Logger
}

// Deliverer assigns codes to ready prizes and sends them to the pools'
// webhooks.
type Deliverer struct {
	db     *pgxpool.Pool
	claims *claim.Service
	stager *claim.Stager
	cfg    DeliverConfig
	log    *slog.Logger
	http   *http.Client
	pools  *pool.Store
}

// NewDeliverer returns the delivery run of the prizes in db, claiming their
// codes through claims; stager, if not nil, stages each pool's ready
// prizes' worth of codes first, so that the claims ride the Redis path.
func NewDeliverer(db *pgxpool.Pool, claims *claim.Service, stager *claim.Stager, cfg DeliverConfig) *Deliverer {
	cfg.BatchSize = cmp.Or(cfg.BatchSize, 500)
	cfg.Concurrency = cmp.Or(cfg.Concurrency, 32)
	cfg.MaxAttempts = cmp.Or(cfg.MaxAttempts, MaxAttemptsDefault)
	cfg.BaseBackoff = cmp.Or(cfg.BaseBackoff, time.Second)
	cfg.MaxBackoff = cmp.Or(cfg.MaxBackoff, 30*time.Second)
	client := &http.Client{Timeout: 10 * time.Second}
	if cfg.HTTP != nil {
		client = new(*cfg.HTTP) // a copy: the caller's client is left as it was
	}
	// A redirect is a failed attempt: following it would re-send the body,
	// code included, somewhere the pool never named (even https to http).
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	client.Transport = guardedTransport(client.Transport)
	return &Deliverer{db: db, claims: claims, stager: stager, cfg: cfg, http: client,
		log: cmp.Or(cfg.Logger, slog.Default()), pools: pool.NewStore(db)}
}

// guardedTransport is rt (http.DefaultTransport if nil) dialing through
// webhook.DialControl: no delivery connects to a link-local, multicast or
// unspecified address, whatever its URL's name resolves to. (Through an
// HTTP proxy from the environment, the guard sees the proxy's address; the
// proxy's own rules apply past it.) A RoundTripper that is not an
// *http.Transport is the caller's to guard.
func guardedTransport(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	t, ok := rt.(*http.Transport)
	if !ok {
		return rt
	}
	t = t.Clone()
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: webhook.DialControl}
	t.DialContext = dialer.DialContext
	return t
}

// DeliverReport counts what one run did, per pool.
type DeliverReport struct {
	Assigned, Delivered, Retried, Parked int
}

// Run assigns a code to every ready prize (of one pool, or of all with
// poolID ""), then delivers every assigned prize, retrying failures with
// backoff until each is delivered or parked. A prize is assigned at most one
// code even when runs overlap or one dies and is rerun: its claim's request
// id is claim.PrizeRequestID(id), one no caller can send, so a second claim
// replays the first and no ClaimCode call can take or read it.
func (d *Deliverer) Run(ctx context.Context, poolID string) (map[string]DeliverReport, error) {
	t := &tally{m: map[string]*DeliverReport{}}
	start := time.Now()
	err := d.assignAll(ctx, poolID, t)
	assigned := time.Since(start)
	if err == nil {
		err = d.deliverAll(ctx, poolID, t)
	}
	d.log.InfoContext(ctx, "delivery run finished", "pool", poolID, "assign_ms", assigned.Milliseconds(),
		"deliver_ms", (time.Since(start) - assigned).Milliseconds(), "err", err)
	return t.result(), err
}

// tally counts a run's outcomes per pool, from many goroutines.
type tally struct {
	mu sync.Mutex
	m  map[string]*DeliverReport
}

func (t *tally) add(pool string, f func(*DeliverReport)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m[pool] == nil {
		t.m[pool] = &DeliverReport{}
	}
	f(t.m[pool])
}

func (t *tally) result() map[string]DeliverReport {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]DeliverReport, len(t.m))
	for k, v := range t.m {
		out[k] = *v
	}
	return out
}

type readyPrize struct {
	id           int64
	pool, userID string
}

func (d *Deliverer) assignAll(ctx context.Context, poolID string, t *tally) error {
	d.prestage(ctx, poolID)
	skip := []string{} // pools paused for this run
	for {
		n, paused, err := d.assignBatch(ctx, poolID, skip, t)
		if err != nil {
			return err
		}
		skip = append(skip, paused...)
		if n == 0 && len(paused) == 0 {
			return nil
		}
	}
}

// prestage stages in Redis as many codes as each pool has ready prizes, so
// that the claims ride the Redis path and its group commit instead of one
// Postgres transaction each. It is only an optimisation: if Redis cannot
// take them, the claims fall back to Postgres with the same promises.
func (d *Deliverer) prestage(ctx context.Context, poolID string) {
	if d.stager == nil {
		return
	}
	rows, err := d.db.Query(ctx, readyCountsSQL, poolID)
	if err != nil {
		d.log.WarnContext(ctx, "counting ready prizes failed; assigning without pre-staging", "err", err)
		return
	}
	type count struct {
		Pool string
		N    int
	}
	counts, err := pgx.CollectRows(rows, pgx.RowToStructByPos[count])
	if err != nil {
		d.log.WarnContext(ctx, "counting ready prizes failed; assigning without pre-staging", "err", err)
		return
	}
	for _, c := range counts {
		p, err := d.pools.GetPool(ctx, c.Pool)
		if err == nil {
			_, err = d.stager.StageAtLeast(ctx, p, c.N)
		}
		if err != nil {
			d.log.WarnContext(ctx, "pre-staging for delivery failed; claims fall back to Postgres", "pool", c.Pool, "err", err)
		}
	}
}

// assignBatch assigns one batch of ready prizes inside one transaction that
// holds their row locks, and returns how many it handled and which pools
// were paused.
func (d *Deliverer) assignBatch(ctx context.Context, poolID string, skip []string, t *tally) (int, []string, error) {
	var handled int
	var mu sync.Mutex
	var paused []string
	err := pgx.BeginFunc(ctx, d.db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, readyBatchSQL, poolID, skip, d.cfg.BatchSize)
		if err != nil {
			return err
		}
		batch, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (readyPrize, error) {
			var p readyPrize
			return p, r.Scan(&p.id, &p.pool, &p.userID)
		})
		if err != nil || len(batch) == 0 {
			return err
		}
		handled = len(batch)
		var assigned []int64
		parked := map[string][]int64{}
		pausedSet := map[string]bool{}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(d.cfg.Concurrency)
		for _, p := range batch {
			g.Go(func() error {
				_, err := d.claims.ClaimPrize(gctx, p.pool, p.userID, p.id)
				mu.Lock()
				defer mu.Unlock()
				if errors.Is(err, claim.ErrPoolPaused) {
					pausedSet[p.pool] = true
					return nil
				}
				if err != nil && runStopping(err) {
					// Nothing can be assigned now, for any prize: the next
					// run takes them all again.
					return fmt.Errorf("claim for prize %d: %w", p.id, err)
				}
				if reason := parkReason(err); reason != "" {
					if reason == ParkAssignFailed || reason == ParkInvalidPrize {
						d.log.WarnContext(gctx, "prize parked: it cannot be assigned", "pool", p.pool, "prize", p.id,
							"reason", reason, "err", err)
					}
					parked[reason] = append(parked[reason], p.id)
					return nil
				}
				assigned = append(assigned, p.id)
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, assignSQL, assigned); err != nil {
			return fmt.Errorf("assign prizes: %w", err)
		}
		for reason, ids := range parked {
			if _, err := tx.Exec(ctx, parkSQL, ids, reason); err != nil {
				return fmt.Errorf("park prizes: %w", err)
			}
		}
		byID := map[int64]string{}
		for _, p := range batch {
			byID[p.id] = p.pool
		}
		for _, id := range assigned {
			t.add(byID[id], func(r *DeliverReport) { r.Assigned++ })
		}
		for _, ids := range parked {
			for _, id := range ids {
				t.add(byID[id], func(r *DeliverReport) { r.Parked++ })
			}
		}
		for pool := range pausedSet {
			paused = append(paused, pool)
			d.log.WarnContext(ctx, "pool paused: its ready prizes wait for the next run", "pool", pool)
		}
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("assign ready prizes: %w", err)
	}
	return handled, paused, nil
}

// leased is one delivery taken for an attempt.
type leased struct {
	id      string
	prizeID int64
	attempt int
}

func (d *Deliverer) deliverAll(ctx context.Context, poolID string, t *tally) error {
	lease := fmt.Sprintf("%d milliseconds", (2*d.http.Timeout + 5*time.Second).Milliseconds())
	for {
		rows, err := d.db.Query(ctx, leaseDueSQL, poolID, d.cfg.BatchSize, lease)
		if err != nil {
			return fmt.Errorf("lease deliveries: %w", err)
		}
		batch, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (leased, error) {
			var l leased
			return l, r.Scan(&l.id, &l.prizeID, &l.attempt)
		})
		if err != nil {
			return fmt.Errorf("lease deliveries: %w", err)
		}
		if len(batch) > 0 {
			if err := d.sendBatch(ctx, batch, t); err != nil {
				return err
			}
			continue
		}
		// Nothing due now: wait for the next retry, or stop when every
		// assigned prize is delivered or parked.
		var next pgtype.Timestamptz
		if err := d.db.QueryRow(ctx, nextDueSQL, poolID).Scan(&next); err != nil {
			return fmt.Errorf("next delivery: %w", err)
		}
		if !next.Valid {
			return nil
		}
		wait := min(max(time.Until(next.Time), 10*time.Millisecond), d.cfg.MaxBackoff)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// payload is the body of a delivery. The code goes only here: to the pool's
// receiver, over its URL, signed.
type payload struct {
	DeliveryID string    `json:"delivery_id"`
	PrizeID    string    `json:"prize_id"`
	PoolID     string    `json:"pool_id"`
	UserID     string    `json:"user_id"`
	ExternalID string    `json:"external_id"`
	Code       string    `json:"code"`
	AssignedAt time.Time `json:"assigned_at"`
	SentAt     time.Time `json:"sent_at"`
	Attempt    int       `json:"attempt"`
}

// target is one leased delivery with what its attempt needs.
type target struct {
	prizeID int64
	body    payload // carries the attempt number too
	url     string
	secret  string
}

func (d *Deliverer) sendBatch(ctx context.Context, batch []leased, tl *tally) error {
	ids := make([]int64, len(batch))
	byPrize := map[int64]leased{}
	for i, l := range batch {
		ids[i] = l.prizeID
		byPrize[l.prizeID] = l
	}
	rows, err := d.db.Query(ctx, deliveryPayloadsSQL, ids)
	if err != nil {
		return fmt.Errorf("delivery payloads: %w", err)
	}
	targets, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (target, error) {
		var t target
		var assigned pgtype.Timestamptz
		err := r.Scan(&t.prizeID, &t.body.PoolID, &t.body.UserID, &t.body.ExternalID, &t.body.Code, &assigned, &t.url, &t.secret)
		l := byPrize[t.prizeID]
		t.body.PrizeID, t.body.DeliveryID, t.body.AssignedAt, t.body.Attempt = strconv.FormatInt(t.prizeID, 10), l.id, assigned.Time, l.attempt
		return t, err
	})
	if err != nil {
		return fmt.Errorf("delivery payloads: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(d.cfg.Concurrency)
	for _, t := range targets {
		g.Go(func() error { return d.deliverOne(gctx, t, tl) })
	}
	return g.Wait()
}

// deliverOne makes one attempt and records its outcome.
func (d *Deliverer) deliverOne(ctx context.Context, t target, tl *tally) error {
	prizeID, attempt := t.prizeID, t.body.Attempt
	if t.url == "" || t.secret == "" {
		_, err := d.db.Exec(ctx, attemptFailedSQL, prizeID, nil, "the pool has no webhook URL or secret", ParkNoWebhook)
		tl.add(t.body.PoolID, func(r *DeliverReport) { r.Parked++ })
		return err
	}
	// A host no receiver has (set before servers refused it) fails at the
	// dial instead, with its reason as the attempt's error.
	if err := webhook.CheckURL(t.url, d.cfg.AllowInsecureWebhooks); err != nil && !errors.Is(err, webhook.ErrUnroutableHost) {
		_, err := d.db.Exec(ctx, attemptFailedSQL, prizeID, nil,
			"the webhook URL is plain http to a host that is not loopback; use https", ParkWebhookInsecure)
		tl.add(t.body.PoolID, func(r *DeliverReport) { r.Parked++ })
		return err
	}
	attemptErr := d.post(ctx, t)
	if ctx.Err() != nil {
		return ctx.Err() // the lease runs out and a later run retries
	}
	if attemptErr == nil {
		if _, err := d.db.Exec(ctx, deliveredSQL, prizeID); err != nil {
			return fmt.Errorf("record delivery: %w", err)
		}
		tl.add(t.body.PoolID, func(r *DeliverReport) { r.Delivered++ })
		return nil
	}
	var next any // nil parks
	if attempt < d.cfg.MaxAttempts {
		next = time.Now().Add(d.backoff(attempt))
		tl.add(t.body.PoolID, func(r *DeliverReport) { r.Retried++ })
	} else {
		tl.add(t.body.PoolID, func(r *DeliverReport) { r.Parked++ })
		d.log.WarnContext(ctx, "delivery parked after its last attempt", "pool", t.body.PoolID,
			"prize", prizeID, "delivery_id", t.body.DeliveryID, "err", attemptErr.Error())
	}
	if _, err := d.db.Exec(ctx, attemptFailedSQL, prizeID, next, attemptErr.Error(), ParkWebhookFailed); err != nil {
		return fmt.Errorf("record failed attempt: %w", err)
	}
	return nil
}

// post sends one signed attempt. Its error says what happened (status,
// timeout, refused) without the code or the receiver's body.
func (d *Deliverer) post(ctx context.Context, t target) error {
	now := time.Now().UTC()
	t.body.SentAt = now
	body, err := json.Marshal(t.body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return errors.New("invalid webhook URL")
	}
	webhook.SetHeaders(req.Header, []byte(t.secret), t.body.DeliveryID, now, body)
	resp, err := d.http.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return errors.New("timeout")
		}
		if errors.Is(err, webhook.ErrUnroutableHost) {
			return errors.New("not sent: the webhook's host is a link-local, multicast or unspecified address")
		}
		return errors.New("request failed: no answer from the receiver")
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBodyRead))
	_ = resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		return fmt.Errorf("HTTP %d: redirects are not followed", resp.StatusCode)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// backoff is base * 2^(attempt-1), capped at MaxBackoff, with jitter in
// [half, full] so that retries of many deliveries do not come in waves.
func (d *Deliverer) backoff(attempt int) time.Duration {
	b := d.cfg.BaseBackoff << min(attempt-1, 30)
	if b <= 0 || b > d.cfg.MaxBackoff {
		b = d.cfg.MaxBackoff
	}
	return b/2 + rand.N(b/2+1)
}
