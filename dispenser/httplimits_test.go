package dispenser_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/dispenser"
)

// rawRequest sends head (a request's line and headers, without the blank
// line) and then body on a connection of its own, and returns the answer's
// status and its JSON body.
func (h *httpAPI) rawRequest(head, body string, pause time.Duration) (int, map[string]any) {
	h.t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.base, "http://"))
	require.NoError(h.t, err)
	defer conn.Close()
	require.NoError(h.t, conn.SetDeadline(time.Now().Add(20*time.Second)))
	_, err = io.WriteString(conn, head+"\r\n\r\n")
	require.NoError(h.t, err)
	for i := range len(body) {
		if i > 0 && pause > 0 {
			time.Sleep(pause)
		}
		if _, err := io.WriteString(conn, body[i:i+1]); err != nil {
			break // the server answered and closed
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(h.t, err)
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	require.NoError(h.t, json.Unmarshal(raw, &out), "%s", raw)
	return resp.StatusCode, out
}

// A JSON body that does not arrive within --http-body-timeout of its
// headers is refused 408 naming body, whichever way the route reads it (the
// body/path check of a claim, the gateway's decoder of a key); one that
// arrives in time is served, and so is a long streaming answer after a body
// that came in time (its connection is watched without the deadline).
func TestHTTPBodyMustArriveInTime(t *testing.T) {
	h := startHTTP(t, func(c *dispenser.Config) { c.HTTPBodyTimeout = 300 * time.Millisecond })
	h.pool("p1", 3, nil)
	claim := `{"user_id": "u1", "request_id": "r1"}`
	key := `{"key": {"role": "KEY_ROLE_CLAIMER"}}`
	head := func(path, key string, n int) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d",
			path, key, n)
	}
	for _, c := range []struct{ path, key, body string }{
		{"/v1/pools/p1/claims", h.claimer, claim},
		{"/v1/keys", h.admin, key},
	} {
		// A byte every 100 ms: the body needs more than three seconds.
		st, body := h.rawRequest(head(c.path, c.key, len(c.body)), c.body, 100*time.Millisecond)
		h.refusal(st, body, http.StatusRequestTimeout, "InvalidArgument", dispenser.ReasonInvalidArgument)
		require.Equal(t, "body", fieldOf(body), "%v", body)
		// The same body at once.
		st, body = h.rawRequest(head(c.path, c.key, len(c.body)), c.body, 0)
		require.Equal(t, http.StatusOK, st, "%s: %v", c.path, body)
	}

	// A generation that streams for longer than the body's time.
	start := time.Now()
	req, err := http.NewRequest("POST", h.base+"/v1/pools/p1/codes:generate",
		strings.NewReader(`{"count": 200000, "pattern": "SALE-####-####-####"}`))
	require.NoError(t, err)
	resp, raw := h.exchange(req, h.admin)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", raw)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	var last struct {
		Result struct {
			Summary struct {
				Inserted string `json:"inserted"`
			} `json:"summary"`
		} `json:"result"`
	}
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &last), "%s", raw)
	require.Equal(t, "200000", last.Result.Summary.Inserted, "%s", raw)
	elapsed := time.Since(start)
	require.Greater(t, elapsed, time.Second, "the answer outlasted the body's time several times over")
	t.Logf("generation answered in %s", elapsed)
}

// The HTTP/JSON listener serves at most --max-connections connections at
// once, as the gRPC one does: past them a connection waits until one
// closes.
func TestHTTPConnectionsBounded(t *testing.T) {
	h := startHTTP(t, func(c *dispenser.Config) { c.MaxConnections = 2 })
	addr := strings.TrimPrefix(h.base, "http://")
	var held []net.Conn
	for range 2 {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		held = append(held, conn)
	}
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	// Both are accepted and idle; a third waits in the backlog.
	done := make(chan int, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", h.base+"/v1/health", nil)
		req.Header.Set("Authorization", "Bearer "+h.admin)
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			done <- 0
			return
		}
		_ = resp.Body.Close()
		done <- resp.StatusCode
	}()
	select {
	case st := <-done:
		t.Fatalf("a third connection was served (%d) while two were held", st)
	case <-time.After(500 * time.Millisecond):
	}
	require.NoError(t, held[0].Close())
	select {
	case st := <-done:
		require.Equal(t, http.StatusOK, st)
	case <-time.After(15 * time.Second):
		t.Fatal("the waiting connection was not served once one closed")
	}
}
