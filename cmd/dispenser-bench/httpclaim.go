package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// httpClaimer makes ClaimCode calls over the HTTP/JSON API (POST
// /v1/pools/{pool}/claims) on HTTP/1.1 keep-alive connections, one per
// caller, and turns error answers back into gRPC statuses, so the bench
// counts and retries them as it does over gRPC.
type httpClaimer struct {
	client *http.Client
	url    string
	key    string
}

func newHTTPClaimer(base, poolID, key string, callers int) *httpClaimer {
	tr := &http.Transport{MaxIdleConns: callers, MaxIdleConnsPerHost: callers, IdleConnTimeout: time.Minute}
	return &httpClaimer{client: &http.Client{Transport: tr}, key: key,
		url: base + "/v1/pools/" + url.PathEscape(poolID) + "/claims"}
}

type httpClaimAnswer struct {
	Claim struct {
		Code string `json:"code"`
	} `json:"claim"`
	Replayed bool `json:"replayed"`
	// Set on errors.
	Code    int32  `json:"code"`
	Message string `json:"message"`
	Reason  string `json:"reason"`
}

func (h *httpClaimer) claim(ctx context.Context, user, requestID string) (string, bool, error) {
	body, err := json.Marshal(map[string]string{"user_id": user, "request_id": requestID})
	if err != nil {
		return "", false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return "", false, err
	}
	req.Header.Set("Content-Type", "application/json")
	if h.key != "" {
		req.Header.Set("Authorization", "Bearer "+h.key)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return "", false, status.FromContextError(ctx.Err()).Err()
		}
		return "", false, status.Error(codes.Unavailable, err.Error())
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", false, status.Error(codes.Unavailable, err.Error())
	}
	var a httpClaimAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		return "", false, fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		st := status.New(codes.Code(a.Code), a.Message)
		if a.Reason != "" {
			if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: a.Reason}); err == nil {
				st = d
			}
		}
		return "", false, st.Err()
	}
	return a.Claim.Code, a.Replayed, nil
}
