package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// Help text says that secret environment variables are set, never their
// values (a connection string's password, say).
func TestHelpShowsNoSecrets(t *testing.T) {
	t.Setenv("DISPENSER_DATABASE_URL", "postgres://app:HUNTER2@db.internal/dispenser")
	t.Setenv("DISPENSER_REDIS_URL", "redis://:R3D1SPASS@cache.internal:6379/0")
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"migrate", "--help"}, {"keys", "create", "--help"}} {
		var out bytes.Buffer
		cmd := newRootCmd()
		cmd.SetArgs(args)
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		require.NoError(t, cmd.ExecuteContext(context.Background()), "%v", args)
		require.NotContains(t, out.String(), "HUNTER2", "dispenserd %v", args)
		require.NotContains(t, out.String(), "R3D1SPASS", "dispenserd %v", args)
		require.Contains(t, out.String(), "$DISPENSER_DATABASE_URL (set)", "dispenserd %v", args)
	}
}

// Collector settings out of range are refused before anything starts.
func TestCollectorFlagsAreChecked(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--gc-percent", "0"}, "--gc-percent must be positive"},
		{[]string{"--gc-min-heap-mib", "1048577"}, "--gc-min-heap-mib must be at most"},
		{[]string{"--gc-min-heap-mib", "-1"}, "invalid argument"},
	} {
		var out bytes.Buffer
		cmd := newRootCmd()
		cmd.SetArgs(c.args)
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		err := cmd.ExecuteContext(context.Background())
		require.ErrorContains(t, err, c.want, "%v", c.args)
	}
}
