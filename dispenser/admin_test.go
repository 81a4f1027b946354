package dispenser_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/claim"
	"github.com/dispenserhq/dispenser/dispenser"
	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/internal/testenv"
	"github.com/dispenserhq/dispenser/pool"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// bundle is what a test of the gRPC layer works with.
type bundle struct {
	srv   *dispenser.Server
	conn  *grpc.ClientConn
	admin dispenserv1.AdminServiceClient
	claim dispenserv1.ClaimServiceClient
	db    *testenv.Schema
	rdb   *redis.Client
	keys  stock.Keys
	// importsDone receives once per finished ImportCodes handler.
	importsDone chan error
}

type setupOpts struct {
	redis redis.UniversalClient // overrides the test's Redis
	log   *slog.Logger          // receives the server's logs
	auth  *auth.Config          // turns API-key authentication on
	// insecureWebhooks allows plain-http webhook URLs to any host.
	insecureWebhooks bool
}

// setup serves a Server over an in-memory connection, on a schema and Redis
// namespace of the test's own.
// start begins a parallel test with its own server (setup).
func start(t *testing.T, opts ...setupOpts) (context.Context, *bundle) {
	t.Helper()
	t.Parallel()
	return context.Background(), setup(t, opts...)
}

func setup(t *testing.T, opts ...setupOpts) *bundle {
	t.Helper()
	db := testenv.Postgres(t)
	rdb, ns := testenv.Redis(t)
	b := &bundle{db: db, rdb: rdb, keys: stock.NewKeys(ns), importsDone: make(chan error, 16)}
	var useRedis redis.UniversalClient = rdb
	log := slog.New(slog.DiscardHandler)
	if len(opts) > 0 && opts[0].redis != nil {
		useRedis = opts[0].redis
	}
	if len(opts) > 0 && opts[0].log != nil {
		log = opts[0].log
	}
	srv, err := dispenser.NewServer(dispenser.ServerConfig{DB: db.Pool, Redis: useRedis, RedisNamespace: ns,
		Logger: log, Claims: claim.Config{PoolCacheTTL: time.Nanosecond}, MaxImportBytes: 4 << 20,
		AllowInsecureWebhooks: len(opts) > 0 && opts[0].insecureWebhooks})
	require.NoError(t, err)
	require.NoError(t, srv.Start(context.Background()))
	t.Cleanup(func() { srv.Stop(context.Background()) })

	signalImports := func(s any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		err := h(s, ss)
		if strings.HasSuffix(info.FullMethod, "/ImportCodes") {
			b.importsDone <- err
		}
		return err
	}
	gopts := []grpc.ServerOption{grpc.ChainStreamInterceptor(signalImports)}
	if len(opts) > 0 && opts[0].auth != nil {
		ac := *opts[0].auth
		ac.Store = auth.NewStore(db.Pool)
		a := auth.New(ac)
		gopts = append(gopts, grpc.ChainUnaryInterceptor(a.Unary()), grpc.ChainStreamInterceptor(a.Stream()))
	}
	g := dispenser.NewGRPCServer(log, gopts...)
	srv.Register(g)
	b.srv = srv
	lis := bufconn.Listen(1 << 20)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)

	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	b.conn = conn
	b.admin = dispenserv1.NewAdminServiceClient(conn)
	b.claim = dispenserv1.NewClaimServiceClient(conn)
	return b
}

// requireStatus checks the code, the ErrorInfo reason and, for
// InvalidArgument, the field named in the BadRequest violation.
func requireStatus(t *testing.T, err error, code codes.Code, reason, field string) {
	t.Helper()
	st, ok := status.FromError(err)
	require.True(t, ok, "not a status: %v", err)
	require.Equal(t, code, st.Code(), st.Message())
	var gotReason, gotField string
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			gotReason = d.GetReason()
			require.Equal(t, dispenser.ErrorDomain, d.GetDomain())
		case *errdetails.BadRequest:
			gotField = d.GetFieldViolations()[0].GetField()
		}
	}
	require.Equal(t, reason, gotReason, st.Message())
	if field != "" {
		require.Equal(t, field, gotField, st.Message())
	}
	if reason == dispenser.ReasonInvalidArgument {
		require.True(t, strings.HasPrefix(st.Message(), field+": "), "message %q should name %q", st.Message(), field)
	}
}

