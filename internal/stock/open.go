package stock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterStateReload is how often a Cluster client re-reads the slot map
// while in use: a failover is followed within about this long.
const ClusterStateReload = time.Second

// Open returns a client for a Redis URL, of one of three topologies chosen by
// its scheme:
//
//   - redis:// or rediss:// (TLS): one node, database in the path
//     (redis://:password@host:6379/0);
//   - redis+sentinel:// or rediss+sentinel://: the master a set of Sentinels
//     watches, followed through failovers: the Sentinels as the host and
//     addr= parameters, the master's name as master_name=
//     (redis+sentinel://sentinel-1:26379?addr=sentinel-2:26379&master_name=dispenser);
//   - redis+cluster:// or rediss+cluster://: a Redis Cluster from seed nodes
//     (redis+cluster://node-1:7000?addr=node-2:7000&addr=node-3:7000).
//
// Options go in the query as go-redis names them (dial_timeout=2s,
// read_timeout=..., pool_size=...). Every key of a pool shares its hash
// tag, so each script's keys are in one Cluster slot. Open does not wait for
// Redis to answer: the service starts without it (claims fall back to
// Postgres). Errors never repeat the URL, which may hold a password.
func Open(url string) (redis.UniversalClient, error) {
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return nil, errors.New("redis url: want redis://, redis+sentinel:// or redis+cluster://")
	}
	base, topology, _ := strings.Cut(scheme, "+")
	if base != "redis" && base != "rediss" {
		return nil, fmt.Errorf("redis url: unknown scheme %q", scheme)
	}
	plain := base + "://" + rest
	switch topology {
	case "":
		opts, err := redis.ParseURL(plain)
		if err != nil {
			return nil, fmt.Errorf("redis url: %w", scrub(err, url))
		}
		return redis.NewClient(opts), nil
	case "sentinel":
		opts, err := redis.ParseFailoverURL(plain)
		if err != nil {
			return nil, fmt.Errorf("redis sentinel url: %w", scrub(err, url))
		}
		if opts.MasterName == "" {
			return nil, errors.New("redis sentinel url: master_name is required")
		}
		return redis.NewFailoverClient(opts), nil
	case "cluster":
		opts, err := redis.ParseClusterURL(plain)
		if err != nil {
			return nil, fmt.Errorf("redis cluster url: %w", scrub(err, url))
		}
		// go-redis re-reads the slot map on MOVED, or after this long: a
		// dead master answers no MOVED, so with its default (a minute) the
		// client would keep dialing it long after its replica took over.
		opts.ClusterStateReloadInterval = ClusterStateReload
		return redis.NewClusterClient(opts), nil
	}
	return nil, fmt.Errorf("redis url: unknown topology %q (want sentinel or cluster)", topology)
}

// scrub keeps a parse error from quoting a URL that may hold a password.
func scrub(err error, url string) error {
	msg := err.Error()
	if strings.Contains(msg, url) || strings.Contains(msg, "@") {
		return errors.New("malformed URL")
	}
	return err
}

// slogPrinter carries go-redis's own log lines (a node it cannot dial, a
// failover it follows) into log/slog.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(ctx context.Context, format string, v ...any) {
	p.log.WarnContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}

// RouteLogs sends go-redis's log lines, process-wide, to log at warn level
// instead of its own stderr format. Its lines name addresses, never keys or
// values.
func RouteLogs(log *slog.Logger) { redis.SetLogger(slogPrinter{log}) }
