// Package archtest checks that the packages import only what
// docs/ARCHITECTURE.md's table allows, so the table stays true.
package archtest

import (
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/dispenserhq/dispenser/"

// allowed is the "may import" column of docs/ARCHITECTURE.md: the module's
// packages each package's non-test code may import.
var allowed = map[string][]string{
	"cmd/dispenserd":      {"dispenser", "claim", "auth", "jobs", "prize", "internal/cli", "internal/cliflag", "internal/stock", "internal/gcfloor"},
	"cmd/dispenserctl":    {"claim", "pool", "internal/cli", "internal/stock", "internal/cliflag", "internal/upload", "proto/dispenser/v1"},
	"cmd/dispenser-bench": {"claim", "pool", "internal/cli", "internal/stock", "internal/cliflag", "internal/upload", "proto/dispenser/v1"},
	"internal/cli":        {"dispenser", "internal/cliflag", "internal/stock", "proto/dispenser/v1"},
	"internal/testdaemon": {"dispenser", "prize", "internal/testenv"},
	"dispenser":           {"auth", "claim", "console", "jobs", "migrations", "pool", "prize", "webhook", "internal/input", "internal/pgerr", "internal/rpcerr", "internal/stock", "internal/upload", "proto/dispenser/v1", "proto/http", "proto/openapi"},
	"console":             {"internal/upload", "proto/dispenser/v1"},
	"internal/upload":     {"proto/dispenser/v1"},
	"jobs":                {"claim", "pool", "prize"},
	"prize":               {"claim", "pool", "webhook", "internal/input", "internal/pgerr"},
	"claim":               {"pool", "internal/stock", "internal/pgerr", "internal/input", "internal/fresh", "internal/scanread"},
	"pool":                {"internal/pgerr", "internal/input", "internal/scanread"},
	"auth":                {"internal/fresh", "internal/rpcerr"},
	"webhook":             {},
	"migrations":          {},
	"internal/stock":      {},
	"internal/pgerr":      {},
	"internal/rpcerr":     {},
	"internal/scanread":   {},
	"internal/input":      {},
	"internal/fresh":      {},
	"internal/gcfloor":    {},
	"internal/cliflag":    {},
	"internal/testenv":    {"migrations"},
	"internal/archtest":   {},
	"proto/dispenser/v1":  {},
	"proto/openapi":       {},
	"proto/http":          {},
}

func TestImportsFollowTheTable(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	seen := map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		if name := d.Name(); rel != "." && (strings.HasPrefix(name, ".") || name == "tools" || name == "node_modules") {
			return filepath.SkipDir
		}
		pkg, err := build.ImportDir(path, 0)
		if err != nil {
			return nil // no Go files here
		}
		rel = filepath.ToSlash(rel)
		want, ok := allowed[rel]
		if !ok {
			t.Errorf("package %s is not in docs/ARCHITECTURE.md's table (and allowed here)", rel)
			return nil
		}
		seen[rel] = true
		for _, imp := range pkg.Imports {
			if dep, ours := strings.CutPrefix(imp, module); ours && !slices.Contains(want, dep) {
				t.Errorf("%s imports %s, which the table does not allow", rel, dep)
			}
			if imp == "github.com/redis/go-redis/v9" && rel != "internal/stock" && !slices.Contains([]string{"claim", "dispenser", "cmd/dispenserctl", "cmd/dispenser-bench", "internal/cli", "internal/testenv"}, rel) {
				t.Errorf("%s imports go-redis: Redis belongs to internal/stock", rel)
			}
		}
		return nil
	})
	require.NoError(t, err)
	for pkg := range allowed {
		require.True(t, seen[pkg], "the table names %s, which does not exist", pkg)
	}
}