func (b *bundle) createPool(t *testing.T, id string) {
	t.Helper()
	_, err := b.admin.CreatePool(context.Background(), &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: id}})
	require.NoError(t, err)
}

func TestCreateGetListPools(t *testing.T) {
	ctx, b := start(t)
	starts := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	resp, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{
		Id: "xmas", DisplayName: "Christmas", PerUserLimit: 2, ClaimStartsAt: timestamppb.New(starts),
		WebhookUrl: "https://lottery.example/hook", WebhookSecret: "0123456789abcdef0123",
	}})
	require.NoError(t, err)
	p := resp.GetPool()
	require.Equal(t, int32(2), p.GetPerUserLimit())
	require.Equal(t, int32(pool.DefaultRefillBatchSize), p.GetRefillBatchSize())
	require.True(t, p.GetWebhookSecretSet())
	require.Empty(t, p.GetWebhookSecret(), "the secret is never returned")
	require.True(t, p.GetClaimStartsAt().AsTime().Equal(starts))

	got, err := b.admin.GetPool(ctx, &dispenserv1.GetPoolRequest{PoolId: "xmas"})
	require.NoError(t, err)
	require.Equal(t, "Christmas", got.GetPool().GetDisplayName())
	require.Empty(t, got.GetPool().GetWebhookSecret())

	for i := range 5 {
		b.createPool(t, fmt.Sprintf("p%d", i))
	}
	var all []string
	token := ""
	for {
		page, err := b.admin.ListPools(ctx, &dispenserv1.ListPoolsRequest{PageSize: 2, PageToken: token})
		require.NoError(t, err)
		require.LessOrEqual(t, len(page.GetPools()), 2)
		for _, p := range page.GetPools() {
			all = append(all, p.GetId())
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	require.Equal(t, []string{"p0", "p1", "p2", "p3", "p4", "xmas"}, all)
}

func TestUpdatePoolMask(t *testing.T) {
	ctx, b := start(t)
	b.createPool(t, "p1")
	ends := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	resp, err := b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{
		Pool:       &dispenserv1.Pool{Id: "p1", Paused: true, ClaimEndsAt: timestamppb.New(ends), PerUserLimit: 99, DisplayName: "ignored"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"paused", "claim_ends_at"}},
	})
	require.NoError(t, err)
	require.True(t, resp.GetPool().GetPaused())
	require.True(t, resp.GetPool().GetClaimEndsAt().AsTime().Equal(ends))
	require.Equal(t, int32(1), resp.GetPool().GetPerUserLimit(), "fields outside the mask stay")
	require.Empty(t, resp.GetPool().GetDisplayName())

	// Naming a field and leaving it unset clears it.
	resp, err = b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{
		Pool:       &dispenserv1.Pool{Id: "p1"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"claim_ends_at", "paused"}},
	})
	require.NoError(t, err)
	require.Nil(t, resp.GetPool().GetClaimEndsAt())
	require.False(t, resp.GetPool().GetPaused())
}

