package webhook_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/webhook"
)

func TestVerify(t *testing.T) {
	t.Parallel()
	secret := []byte("0123456789abcdef-secret")
	now := time.Unix(1_795_308_000, 0)
	body := []byte(`{"delivery_id":"d1","code":"X"}`)
	h := http.Header{}
	webhook.SetHeaders(h, secret, "d1", now, body)
	require.Equal(t, "d1", h.Get(webhook.HeaderDeliveryID))
	require.NoError(t, webhook.Verify(secret, h, body, now.Add(time.Minute), 5*time.Minute))

	// Altered body, altered timestamp, wrong secret: refused.
	require.ErrorIs(t, webhook.Verify(secret, h, []byte(`{"delivery_id":"d1","code":"Y"}`), now, time.Minute), webhook.ErrBadSignature)
	moved := h.Clone()
	moved.Set(webhook.HeaderTimestamp, "1795308001")
	require.ErrorIs(t, webhook.Verify(secret, moved, body, now, time.Minute), webhook.ErrBadSignature)
	require.ErrorIs(t, webhook.Verify([]byte("another-secret-value"), h, body, now, time.Minute), webhook.ErrBadSignature)
	// A captured request replayed later: refused as stale.
	require.ErrorIs(t, webhook.Verify(secret, h, body, now.Add(10*time.Minute), 5*time.Minute), webhook.ErrStale)
	// Missing or malformed headers.
	require.ErrorIs(t, webhook.Verify(secret, http.Header{}, body, now, time.Minute), webhook.ErrMissingHeaders)
	bad := h.Clone()
	bad.Set(webhook.HeaderSignature, "v2=00")
	require.ErrorIs(t, webhook.Verify(secret, bad, body, now, time.Minute), webhook.ErrBadSignature)
}
