package dispenser

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"

	"google.golang.org/grpc"

	"github.com/dispenserhq/dispenser/internal/input"
	"github.com/dispenserhq/dispenser/internal/rpcerr"
	"github.com/dispenserhq/dispenser/internal/stock"
	"github.com/dispenserhq/dispenser/pool"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
	"github.com/dispenserhq/dispenser/webhook"
)

// Page size bounds of list calls.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// pageSize reads a list call's page_size: 0 is the default, more than the
// maximum is refused.
func pageSize(n int32) (int, error) {
	switch {
	case n == 0:
		return defaultPageSize, nil
	case n < 0 || n > maxPageSize:
		return 0, invalidArgument("page_size", "must be between 0 and 1000")
	}
	return int(n), nil
}

// CreatePool implements AdminService.CreatePool.
func (s *Server) CreatePool(ctx context.Context, req *dispenserv1.CreatePoolRequest) (*dispenserv1.CreatePoolResponse, error) {
	if req.GetPool() == nil {
		return nil, invalidArgument("pool", "is required")
	}
	in, err := poolFromProto(req.GetPool())
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	if err := s.checkWebhook(in.WebhookURL); err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	p, err := s.pools.CreatePool(ctx, in)
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	s.log.InfoContext(ctx, "pool created", "pool", p.ID)
	return &dispenserv1.CreatePoolResponse{Pool: poolToProto(p)}, nil
}

// UpdatePool implements AdminService.UpdatePool.
func (s *Server) UpdatePool(ctx context.Context, req *dispenserv1.UpdatePoolRequest) (*dispenserv1.UpdatePoolResponse, error) {
	if req.GetPool() == nil {
		return nil, invalidArgument("pool", "is required")
	}
	if err := pool.ValidateID("pool.id", req.GetPool().GetId()); err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	in, err := poolFromProto(req.GetPool())
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	paths := req.GetUpdateMask().GetPaths()
	p, err := s.pools.UpdatePool(ctx, in.ID, func(p *pool.Pool) error {
		before := p.WebhookURL
		if err := applyMask(p, in, paths); err != nil {
			return err
		}
		if p.WebhookURL == before {
			return nil // an older URL is checked again at delivery
		}
		return s.checkWebhook(p.WebhookURL)
	})
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	s.log.InfoContext(ctx, "pool updated", "pool", p.ID, "fields", paths)
	return &dispenserv1.UpdatePoolResponse{Pool: poolToProto(p)}, nil
}

// GetPool implements AdminService.GetPool.
func (s *Server) GetPool(ctx context.Context, req *dispenserv1.GetPoolRequest) (*dispenserv1.GetPoolResponse, error) {
	if err := pool.ValidateID("pool_id", req.GetPoolId()); err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	p, err := s.pools.GetPool(ctx, req.GetPoolId())
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	return &dispenserv1.GetPoolResponse{Pool: poolToProto(p)}, nil
}

// ListPools implements AdminService.ListPools. Page tokens are the last id
// of the previous page, encoded so that callers treat them as opaque.
func (s *Server) ListPools(ctx context.Context, req *dispenserv1.ListPoolsRequest) (*dispenserv1.ListPoolsResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after, err := base64.RawURLEncoding.DecodeString(req.GetPageToken())
	if err != nil || (len(after) > 0 && pool.ValidateID("page_token", string(after)) != nil) {
		return nil, invalidArgument("page_token", "is not a token from a previous ListPools answer")
	}
	pools, err := s.pools.ListPools(ctx, string(after), size+1)
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	resp := &dispenserv1.ListPoolsResponse{}
	if len(pools) > size {
		pools = pools[:size]
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(pools[size-1].ID))
	}
	for _, p := range pools {
		resp.Pools = append(resp.Pools, poolToProto(p))
	}
	return resp, nil
}

