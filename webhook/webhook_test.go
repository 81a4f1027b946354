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

// The dial guard refuses the addresses no receiver has, after resolution,
// and lets the others through (private and loopback ones included: internal
// receivers are legitimate).
func TestDialControl(t *testing.T) {
	for _, addr := range []string{"169.254.169.254:80", "[fe80::1%eth0]:443", "[::ffff:169.254.0.1]:443",
		"0.0.0.0:443", "[::]:443", "224.0.0.251:5353", "[ff02::1]:443"} {
		require.ErrorIs(t, webhook.DialControl("tcp", addr, nil), webhook.ErrUnroutableHost, addr)
	}
	for _, addr := range []string{"127.0.0.1:8080", "[::1]:443", "10.0.0.7:443", "192.168.1.2:443", "93.184.216.34:443"} {
		require.NoError(t, webhook.DialControl("tcp", addr, nil), addr)
	}
	require.Error(t, webhook.DialControl("tcp", "not an address", nil))
}
