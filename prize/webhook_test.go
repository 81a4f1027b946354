package prize_test

import (
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
	r := newReceiver(t, ok)
	e.setupPool(t, "p1", r.srv.URL, 5, 2)
	// As an older version could store it.
	_, err := e.db.Pool.Exec(ctx, `UPDATE pools SET webhook_url = 'http://receiver.example:8080/hook' WHERE id = 'p1'`)
	require.NoError(t, err)
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