// Every validation error is InvalidArgument naming the field, and writes
// nothing.
func TestValidationErrors(t *testing.T) {
	ctx, b := start(t)
	b.createPool(t, "p1")
	mask := func(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }
	badTime := &timestamppb.Timestamp{Seconds: 1, Nanos: 2_000_000_000}
	now := time.Now()
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"create without pool", func() error {
			_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{})
			return err
		}, "pool"},
		{"create with bad id", func() error {
			_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "UPPER"}})
			return err
		}, "pool.id"},
		{"create with limit over max", func() error {
			_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "x", PerUserLimit: 1001}})
			return err
		}, "pool.per_user_limit"},
		{"create with negative low water", func() error {
			_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "x", RefillLowWater: -1}})
			return err
		}, "pool.refill_low_water"},
		{"create with batch over max", func() error {
			_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "x", RefillBatchSize: 200_000}})
			return err
		}, "pool.refill_batch_size"},
		{"create with invalid timestamp", func() error {
			_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "x", ClaimStartsAt: badTime}})
			return err
		}, "pool.claim_starts_at"},
		{"create with window backwards", func() error {
			_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "x",
				ClaimStartsAt: timestamppb.New(now), ClaimEndsAt: timestamppb.New(now.Add(-time.Second))}})
			return err
		}, "pool.claim_ends_at"},
		{"create with bad webhook", func() error {
			_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "x", WebhookUrl: "mailto:a@b"}})
			return err
		}, "pool.webhook_url"},
		{"create with short secret", func() error {
			_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "x", WebhookSecret: "abc"}})
			return err
		}, "pool.webhook_secret"},
		{"create with long name", func() error {
			_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "x", DisplayName: strings.Repeat("n", 201)}})
			return err
		}, "pool.display_name"},
		{"update without pool", func() error {
			_, err := b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{UpdateMask: mask("paused")})
			return err
		}, "pool"},
		{"update with bad id", func() error {
			_, err := b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{Pool: &dispenserv1.Pool{Id: "a b"}, UpdateMask: mask("paused")})
			return err
		}, "pool.id"},
		{"update with empty mask", func() error {
			_, err := b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{Pool: &dispenserv1.Pool{Id: "p1"}})
			return err
		}, "update_mask"},
		{"update of an immutable field", func() error {
			_, err := b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{Pool: &dispenserv1.Pool{Id: "p1"}, UpdateMask: mask("id")})
			return err
		}, "update_mask"},
		{"update clearing the limit", func() error {
			_, err := b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{Pool: &dispenserv1.Pool{Id: "p1"}, UpdateMask: mask("paused", "per_user_limit")})
			return err
		}, "pool.per_user_limit"},
		{"update with invalid timestamp", func() error {
			_, err := b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{Pool: &dispenserv1.Pool{Id: "p1", ClaimEndsAt: badTime}, UpdateMask: mask("claim_ends_at")})
			return err
		}, "pool.claim_ends_at"},
		{"get with empty id", func() error {
			_, err := b.admin.GetPool(ctx, &dispenserv1.GetPoolRequest{})
			return err
		}, "pool_id"},
		{"stats with bad id", func() error {
			_, err := b.admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: "{p1}"})
			return err
		}, "pool_id"},
		{"list with negative page size", func() error {
			_, err := b.admin.ListPools(ctx, &dispenserv1.ListPoolsRequest{PageSize: -1})
			return err
		}, "page_size"},
		{"list with page size over max", func() error {
			_, err := b.admin.ListPools(ctx, &dispenserv1.ListPoolsRequest{PageSize: 1001})
			return err
		}, "page_size"},
		{"list with forged token", func() error {
			_, err := b.admin.ListPools(ctx, &dispenserv1.ListPoolsRequest{PageToken: "not base64!"})
			return err
		}, "page_token"},
		{"import without options", func() error {
			return b.importRaw(ctx, nil, "AAAA\n")
		}, "options"},
		{"import without format", func() error {
			return b.importRaw(ctx, &dispenserv1.ImportOptions{PoolId: "p1"}, "AAAA\n")
		}, "options.format"},
		{"import with bad pool id", func() error {
			return b.importRaw(ctx, &dispenserv1.ImportOptions{PoolId: "P 1", Format: dispenserv1.ImportFormat_IMPORT_FORMAT_LINES}, "AAAA\n")
		}, "options.pool_id"},
		{"import with a bad CSV header", func() error {
			return b.importRaw(ctx, &dispenserv1.ImportOptions{PoolId: "p1", Format: dispenserv1.ImportFormat_IMPORT_FORMAT_CSV}, "SECRET-1\nSECRET-2\n")
		}, "data"},
		{"import with options twice", func() error {
			opts := &dispenserv1.ImportOptions{PoolId: "p1", Format: dispenserv1.ImportFormat_IMPORT_FORMAT_LINES}
			stream, err := b.admin.ImportCodes(ctx)
			require.NoError(t, err)
			for _, m := range []*dispenserv1.ImportCodesRequest{
				{Payload: &dispenserv1.ImportCodesRequest_Options{Options: opts}},
				{Payload: &dispenserv1.ImportCodesRequest_Data{Data: []byte("AAAA-1\n")}},
				{Payload: &dispenserv1.ImportCodesRequest_Options{Options: opts}},
			} {
				_ = stream.Send(m)
			}
			_, err = stream.CloseAndRecv()
			return err
		}, "options"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, tt.field)
			require.NotContains(t, err.Error(), "SECRET")
		})
	}
	// Nothing was half written: one pool as created, unchanged, and no codes.
	got, err := b.admin.GetPool(ctx, &dispenserv1.GetPoolRequest{PoolId: "p1"})
	require.NoError(t, err)
	require.False(t, got.GetPool().GetPaused())
	require.Nil(t, got.GetPool().GetClaimEndsAt())
	var pools, codeRows, imports int
	require.NoError(t, b.db.Pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM pools), (SELECT count(*) FROM codes), (SELECT count(*) FROM imports)").Scan(&pools, &codeRows, &imports))
	require.Equal(t, []int{1, 0, 0}, []int{pools, codeRows, imports})
}

