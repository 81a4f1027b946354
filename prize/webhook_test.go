package prize_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/prize"
)

// A receiver that redirects: the redirect is a failed attempt, and nothing
// reaches the place it points to, on any attempt.
func TestWebhookRedirectsNotFollowed(t *testing.T) {
	ctx, e := start(t)
	target := newReceiver(t, ok)
	redirecting := newReceiver(t, func(w http.ResponseWriter, _ int) {
		w.Header().Set("Location", target.srv.URL+"/stolen")
		w.WriteHeader(http.StatusTemporaryRedirect)
	})
	e.setupPool(t, "p1", redirecting.srv.URL, 5, 2)
	reports, err := e.deliverer(2*time.Second).Run(ctx, "")
	require.NoError(t, err)
	require.Equal(t, prize.DeliverReport{Assigned: 2, Retried: 4, Parked: 2}, reports["p1"])
	require.Zero(t, target.calls, "the redirect was followed")
	require.Equal(t, 6, redirecting.calls)
	parked, err := e.store.List(ctx, "p1", prize.Failed, 0, 10)
	require.NoError(t, err)
	require.Len(t, parked, 2)
	for _, p := range parked {
		require.Equal(t, prize.ParkWebhookFailed, p.ParkReason)
		require.Equal(t, "HTTP 307: redirects are not followed", p.LastError)
	}
	e.audit(t, "p1")
}

// A stored plain-http URL to a host that is not loopback is never sent to:
// its prizes park with WEBHOOK_INSECURE, unless the operator allows it.
func TestInsecureWebhookURLNotSent(t *testing.T) {
	ctx, e := start(t)
	r := e.storedURL(t, "http://receiver.example:8080/hook")
	reports, err := e.deliverer(2*time.Second).Run(ctx, "")
	require.NoError(t, err)
	require.Equal(t, prize.DeliverReport{Assigned: 2, Parked: 2}, reports["p1"])
	parked, err := e.store.List(ctx, "p1", prize.Failed, 0, 10)
	require.NoError(t, err)
	require.Len(t, parked, 2)
	for _, p := range parked {
		require.Equal(t, prize.ParkWebhookInsecure, p.ParkReason)
	}
	require.Zero(t, r.calls)
	e.audit(t, "p1")
}

// A webhook host no receiver has (link-local, where cloud metadata
// services answer) is never connected to, even when stored by an older
// version or reached through a name: each attempt fails at the dial, at
// once, and the prizes park after their attempts with the reason.
func TestWebhookNeverDialsLinkLocal(t *testing.T) {
	ctx, e := start(t)
	r := e.storedURL(t, "https://169.254.169.254/latest/meta-data")
	began := time.Now()
	// Without the guard, each attempt would wait out the client's timeout
	// on an address that does not answer here.
	reports, err := e.deliverer(5*time.Second).Run(ctx, "")
	require.NoError(t, err)
	require.Less(t, time.Since(began), 5*time.Second, "an attempt waited on the address")
	require.Equal(t, prize.DeliverReport{Assigned: 2, Retried: 4, Parked: 2}, reports["p1"])
	parked, err := e.store.List(ctx, "p1", prize.Failed, 0, 10)
	require.NoError(t, err)
	require.Len(t, parked, 2)
	for _, p := range parked {
		require.Equal(t, prize.ParkWebhookFailed, p.ParkReason)
		require.Contains(t, p.LastError, "link-local", p.LastError)
	}
	require.Zero(t, r.calls)
	e.audit(t, "p1")
}

// storedURL sets up pool p1 with two ready prizes and a receiver, then
// stores url as its webhook URL directly, as an older version could have
// (the API refuses such URLs now). The receiver counts any call that still
// reaches it.
func (e *env) storedURL(t *testing.T, url string) *receiver {
	t.Helper()
	r := newReceiver(t, ok)
	e.setupPool(t, "p1", r.srv.URL, 5, 2)
	_, err := e.db.Pool.Exec(context.Background(), `UPDATE pools SET webhook_url = $1 WHERE id = 'p1'`, url)
	require.NoError(t, err)
	return r
}
