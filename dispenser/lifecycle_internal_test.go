package dispenser

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// Parts start in order and stop in reverse; when one fails to start, the
// ones already started are stopped, in reverse, and nothing else starts.
func TestStartAllOrder(t *testing.T) {
	t.Parallel()
	var log []string
	mk := func(name string, fail bool) part {
		return part{name,
			func(context.Context) error {
				if fail {
					return errors.New("boom")
				}
				log = append(log, "start "+name)
				return nil
			},
			func(context.Context) { log = append(log, "stop "+name) }}
	}
	ctx := context.Background()
	stop, err := startAll(ctx, []part{mk("a", false), mk("b", false), mk("c", false)})
	require.NoError(t, err)
	stop(ctx)
	require.Equal(t, []string{"start a", "start b", "start c", "stop c", "stop b", "stop a"}, log)

	log = nil
	_, err = startAll(ctx, []part{mk("a", false), mk("b", true), mk("c", false)})
	require.ErrorContains(t, err, "start b: boom")
	require.Equal(t, []string{"start a", "stop a"}, log)
}