// GetPoolStats implements AdminService.GetPoolStats. Postgres counts come
// from one snapshot; Redis levels are read after it and are informative (a
// Redis that cannot be asked is reported, not an error).
func (s *Server) GetPoolStats(ctx context.Context, req *dispenserv1.GetPoolStatsRequest) (*dispenserv1.GetPoolStatsResponse, error) {
	if err := pool.ValidateID("pool_id", req.GetPoolId()); err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	st, err := s.pools.PoolStats(ctx, req.GetPoolId())
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	out := statsToProto(st)
	rctx, cancel := context.WithTimeout(ctx, s.redisTimeout)
	defer cancel()
	if staged, inFlight, err := s.stock.Levels(rctx, stock.Shards(st.PoolID, st.RedisShards)...); err != nil {
		out.RedisError = "redis unreachable: " + err.Error()
	} else {
		out.RedisStaged, out.RedisInFlight = new(staged), new(inFlight)
	}
	return &dispenserv1.GetPoolStatsResponse{Stats: out}, nil
}

// ImportCodes implements AdminService.ImportCodes.
func (s *Server) ImportCodes(stream grpc.ClientStreamingServer[dispenserv1.ImportCodesRequest, dispenserv1.ImportCodesResponse]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return invalidArgument("options", "the first message must carry the import options")
	}
	if err != nil {
		return statusError(ctx, s.log, err)
	}
	opts := first.GetOptions()
	if opts == nil {
		return invalidArgument("options", "the first message must carry the import options")
	}
	var format pool.Format
	switch opts.GetFormat() {
	case dispenserv1.ImportFormat_IMPORT_FORMAT_LINES:
		format = pool.FormatLines
	case dispenserv1.ImportFormat_IMPORT_FORMAT_CSV:
		format = pool.FormatCSV
	default:
		return invalidArgument("options.format", "must be IMPORT_FORMAT_LINES or IMPORT_FORMAT_CSV")
	}
	sum, err := s.pools.Import(ctx, pool.ImportOptions{
		PoolID:     opts.GetPoolId(),
		Format:     format,
		Strict:     opts.GetStrict(),
		SourceName: opts.GetSourceName(),
	}, &importStreamReader{stream: stream, limit: s.maxImport})
	if err != nil {
		return statusError(ctx, s.log, err)
	}
	s.log.InfoContext(ctx, "import landed", "pool", opts.GetPoolId(), "import_id", sum.ID, "lines", sum.Lines,
		"inserted", sum.Inserted, "duplicates_in_file", sum.DuplicatesInFile,
		"duplicates_in_pool", sum.DuplicatesInPool, "invalid", sum.Invalid, "bytes", sum.Bytes,
		"staging_ms", sum.Staging.Milliseconds(), "landing_ms", sum.Landing.Milliseconds())
	return stream.SendAndClose(summaryToProto(sum))
}

// importStreamReader reads the data messages of an import stream as one byte
// stream. A second options message is an error, as is a broken stream: the
// import then fails and lands nothing.
type importStreamReader struct {
	stream grpc.ClientStreamingServer[dispenserv1.ImportCodesRequest, dispenserv1.ImportCodesResponse]
	buf    []byte
	limit  int64 // most bytes accepted
	read   int64
}