func TestNotFoundAndExists(t *testing.T) {
	ctx, b := start(t)
	b.createPool(t, "p1")
	_, err := b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "p1"}})
	requireStatus(t, err, codes.AlreadyExists, dispenser.ReasonPoolExists, "")

	_, err = b.admin.GetPool(ctx, &dispenserv1.GetPoolRequest{PoolId: "nope"})
	requireStatus(t, err, codes.NotFound, dispenser.ReasonPoolNotFound, "")
	_, err = b.admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: "nope"})
	requireStatus(t, err, codes.NotFound, dispenser.ReasonPoolNotFound, "")
	_, err = b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{Pool: &dispenserv1.Pool{Id: "nope"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"paused"}}})
	requireStatus(t, err, codes.NotFound, dispenser.ReasonPoolNotFound, "")
	err = b.importRaw(ctx, &dispenserv1.ImportOptions{PoolId: "nope", Format: dispenserv1.ImportFormat_IMPORT_FORMAT_LINES}, "AAAA\n")
	requireStatus(t, err, codes.NotFound, dispenser.ReasonPoolNotFound, "")
}

// importRaw sends options (if any) and then data in 7-byte chunks, so lines
// are split across messages.
func (b *bundle) importRaw(ctx context.Context, opts *dispenserv1.ImportOptions, data string) error {
	_, err := b.importData(ctx, opts, data)
	return err
}

func (b *bundle) importData(ctx context.Context, opts *dispenserv1.ImportOptions, data string) (*dispenserv1.ImportCodesResponse, error) {
	stream, err := b.admin.ImportCodes(ctx)
	if err != nil {
		return nil, err
	}
	if opts != nil {
		if err := stream.Send(&dispenserv1.ImportCodesRequest{Payload: &dispenserv1.ImportCodesRequest_Options{Options: opts}}); err != nil {
			return stream.CloseAndRecv()
		}
	}
	for i := 0; i < len(data); i += 7 {
		chunk := data[i:min(i+7, len(data))]
		if err := stream.Send(&dispenserv1.ImportCodesRequest{Payload: &dispenserv1.ImportCodesRequest_Data{Data: []byte(chunk)}}); err != nil {
			return stream.CloseAndRecv()
		}
	}
	return stream.CloseAndRecv()
}

