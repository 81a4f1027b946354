package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dispenserhq/dispenser/internal/testdaemon"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startServer runs a real dispenserd without authentication and returns
// its address.
func startServer(t *testing.T) string {
	t.Helper()
	return testdaemon.Start(t, false).Addr
}

// startServerEnv is startServer that also returns the database URL and the
// Redis namespace, for commands that read them directly (audit).
func startServerEnv(t *testing.T) (addr, dbURL, namespace string) {
	t.Helper()
	d := testdaemon.Start(t, false)
	return d.Addr, d.DB.URL, d.Namespace
}

// ctl runs one dispenserctl command and returns its stdout, stderr and error.
func ctl(t *testing.T, addr string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	a := newApp(&out, &errOut)
	a.isTerminal = func() bool { return false }
	cmd := a.root()
	cmd.SetArgs(append(args, "--addr", addr))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err := cmd.ExecuteContext(context.Background())
	a.close()
	if err != nil {
		a.printError(err)
	}
	return out.String(), errOut.String(), err
}

func TestPoolsCommands(t *testing.T) {
	t.Parallel()
	addr := startServer(t)

	out, _, err := ctl(t, addr, "pools", "create", "summer", "--name", "Summer sale", "--limit", "3")
	require.NoError(t, err)
	require.Contains(t, out, "per-user limit  3")

	_, errOut, err := ctl(t, addr, "pools", "create", "summer")
	require.Error(t, err)
	require.Contains(t, errOut, "(AlreadyExists, POOL_ALREADY_EXISTS)")

	_, errOut, err = ctl(t, addr, "pools", "create", "Summer!")
	require.Error(t, err)
	require.Contains(t, errOut, "(InvalidArgument, INVALID_ARGUMENT)")
	require.Contains(t, errOut, "pool.id:")

	out, _, err = ctl(t, addr, "pools", "update", "summer", "--pause", "--ends-at", "2030-01-01T00:00:00Z")
	require.NoError(t, err)
	require.Contains(t, out, "paused")

	out, _, err = ctl(t, addr, "pools", "get", "summer", "--json")
	require.NoError(t, err)
	var p struct {
		ID           string `json:"id"`
		Paused       bool   `json:"paused"`
		PerUserLimit int    `json:"perUserLimit"`
		ClaimEndsAt  string `json:"claimEndsAt"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &p))
	require.Equal(t, "summer", p.ID)
	require.True(t, p.Paused)
	require.Equal(t, 3, p.PerUserLimit)
	require.Equal(t, "2030-01-01T00:00:00Z", p.ClaimEndsAt)

	out, _, err = ctl(t, addr, "pools", "update", "summer", "--resume", "--ends-at", "none")
	require.NoError(t, err)
	require.Contains(t, out, "active")
	require.Contains(t, out, "claim window    - .. -")

	_, _, err = ctl(t, addr, "pools", "update", "summer")
	require.ErrorContains(t, err, "nothing to change")

	_, _, err = ctl(t, addr, "pools", "create", "winter")
	require.NoError(t, err)
	out, _, err = ctl(t, addr, "pools", "list")
	require.NoError(t, err)
	require.Regexp(t, `(?s)ID\s+STATE.*summer\s+active\s+3.*winter\s+active\s+1`, out)

	_, errOut, err = ctl(t, addr, "pools", "stats", "autumn")
	require.Error(t, err)
	require.Contains(t, errOut, "(NotFound, POOL_NOT_FOUND)")
}

func TestImportCommand(t *testing.T) {
	t.Parallel()
	addr := startServer(t)
	dir := t.TempDir()
	_, _, err := ctl(t, addr, "pools", "create", "demo")
	require.NoError(t, err)

	var b strings.Builder
	for i := range 20_000 {
		fmt.Fprintf(&b, "SECRETCODE-%06d\n", i)
	}
	b.WriteString("bad\nSECRETCODE-000001\n")
	plain := filepath.Join(dir, "codes.txt")
	require.NoError(t, os.WriteFile(plain, []byte(b.String()), 0o600))

	out, errOut, err := ctl(t, addr, "import", "--pool", "demo", plain)
	require.NoError(t, err, errOut)
	require.Regexp(t, `inserted\s+20,000`, out)
	require.Regexp(t, `duplicates in file\s+1`, out)
	require.Regexp(t, `invalid\s+1`, out)
	require.Contains(t, out, "line 20001: code is shorter than 4 characters")
	require.Contains(t, errOut, "upload complete")
	require.Regexp(t, `import: [\d,]+ rows, .* of .* \(100%\)`, errOut)

	// The same file again inserts nothing; --json gives the summary.
	out, _, err = ctl(t, addr, "import", "--pool", "demo", "--json", plain)
	require.NoError(t, err)
	var sum struct {
		Inserted         string `json:"inserted"`
		DuplicatesInPool string `json:"duplicatesInPool"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &sum))
	require.Equal(t, "0", sum.Inserted)
	require.Equal(t, "20000", sum.DuplicatesInPool)

	// CSV is picked by extension; --strict refuses a file with a bad line.
	csvFile := filepath.Join(dir, "supplier.csv")
	require.NoError(t, os.WriteFile(csvFile, []byte("code,expires_at\nCSVCODE-1,2099-01-01T00:00:00Z\nCSVCODE-2,not-a-time\n"), 0o600))
	_, errOut, err = ctl(t, addr, "import", "--pool", "demo", "--strict", csvFile)
	require.Error(t, err)
	require.Contains(t, errOut, "(InvalidArgument, IMPORT_REJECTED)")
	require.Contains(t, errOut, "data.line[3]: expires_at is not an RFC 3339 time")

	out, _, err = ctl(t, addr, "import", "--pool", "demo", csvFile)
	require.NoError(t, err)
	require.Regexp(t, `inserted\s+1\b`, out)

	out, _, err = ctl(t, addr, "pools", "stats", "demo")
	require.NoError(t, err)
	require.Regexp(t, `imported\s+20,001`, out)
	require.Regexp(t, `available\s+20,001`, out)
	require.Contains(t, out, "balanced")
	require.NotContains(t, out, "NOT BALANCED")

	_, _, err = ctl(t, addr, "import", "--pool", "demo", "--format", "xml", plain)
	require.ErrorContains(t, err, "--format must be")
	_, _, err = ctl(t, addr, "import", plain)
	require.ErrorContains(t, err, "--pool is required")
}
