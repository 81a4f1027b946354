package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// Help text names the environment variables that hold secrets, and says
// they are set, but never shows their values.
func TestHelpShowsNoSecrets(t *testing.T) {
	secrets := map[string]string{
		"DISPENSER_KEY":          "dk_abcdefabcdef_S3CR3TKEYVALUE",
		"DISPENSER_DATABASE_URL": "postgres://app:HUNTER2@db.internal/dispenser",
		"DISPENSER_REDIS_URL":    "redis://:R3D1SPASS@cache.internal:6379/0",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	for _, args := range [][]string{{"--help"}, {"audit", "--help"},
		{"claim", "--help"}, {"pools", "list", "--help"}} {
		var out bytes.Buffer
		cmd := newApp(&out, &out).root()
		cmd.SetArgs(args)
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		require.NoError(t, cmd.ExecuteContext(context.Background()), "%v", args)
		for _, v := range []string{"S3CR3TKEYVALUE", "HUNTER2", "R3D1SPASS"} {
			require.NotContains(t, out.String(), v, "dispenserctl %v", args)
		}
		if args[0] == "--help" {
			require.Contains(t, out.String(), "$DISPENSER_KEY (set)")
		}
	}
}