func TestImportCodesStream(t *testing.T) {
	ctx, b := start(t)
	b.createPool(t, "p1")
	opts := &dispenserv1.ImportOptions{PoolId: "p1", Format: dispenserv1.ImportFormat_IMPORT_FORMAT_LINES, SourceName: "a.txt"}
	data := "\xef\xbb\xbfCODE-0001\r\nCODE-0002\r\n\r\nbad\r\nCODE-0001\r\n"
	resp, err := b.importData(ctx, opts, data)
	require.NoError(t, err)
	require.EqualValues(t, 4, resp.GetLines())
	require.EqualValues(t, 2, resp.GetInserted())
	require.EqualValues(t, 1, resp.GetDuplicatesInFile())
	require.EqualValues(t, 1, resp.GetInvalid())
	require.EqualValues(t, len(data), resp.GetBytes())
	require.Equal(t, int64(4), resp.GetInvalidLines()[0].GetLine())

	resp, err = b.importData(ctx, opts, data)
	require.NoError(t, err)
	require.EqualValues(t, 0, resp.GetInserted())
	require.EqualValues(t, 2, resp.GetDuplicatesInPool())

	opts.Strict = true
	_, err = b.importData(ctx, opts, "CODE-0003\nx\n")
	requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonImportRejected, "data.line[2]")

	stats, err := b.admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: "p1"})
	require.NoError(t, err)
	require.EqualValues(t, 2, stats.GetStats().GetImported())
	require.EqualValues(t, 2, stats.GetStats().GetAvailable())
	require.EqualValues(t, 2, stats.GetStats().GetImports())
	require.True(t, stats.GetStats().GetBalanced())
}

// A client that goes away mid-upload leaves no trace of its import.
func TestImportCodesClientCancelLeavesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createPool(t, "p1")
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := b.admin.ImportCodes(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&dispenserv1.ImportCodesRequest{Payload: &dispenserv1.ImportCodesRequest_Options{
		Options: &dispenserv1.ImportOptions{PoolId: "p1", Format: dispenserv1.ImportFormat_IMPORT_FORMAT_LINES}}}))
	var chunk strings.Builder
	for i := range 30_000 {
		fmt.Fprintf(&chunk, "CUT-%08d\n", i)
	}
	for range 4 {
		require.NoError(t, stream.Send(&dispenserv1.ImportCodesRequest{Payload: &dispenserv1.ImportCodesRequest_Data{Data: []byte(chunk.String())}}))
	}
	cancel()
	select {
	case err := <-b.importsDone:
		require.Equal(t, codes.Canceled, status.Code(err), "%v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the import handler did not end after the client cancelled")
	}
	var n int
	require.NoError(t, b.db.Pool.QueryRow(context.Background(), "SELECT (SELECT count(*) FROM codes) + (SELECT count(*) FROM imports)").Scan(&n))
	require.Zero(t, n)
}

func TestPoolStatsRedisLevels(t *testing.T) {
	ctx, b := start(t)
	b.createPool(t, "p1")
	require.NoError(t, b.rdb.RPush(ctx, b.keys.Staged("p1"), "a1", "a2", "a3").Err())
	require.NoError(t, b.rdb.ZAdd(ctx, b.keys.InFlight("p1"), redis.Z{Score: 1, Member: "x"}).Err())
	resp, err := b.admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: "p1"})
	require.NoError(t, err)
	require.EqualValues(t, 3, resp.GetStats().GetRedisStaged())
	require.EqualValues(t, 1, resp.GetStats().GetRedisInFlight())
	require.Empty(t, resp.GetStats().GetRedisError())
}

// With Redis unreachable, stats still answer from Postgres and say why the
// Redis levels are missing.
func TestPoolStatsRedisDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close()) // nothing listens there now
	dead := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = dead.Close() })
	b := setup(t, setupOpts{redis: dead})
	b.createPool(t, "p1")
	resp, err := b.admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: "p1"})
	require.NoError(t, err)
	require.Nil(t, resp.GetStats().RedisStaged)
	require.Contains(t, resp.GetStats().GetRedisError(), "redis unreachable")
	require.True(t, resp.GetStats().GetBalanced())
}

// createPoolDirect makes a pool in the database, bypassing the API (and its
// authentication).
func (b *bundle) createPoolDirect(t *testing.T, id string) {
	t.Helper()
	_, err := pool.NewStore(b.db.Pool).CreatePool(context.Background(), pool.Pool{ID: id})
	require.NoError(t, err)
}

