package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestClaimJobsAndAuditCommands(t *testing.T) {
	t.Parallel()
	addr, dbURL, ns := startServerEnv(t)
	_, _, err := ctl(t, addr, "pools", "create", "p1")
	require.NoError(t, err)
	_, errOut, err := ctl(t, addr, "claim", "--pool", "p1", "--user", "u1", "--request", "r1")
	require.Error(t, err)
	require.Contains(t, errOut, "(ResourceExhausted, POOL_EXHAUSTED)")

	dir := t.TempDir()
	file := dir + "/codes.txt"
	var codes strings.Builder
	for i := range 100 {
		fmt.Fprintf(&codes, "CODE-%06d\n", i)
	}
	require.NoError(t, os.WriteFile(file, []byte(codes.String()), 0o600))
	_, _, err = ctl(t, addr, "import", "--pool", "p1", file)
	require.NoError(t, err)
	out, _, err := ctl(t, addr, "jobs", "run", "refill", "--pool", "p1")
	require.NoError(t, err)
	require.Regexp(t, `p1\s+100\s+0\s+0\s+-`, out)

	first, _, err := ctl(t, addr, "claim", "--pool", "p1", "--user", "u1", "--request", "r1")
	require.NoError(t, err)
	again, _, err := ctl(t, addr, "claim", "--pool", "p1", "--user", "u1", "--request", "r1")
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(first)+" (replayed)", strings.TrimSpace(again))
	_, errOut, err = ctl(t, addr, "claim", "--pool", "p1", "--user", "u1", "--request", "r2")
	require.Error(t, err)
	require.Contains(t, errOut, "USER_LIMIT_REACHED")

	out, _, err = ctl(t, addr, "jobs", "run", "reconcile")
	require.NoError(t, err)
	require.Regexp(t, `p1\s+0\s+0\s+0\s+true`, out)
	_, _, err = ctl(t, addr, "jobs", "run", "vacuum")
	require.ErrorContains(t, err, "unknown job")

	out, _, err = ctl(t, addr, "audit", "--pool", "p1", "--database-url", dbURL, "--redis-namespace", ns)
	require.NoError(t, err)
	require.Contains(t, out, "imported 100 = available 0 + staged 99 + held 0 + claimed 1 + void 0 (off by 0)")
	require.Contains(t, out, "duplicates 0, lost 0, limit violations 0")
}

func TestVoidCommand(t *testing.T) {
	t.Parallel()
	addr := startServer(t)
	_, _, err := ctl(t, addr, "pools", "create", "p1")
	require.NoError(t, err)
	dir := t.TempDir()
	file := dir + "/codes.txt"
	require.NoError(t, os.WriteFile(file, []byte("VOIDME-0001\nVOIDME-0002\nKEEP-0003\n"), 0o600))
	_, _, err = ctl(t, addr, "import", "--pool", "p1", file)
	require.NoError(t, err)
	recall := dir + "/recall.txt"
	require.NoError(t, os.WriteFile(recall, []byte("VOIDME-0001\nVOIDME-0002\nUNKNOWN-9\n"), 0o600))
	out, _, err := ctl(t, addr, "void", "--pool", "p1", "--reason", "recall", recall)
	require.NoError(t, err)
	require.Equal(t, "voided 2, already void 0, claimed or held (left as is) 0, not found 1\n", out)
	require.NotContains(t, out, "VOIDME")
	out, _, err = ctl(t, addr, "void", "--pool", "p1", "--reason", "whole import", "--import", "1")
	require.NoError(t, err)
	require.Equal(t, "voided 1, already void 2, claimed or held (left as is) 0, not found 0\n", out)
	_, _, err = ctl(t, addr, "void", "--pool", "p1", "--reason", "x")
	require.ErrorContains(t, err, "either FILE or --import")
}

