package dispenser_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/dispenserhq/dispenser/dispenser"
)

// The alert rules and the dashboard only name metrics the service exports,
// so that a renamed metric cannot silently blind them.
func TestDeployFilesUseExportedMetrics(t *testing.T) {
	t.Parallel()
	families, err := dispenser.NewMetrics(func() string { return "closed" }).Registry.Gather()
	require.NoError(t, err)
	exported := map[string]bool{}
	for _, f := range families {
		exported[f.GetName()] = true
	}
	// Vectors without samples are not gathered; count the declared ones too.
	for _, name := range []string{"dispenser_claims_total", "dispenser_claim_duration_seconds", "dispenser_pool_codes",
		"dispenser_pool_redis_staged", "dispenser_job_runs_total", "dispenser_job_duration_seconds",
		"dispenser_job_codes_total", "dispenser_prizes_total"} {
		exported[name] = true
	}
	name := regexp.MustCompile(`dispenser_[a-z_]+`)
	for _, file := range []string{"../deploy/prometheus/dispenser-alerts.yml", "../deploy/grafana/dispenser-dashboard.json"} {
		raw, err := os.ReadFile(file)
		require.NoError(t, err)
		if strings.HasSuffix(file, ".yml") {
			var rules struct {
				Groups []struct {
					Rules []struct {
						Alert string `yaml:"alert"`
						Expr  string `yaml:"expr"`
					} `yaml:"rules"`
				} `yaml:"groups"`
			}
			require.NoError(t, yaml.Unmarshal(raw, &rules))
			require.NotEmpty(t, rules.Groups[0].Rules)
		}
		found := name.FindAllString(string(raw), -1)
		require.NotEmpty(t, found, file)
		for _, m := range found {
			m = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
			require.True(t, exported[m], "%s names %s, which the service does not export", file, m)
		}
	}
}