func (r *importStreamReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.stream.Recv()
		if err != nil {
			return 0, err // io.EOF at the end of a complete upload
		}
		if msg.GetOptions() != nil {
			return 0, invalidArgument("options", "only the first message may carry options")
		}
		r.buf = msg.GetData()
		if r.read += int64(len(r.buf)); r.read > r.limit {
			return 0, rpcerr.Info(codes.ResourceExhausted, fmt.Sprintf("the file is larger than %d bytes; split it", r.limit),
				ReasonImportTooLarge)
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// VoidCodes implements AdminService.VoidCodes.
func (s *Server) VoidCodes(ctx context.Context, req *dispenserv1.VoidCodesRequest) (*dispenserv1.VoidCodesResponse, error) {
	res, err := s.pools.Void(ctx, pool.VoidRequest{PoolID: req.GetPoolId(), Codes: req.GetCodes(),
		ImportID: req.GetImportId(), Reason: req.GetReason()})
	if err != nil {
		return nil, statusError(ctx, s.log, err)
	}
	s.log.InfoContext(ctx, "codes voided", "pool", req.GetPoolId(), "import_id", req.GetImportId(),
		"voided", res.Voided, "already_void", res.AlreadyVoid, "claimed", res.Claimed, "not_found", res.NotFound)
	return &dispenserv1.VoidCodesResponse{Voided: res.Voided, AlreadyVoid: res.AlreadyVoid, Claimed: res.Claimed, NotFound: res.NotFound}, nil
}

// checkWebhook refuses a webhook URL that would send codes in clear (see
// webhook.CheckURL), naming the field.
func (s *Server) checkWebhook(u string) error {
	if u == "" {
		return nil
	}
	if err := webhook.CheckURL(u, s.insecureWebhooks); errors.Is(err, webhook.ErrUnroutableHost) {
		return &input.FieldError{Field: "pool.webhook_url",
			Description: "must not name a link-local, multicast or unspecified address (such as the cloud metadata service's)"}
	} else if err != nil {
		return &input.FieldError{Field: "pool.webhook_url",
			Description: "must be an absolute https URL (plain http only to a loopback host, unless the server allows insecure webhooks)"}
	}
	return nil
}

// generateProgressEvery is how often GenerateCodes reports progress.
const generateProgressEvery = 250 * time.Millisecond

// GenerateCodes implements AdminService.GenerateCodes.
func (s *Server) GenerateCodes(req *dispenserv1.GenerateCodesRequest, stream grpc.ServerStreamingServer[dispenserv1.GenerateCodesResponse]) error {
	ctx := stream.Context()
	opts := pool.GenerateOptions{PoolID: req.GetPoolId(), Count: req.GetCount(), Pattern: req.GetPattern(),
		SafetyFactor: req.GetSafetyFactor(), SourceName: req.GetSourceName()}
	switch req.GetCharset() {
	case dispenserv1.CodeCharset_CODE_CHARSET_UNSPECIFIED, dispenserv1.CodeCharset_CODE_CHARSET_UNAMBIGUOUS:
		opts.Charset = pool.Charsets["unambiguous"]
	case dispenserv1.CodeCharset_CODE_CHARSET_DIGITS:
		opts.Charset = pool.Charsets["digits"]
	case dispenserv1.CodeCharset_CODE_CHARSET_UPPER:
		opts.Charset = pool.Charsets["upper"]
	case dispenserv1.CodeCharset_CODE_CHARSET_ALPHANUMERIC:
		opts.Charset = pool.Charsets["alphanumeric"]
	case dispenserv1.CodeCharset_CODE_CHARSET_CUSTOM:
		if req.GetCustomCharset() == "" {
			return invalidArgument("custom_charset", "is required with CODE_CHARSET_CUSTOM")
		}
		opts.Charset = req.GetCustomCharset()
	default:
		return invalidArgument("charset", "is not a known charset")
	}
	if req.GetCustomCharset() != "" && req.GetCharset() != dispenserv1.CodeCharset_CODE_CHARSET_CUSTOM {
		return invalidArgument("custom_charset", "is only for CODE_CHARSET_CUSTOM")
	}
	var last time.Time
	var sendErr error
	sum, err := s.pools.Generate(ctx, opts, func(drawn int64) {
		if sendErr != nil || time.Since(last) < generateProgressEvery {
			return
		}
		last = time.Now()
		sendErr = stream.Send(&dispenserv1.GenerateCodesResponse{Drawn: drawn})
	})
	if err == nil {
		err = sendErr
	}
	var fe *input.FieldError
	if errors.As(err, &fe) && fe.Field == "charset" {
		// Only a custom charset can be wrong.
		fe.Field = "custom_charset"
	}
	if err != nil {
		return statusError(ctx, s.log, err)
	}
	s.log.InfoContext(ctx, "codes generated", "pool", opts.PoolID, "import_id", sum.ImportID, "inserted", sum.Inserted,
		"collisions", sum.Collisions, "entropy_bits", sum.EntropyBits, "staging", sum.Staging, "landing", sum.Landing)
	return stream.Send(&dispenserv1.GenerateCodesResponse{Drawn: sum.Inserted + sum.Collisions,
		Summary: &dispenserv1.GenerateCodesSummary{ImportId: sum.ImportID, Inserted: sum.Inserted,
			Collisions: sum.Collisions, EntropyBits: sum.EntropyBits}})
}