func TestReserveConfirmCancelCommands(t *testing.T) {
	t.Parallel()
	addr := startServer(t)
	_, _, err := ctl(t, addr, "pools", "create", "p1", "--limit", "3", "--holds-per-user", "2", "--hold-default", "5m")
	require.NoError(t, err)
	out, _, err := ctl(t, addr, "pools", "get", "p1")
	require.NoError(t, err)
	require.Contains(t, out, "5m0s by default, at most 1h0m0s, 2 open per user")
	file := t.TempDir() + "/codes.txt"
	require.NoError(t, os.WriteFile(file, []byte("HOLDME-0001\nHOLDME-0002\n"), 0o600))
	_, _, err = ctl(t, addr, "import", "--pool", "p1", file)
	require.NoError(t, err)

	out, _, err = ctl(t, addr, "reserve", "--pool", "p1", "--user", "u1", "--request", "h1", "--hold", "90s")
	require.NoError(t, err)
	require.Regexp(t, `^held until \S+\n$`, out)
	require.NotContains(t, out, "HOLDME")
	out, _, err = ctl(t, addr, "reserve", "--pool", "p1", "--user", "u1", "--request", "h1")
	require.NoError(t, err)
	require.Contains(t, out, "(replayed)")
	out, _, err = ctl(t, addr, "pools", "stats", "p1")
	require.NoError(t, err)
	require.Regexp(t, `held\s+1`, out)
	require.Contains(t, out, "balanced: imported = available + staged + held + claimed + void")

	code, _, err := ctl(t, addr, "confirm", "--pool", "p1", "--request", "h1")
	require.NoError(t, err)
	require.Regexp(t, `^HOLDME-000[12]\n$`, code)
	again, _, err := ctl(t, addr, "confirm", "--pool", "p1", "--request", "h1", "--user", "u1")
	require.NoError(t, err)
	require.Equal(t, strings.TrimSpace(code)+" (replayed)", strings.TrimSpace(again))

	_, _, err = ctl(t, addr, "reserve", "--pool", "p1", "--user", "u1", "--request", "h2")
	require.NoError(t, err)
	out, _, err = ctl(t, addr, "cancel", "--pool", "p1", "--request", "h2")
	require.NoError(t, err)
	require.Equal(t, "cancelled\n", out)
	_, errOut, err := ctl(t, addr, "confirm", "--pool", "p1", "--request", "h2")
	require.Error(t, err)
	require.Contains(t, errOut, "RESERVATION_CANCELLED")
	_, errOut, err = ctl(t, addr, "reserve", "--pool", "p1", "--user", "u1", "--request", "h3", "--hold", "3h")
	require.Error(t, err)
	require.Contains(t, errOut, "hold_for")

	out, _, err = ctl(t, addr, "jobs", "run", "expire-holds")
	require.NoError(t, err)
	require.Equal(t, "POOL  HOLDS_EXPIRED\n", out)
}

func TestGenerateCommand(t *testing.T) {
	t.Parallel()
	addr := startServer(t)
	_, _, err := ctl(t, addr, "pools", "create", "p1")
	require.NoError(t, err)
	out, errOut, err := ctl(t, addr, "generate", "--pool", "p1", "--count", "3000", "--length", "12", "--group", "4", "--prefix", "SALE-")
	require.NoError(t, err, errOut)
	require.Regexp(t, `^generated 3,000 codes into pool p1 as import \d+ \(60\.0 bits of entropy each, \d+ collisions drawn again\)\n$`, out)
	require.NotContains(t, out+errOut, "SALE-")
	_, errOut, err = ctl(t, addr, "generate", "--pool", "p1", "--count", "1000", "--pattern", "S-####", "--charset", "digits")
	require.Error(t, err)
	require.Contains(t, errOut, "has 13.3 bits of entropy")
	_, _, err = ctl(t, addr, "generate", "--pool", "p1", "--count", "10", "--pattern", "S-####", "--length", "4")
	require.ErrorContains(t, err, "not both")
	_, _, err = ctl(t, addr, "generate", "--pool", "p1", "--count", "10", "--length", "12", "--charset", "base64")
	require.ErrorContains(t, err, "--charset")
	out, _, err = ctl(t, addr, "generate", "--pool", "p1", "--count", "10", "--length", "10", "--charset", "custom:ABCDEFGHJK")
	require.NoError(t, err)
	require.Contains(t, out, "generated 10 codes")
	out, _, err = ctl(t, addr, "pools", "stats", "p1")
	require.NoError(t, err)
	require.Regexp(t, `available\s+3,010`, out)
}
