// Package webhook signs prize deliveries and lets receivers verify them.
//
// Every delivery is an HTTP POST with a JSON body and three headers:
//
//	Dispenser-Delivery-Id: 6f1c2b0e-...     the same on every attempt; deduplicate on it
//	Dispenser-Timestamp:   1795308000        unix seconds when this attempt was signed
//	Dispenser-Signature:   v1=<hex>          HMAC-SHA256(secret, timestamp + "." + body)
//
// A receiver recomputes the signature over the raw body with the pool's
// secret, compares in constant time, and refuses timestamps too far from its
// clock (replays of an old, captured request). Verify does all three.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names.
const (
	HeaderDeliveryID = "Dispenser-Delivery-Id"
	HeaderTimestamp  = "Dispenser-Timestamp"
	HeaderSignature  = "Dispenser-Signature"
)

// Errors Verify returns.
var (
	ErrMissingHeaders = errors.New("webhook: missing timestamp or signature header")
	ErrBadSignature   = errors.New("webhook: signature does not match")
	ErrStale          = errors.New("webhook: timestamp outside the tolerance")
)

// Sign returns the signature header value for body signed at ts.
func Sign(secret []byte, ts time.Time, body []byte) string {
	return "v1=" + hex.EncodeToString(mac(secret, strconv.FormatInt(ts.Unix(), 10), body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return m.Sum(nil)
}

// SetHeaders signs body and sets the delivery's headers on h.
func SetHeaders(h http.Header, secret []byte, deliveryID string, ts time.Time, body []byte) {
	h.Set("Content-Type", "application/json")
	h.Set(HeaderDeliveryID, deliveryID)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, Sign(secret, ts, body))
}

// Verify checks a delivery's signature over its raw body and that its
// timestamp is within tolerance of now. Use it before trusting the body.
func Verify(secret []byte, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	tsText, sig := h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if tsText == "" || sig == "" {
		return ErrMissingHeaders
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return ErrBadSignature
	}
	got, err := hex.DecodeString(strings.TrimPrefix(sig, "v1="))
	if err != nil || !strings.HasPrefix(sig, "v1=") || !hmac.Equal(got, mac(secret, tsText, body)) {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	return nil
}
