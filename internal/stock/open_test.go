package stock

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestOpenChoosesTheTopology(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]any{
		"redis://127.0.0.1:6379/2":                                          &redis.Client{},
		"rediss://:pw@cache:6380/0":                                         &redis.Client{},
		"redis+sentinel://s1:26379?addr=s2:26379&master_name=dispenser":     &redis.Client{},
		"redis+cluster://n1:7000?addr=n2:7000&addr=n3:7000&dial_timeout=1s": &redis.ClusterClient{},
		"rediss+cluster://user:pw@n1:7000?addr=n2:7000":                     &redis.ClusterClient{},
	} {
		rdb, err := Open(url)
		require.NoError(t, err, url)
		require.IsType(t, want, rdb, url)
		_ = rdb.Close()
	}
	for url, msg := range map[string]string{
		"127.0.0.1:6379":                         "want redis://",
		"http://x":                               "unknown scheme",
		"redis+ring://x:1":                       "unknown topology",
		"redis+sentinel://s1:26379":              "master_name is required",
		"redis+cluster://n1:7000?bogus_option=1": "redis cluster url",
		"redis://:s3cr3t@host:notaport/0":        "redis url",
	} {
		_, err := Open(url)
		require.ErrorContains(t, err, msg, url)
		require.NotContains(t, err.Error(), "s3cr3t", "an error repeats the password")
	}
	// A Cluster client follows a failover within about a second.
	rdb, err := Open("redis+cluster://n1:7000")
	require.NoError(t, err)
	defer rdb.Close()
	require.Equal(t, ClusterStateReload, rdb.(*redis.ClusterClient).Options().ClusterStateReloadInterval)
}

func TestRedisLogsGoToSlog(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	p := slogPrinter{slog.New(slog.NewJSONHandler(&buf, nil))}
	p.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts", 5)
	out := buf.String()
	require.True(t, strings.Contains(out, `"level":"WARN"`), out)
	require.Contains(t, out, "failed to dial after 5 attempts")
	require.Contains(t, out, `"component":"go-redis"`)
}
