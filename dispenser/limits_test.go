package dispenser_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/dispenserhq/dispenser/dispenser"
	"github.com/dispenserhq/dispenser/internal/testdaemon"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// getPool makes one call within d and returns its code (NotFound: served).
func getPool(conn *grpc.ClientConn, d time.Duration) codes.Code {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, err := dispenserv1.NewAdminServiceClient(conn).GetPool(ctx, &dispenserv1.GetPoolRequest{PoolId: "nope"})
	return status.Code(err)
}

// Past MaxConnections, a new connection is not served until one closes.
func TestConnectionLimit(t *testing.T) {
	t.Parallel()
	addr := testdaemon.Run(t, func(c *dispenser.Config) { c.MaxConnections = 2 }).Addr
	first, second := dial(t, addr), dial(t, addr)
	require.Equal(t, codes.NotFound, getPool(first, 5*time.Second))
	require.Equal(t, codes.NotFound, getPool(second, 5*time.Second))
	third := dial(t, addr)
	require.NotEqual(t, codes.NotFound, getPool(third, 500*time.Millisecond), "a third connection was served")
	require.NoError(t, first.Close())
	require.Eventually(t, func() bool { return getPool(third, time.Second) == codes.NotFound },
		10*time.Second, 50*time.Millisecond, "the third connection is served once one closes")
}

// Past MaxConcurrentStreams, a connection's next call waits for a free
// stream instead of costing the server another one.
func TestConcurrentStreamLimit(t *testing.T) {
	t.Parallel()
	addr := testdaemon.Run(t, func(c *dispenser.Config) { c.MaxConcurrentStreams = 2 }).Addr
	conn := dial(t, addr)
	require.Equal(t, codes.NotFound, getPool(conn, 5*time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin := dispenserv1.NewAdminServiceClient(conn)
	for range 2 { // import streams that send nothing hold their stream open
		_, err := admin.ImportCodes(ctx)
		require.NoError(t, err)
	}
	require.Equal(t, codes.DeadlineExceeded, getPool(conn, 500*time.Millisecond), "a third stream was opened")
	cancel()
	require.Eventually(t, func() bool { return getPool(conn, time.Second) == codes.NotFound },
		10*time.Second, 50*time.Millisecond)
}

// Webhook URLs must keep codes encrypted on the wire: https, or plain http
// to a loopback host, unless the operator allows insecure webhooks; and
// never name a link-local, multicast or unspecified address.
func TestWebhookURLMustBeSecure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, allow := range []bool{false, true} {
		b := setup(t, setupOpts{insecureWebhooks: allow})
		cases := []struct {
			url    string
			secure bool
		}{
			{"https://lottery.example/hook", true},
			{"http://127.0.0.1:8080/hook", true},
			{"http://[::1]:8080/hook", true},
			{"http://localhost/hook", true},
			{"http://lottery.example/hook", false},
			{"http://10.0.0.7/hook", false},
			{"http://127.0.0.1.example/hook", false},
		}
		for i, c := range cases {
			id := fmt.Sprint("p", i)
			_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: id, WebhookUrl: c.url}})
			if c.secure || allow {
				require.NoError(t, err, c.url)
				continue
			}
			requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "pool.webhook_url")
			// An update to such a URL is refused the same way.
			b.createPool(t, id)
			_, err = b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{Pool: &dispenserv1.Pool{Id: id, WebhookUrl: c.url},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"webhook_url"}}})
			requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "pool.webhook_url")
		}
		// A host no receiver has is refused whatever the scheme and the
		// operator's setting: link-local (the cloud metadata service's),
		// multicast, unspecified, written as IPv4, IPv6 or IPv4 in IPv6.
		for i, url := range []string{"https://169.254.169.254/latest/meta-data", "http://169.254.169.254/",
			"https://[fe80::1]/hook", "https://[::ffff:169.254.169.254]/hook", "https://0.0.0.0/hook",
			"https://[::]/hook", "https://224.0.0.1/hook"} {
			_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: fmt.Sprint("ll", i), WebhookUrl: url}})
			requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "pool.webhook_url")
		}
	}
}
