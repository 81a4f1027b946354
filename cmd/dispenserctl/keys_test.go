package main

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/internal/testdaemon"
)

func TestKeysCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := testdaemon.Start(t, true)
	addr, dbURL := d.Addr, d.DB.URL
	db, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	_, admin, err := auth.NewStore(db).Create(ctx, auth.Key{Role: auth.Admin, Name: "bootstrap"})
	require.NoError(t, err)

	_, errOut, err := ctl(t, addr, "pools", "list")
	require.Error(t, err)
	require.Contains(t, errOut, "(Unauthenticated, UNAUTHENTICATED)")

	out, _, err := ctl(t, addr, "keys", "create", "--role", "claimer", "--name", "lottery", "--pools", "p1", "--key", admin)
	require.NoError(t, err)
	claimer := strings.TrimSpace(out)
	require.Regexp(t, regexp.MustCompile(`^dk_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$`), claimer)

	_, errOut, err = ctl(t, addr, "pools", "list", "--key", claimer)
	require.Error(t, err)
	require.Contains(t, errOut, "(PermissionDenied, PERMISSION_DENIED)")

	out, _, err = ctl(t, addr, "keys", "list", "--key", admin)
	require.NoError(t, err)
	require.Regexp(t, `claimer\s+lottery\s+p1`, out)
	require.NotContains(t, out, claimer[16:], "secrets are never listed")

	id := claimer[3:15]
	out, _, err = ctl(t, addr, "keys", "revoke", id, "--key", admin)
	require.NoError(t, err)
	require.Equal(t, "revoked "+id+"\n", out)
}
