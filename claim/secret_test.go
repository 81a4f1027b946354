package claim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
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