// An upload larger than the limit is refused, and nothing of it lands.
func TestImportTooLarge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createPool(t, "p1")
	stream, err := b.admin.ImportCodes(context.Background())
	require.NoError(t, err)
	require.NoError(t, stream.Send(&dispenserv1.ImportCodesRequest{Payload: &dispenserv1.ImportCodesRequest_Options{
		Options: &dispenserv1.ImportOptions{PoolId: "p1", Format: dispenserv1.ImportFormat_IMPORT_FORMAT_LINES}}}))
	chunk := []byte(strings.Repeat("CODE-0000000001\n", 16<<10)) // 256 KiB
	for range 24 {                                               // 6 MiB, over the 4 MiB the test server allows
		if stream.Send(&dispenserv1.ImportCodesRequest{Payload: &dispenserv1.ImportCodesRequest_Data{Data: chunk}}) != nil {
			break
		}
	}
	_, err = stream.CloseAndRecv()
	requireStatus(t, err, codes.ResourceExhausted, "IMPORT_TOO_LARGE", "")
	var n int
	require.NoError(t, b.db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM codes").Scan(&n))
	require.Zero(t, n)
}

// A pool spread over Redis shards through the API: the setting is checked,
// refill fills every shard, stats sum their levels, claims are served, and
// lowering the count returns the dropped shards' codes at reconcile.
func TestPoolRedisShards(t *testing.T) {
	ctx, b := start(t)
	b.fill(t, &dispenserv1.Pool{Id: "hot", RedisShards: 3, RefillBatchSize: 30}, 60)
	got, err := b.admin.GetPool(ctx, &dispenserv1.GetPoolRequest{PoolId: "hot"})
	require.NoError(t, err)
	require.EqualValues(t, 3, got.GetPool().GetRedisShards())
	for s := range 3 {
		require.EqualValues(t, 10, b.rdb.LLen(ctx, b.keys.Staged(stock.Shard("hot", s))).Val(), "shard %d", s)
	}
	st, err := b.admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: "hot"})
	require.NoError(t, err)
	require.EqualValues(t, 30, st.GetStats().GetRedisStaged())
	require.EqualValues(t, 30, st.GetStats().GetStaged())
	for i := range 5 {
		res, err := b.claim.ClaimCode(ctx, &dispenserv1.ClaimCodeRequest{PoolId: "hot", UserId: fmt.Sprint("u", i), RequestId: fmt.Sprint("r", i)})
		require.NoError(t, err)
		require.NotEmpty(t, res.GetClaim().GetCode())
	}

	for _, n := range []int32{0, 65} {
		_, err := b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{Pool: &dispenserv1.Pool{Id: "hot", RedisShards: n},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"redis_shards"}}})
		requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "pool.redis_shards")
	}
	_, err = b.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "wide", RedisShards: 100}})
	requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "pool.redis_shards")

	up, err := b.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{Pool: &dispenserv1.Pool{Id: "hot", RedisShards: 1},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"redis_shards"}}})
	require.NoError(t, err)
	require.EqualValues(t, 1, up.GetPool().GetRedisShards())
	// The server's reconcile grace keeps young batches; the shards' codes
	// come back once it has passed (here: the job's grace is a minute, so
	// age the batches).
	_, err = b.db.Pool.Exec(ctx, `UPDATE stage_batches SET staged_at = staged_at - interval '1 hour' WHERE pool_id = 'hot'`)
	require.NoError(t, err)
	rep, err := b.admin.RunJob(ctx, &dispenserv1.RunJobRequest{Job: dispenserv1.Job_JOB_RECONCILE, PoolId: "hot"})
	require.NoError(t, err)
	require.Len(t, rep.GetPools(), 1)
	require.Positive(t, rep.GetPools()[0].GetReturnedDroppedShards())
	require.True(t, rep.GetPools()[0].GetBalanced())
	st, err = b.admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: "hot"})
	require.NoError(t, err)
	require.Equal(t, st.GetStats().GetStaged(), st.GetStats().GetRedisStaged(), "what is staged is in the one shard left")
}
