package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dispenserhq/dispenser/internal/testdaemon"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// run runs one dispenser-bench command and returns its stdout, stderr and
// error.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	a := &app{stdout: &out, stderr: &errOut}
	cmd := a.root()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err := cmd.ExecuteContext(context.Background())
	a.client.Close()
	return out.String(), errOut.String(), err
}

// lastLineJSON reads the JSON line a command's output ends with into v.
func lastLineJSON(t *testing.T, out string, v any) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), v))
}

// A small claims run: every answer is checked against Postgres and the
// audit of the pool comes out clean.
func TestClaimsCommand(t *testing.T) {
	t.Parallel()
	d := testdaemon.Start(t, false)
	out, errOut, err := run(t, "claims", "--addr", d.Addr, "--claims", "600", "--concurrency", "8", "--users", "300",
		"--replay-ratio", "0.2", "--database-url", d.DB.URL, "--redis-namespace", d.Namespace)
	require.NoError(t, err, "%s\n%s", errOut, out)
	var res benchResult
	lastLineJSON(t, out, &res)
	require.Equal(t, 600, res.Calls)
	require.Positive(t, res.Claims)
	require.Zero(t, res.Duplicates+res.Lost+res.LimitViolations+res.ReplayMismatches)
	require.Contains(t, out, "audit: duplicates 0, lost 0, limit violations 0, replay mismatches 0")
}

// The same over the HTTP/JSON API, with a pool over two Redis shards.
func TestClaimsCommandHTTP(t *testing.T) {
	t.Parallel()
	d := testdaemon.Start(t, false)
	out, errOut, err := run(t, "claims", "--addr", d.Addr, "--http", d.HTTP, "--redis-shards", "2", "--claims", "600",
		"--concurrency", "8", "--users", "300", "--replay-ratio", "0.2", "--database-url", d.DB.URL, "--redis-namespace", d.Namespace)
	require.NoError(t, err, "%s\n%s", errOut, out)
	require.Contains(t, errOut, "claims over HTTP/JSON")
	var res benchResult
	lastLineJSON(t, out, &res)
	require.Positive(t, res.Claims)
	require.Zero(t, res.Duplicates+res.Lost+res.LimitViolations+res.ReplayMismatches)
	require.Contains(t, out, "USER_LIMIT_REACHED", "refusals over HTTP are counted by reason")
}

// The same with every request a reservation confirmed at once: each answer
// is the confirmed claim, nothing stays held.
func TestClaimsCommandReserve(t *testing.T) {
	t.Parallel()
	d := testdaemon.Start(t, false)
	out, errOut, err := run(t, "claims", "--reserve", "--addr", d.Addr, "--claims", "400", "--concurrency", "8",
		"--users", "200", "--replay-ratio", "0.2", "--database-url", d.DB.URL, "--redis-namespace", d.Namespace)
	require.NoError(t, err, "%s\n%s", errOut, out)
	var res benchResult
	lastLineJSON(t, out, &res)
	require.Positive(t, res.Claims)
	require.Zero(t, res.Duplicates+res.Lost+res.LimitViolations+res.ReplayMismatches)
	require.Contains(t, out, "+ held 0 +")
}

// An import run beside a raw CopyFrom into the same table: the copy is
// rolled back and vacuumed away before the import is timed, so the pool
// holds exactly the imported codes and the table no row of the copy.
func TestImportCommandBesideARawCopy(t *testing.T) {
	t.Parallel()
	d := testdaemon.Start(t, false)
	out, errOut, err := run(t, "import", "--addr", d.Addr, "--codes", "3000", "--database-url", d.DB.URL, "--dir", t.TempDir())
	require.NoError(t, err, "%s\n%s", errOut, out)
	var res importBenchResult
	lastLineJSON(t, out, &res)
	require.Equal(t, 3000, res.Codes)
	require.Positive(t, res.RawCopySeconds)
	require.Positive(t, res.ImportSeconds)
	require.Positive(t, res.ImportVsRaw)
	require.Contains(t, out, "import runs at")
	var inPool, inTable int
	require.NoError(t, d.DB.Pool.QueryRow(context.Background(),
		"SELECT count(*) FILTER (WHERE pool_id = $1), count(*) FROM codes", res.Pool).Scan(&inPool, &inTable))
	require.Equal(t, 3000, inPool)
	require.Equal(t, 3000, inTable)
}

// Help names the environment variables that hold secrets but never shows
// their values.
func TestHelpShowsNoSecrets(t *testing.T) {
	t.Setenv("DISPENSER_KEY", "dk_abcdefabcdef_S3CR3TKEYVALUE")
	t.Setenv("DISPENSER_DATABASE_URL", "postgres://app:HUNTER2@db.internal/dispenser")
	t.Setenv("DISPENSER_REDIS_URL", "redis://:R3D1SPASS@cache.internal:6379/0")
	for _, args := range [][]string{{"--help"}, {"claims", "--help"}, {"import", "--help"}} {
		out, _, err := run(t, args...)
		require.NoError(t, err, "%v", args)
		for _, v := range []string{"S3CR3TKEYVALUE", "HUNTER2", "R3D1SPASS"} {
			require.NotContains(t, out, v, "%v", args)
		}
		require.Contains(t, out, "DISPENSER_", "%v", args)
	}
}
