package claim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/pool"
)

// A code cannot reach a log or an error text by accident, whichever way it
// is printed.
func TestSecretIsRedacted(t *testing.T) {
	t.Parallel()
	s := Secret("GIFT-1234-SECRET")
	c := Claim{PoolID: "p1", Code: s}
	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&logs, nil), slog.NewTextHandler(&logs, nil)} {
		slog.New(h).Info("claimed", "code", s, "claim", c)
	}
	js, err := json.Marshal(c)
	require.NoError(t, err)
	for _, out := range []string{
		fmt.Sprint(s), fmt.Sprintf("%s %v %q %x %+v %#v", s, s, s, s, c, c), fmt.Errorf("claim %v failed", c).Error(),
		string(js), logs.String(),
	} {
		require.NotContains(t, out, "SECRET", out)
	}
	require.Equal(t, "GIFT-1234-SECRET", s.Reveal())
}

// Redis holds code ids, never codes: after refills, claims, replays, a
// user at the limit and a hold, no key of the pools' namespace holds any
// part of a code ("<pool>-CODE-<n>", from fill), in its name or its value.
func TestCodesNeverReachRedis(t *testing.T) {
	ctx, e := start(t)
	for _, p := range []pool.Pool{e.fillStaged("one", 40, pool.Pool{}), e.fillStaged("three", 40, pool.Pool{PerUserLimit: 3})} {
		for i := range 6 {
			req := Request{PoolID: p.ID, UserID: fmt.Sprint("u", i%2), RequestID: fmt.Sprint("r", i)}
			_, err := e.svc.Claim(ctx, req)
			if err != nil {
				require.ErrorIs(t, err, ErrUserLimit, req)
			}
			_, err = e.svc.Claim(ctx, req) // a retry
			if err != nil {
				require.ErrorIs(t, err, ErrUserLimit, req)
			}
		}
		_, err := e.svc.Reserve(ctx, ReserveRequest{PoolID: p.ID, UserID: "holder", RequestID: "hold-1", HoldFor: time.Minute})
		require.NoError(t, err)
	}

	var seen int
	iter := e.rdb.Scan(ctx, 0, e.ns+":*", 1000).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		seen++
		require.NotContains(t, key, "-CODE-", key)
		var values []string
		switch typ := e.rdb.Type(ctx, key).Val(); typ {
		case "list":
			values = e.rdb.LRange(ctx, key, 0, -1).Val()
		case "zset":
			values = e.rdb.ZRange(ctx, key, 0, -1).Val()
		case "set":
			values = e.rdb.SMembers(ctx, key).Val()
		case "string":
			values = []string{e.rdb.Get(ctx, key).Val()}
		case "hash":
			for k, v := range e.rdb.HGetAll(ctx, key).Val() {
				values = append(values, k, v)
			}
		case "none":
			// Gone since the scan (a ledger emptied by the last commit).
		default:
			t.Fatalf("key %s of type %s", key, typ)
		}
		for _, v := range values {
			require.NotContains(t, v, "-CODE-", "%s holds a code", key)
		}
	}
	require.NoError(t, iter.Err())
	require.Greater(t, seen, 6, "the lists, ledgers, batch sets and replay records were read")
}
