package openapi_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/proto/openapi"
)

// The committed document is what the protos and the HTTP rules generate
// now: the test runs buf with the project's template (buf.gen.yaml), as make
// proto does, into a directory of its own and compares.
func TestDocumentIsCurrent(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	out := t.TempDir()
	cmd := exec.Command("go", "tool", "-modfile=tools/go.mod", "buf", "generate", "-o", out)
	cmd.Dir = root
	msg, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", msg)
	fresh, err := os.ReadFile(filepath.Join(out, "proto", "openapi", "dispenser.swagger.json"))
	require.NoError(t, err)
	require.Equal(t, string(fresh), string(openapi.JSON), "proto/openapi/dispenser.swagger.json is stale: run make proto")
}
