package dispenser

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/internal/rpcerr"
	"github.com/dispenserhq/dispenser/internal/upload"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
	"github.com/dispenserhq/dispenser/proto/openapi"
)

// The HTTP/JSON API. grpc-gateway's handlers, generated from the HTTP rules
// in proto/http/dispenser_http.yaml, turn each HTTP request into a gRPC call
// on an in-process connection to a second gRPC server that has the same
// services and interceptors as the public one (API keys, roles, rate limits,
// logs, panic recovery) but no transport security, since its connection never
// leaves the process. So every rule of the gRPC API holds over HTTP, by
// construction. Errors are an HTTP status chosen by the ErrorInfo reason
// (httpStatusByReason) and a JSON body with the gRPC code, its name, the
// message, the reason and the details.

// IdempotencyKeyHeader is accepted as the request_id of the calls that take
// one (ClaimCode, ReserveCode): over gRPC as metadata "idempotency-key", over
// HTTP as the Idempotency-Key header.
const IdempotencyKeyHeader = "idempotency-key"

// Body limits of the HTTP API: a JSON request is small (1 MiB is far more
// than any call needs); an import upload is bounded by MaxImportBytes.
const maxJSONBodyBytes = 1 << 20

// httpStatusByReason is the HTTP status of each refusal whose gRPC code
// alone would map to a misleading one (grpc-gateway's table sends
// ResourceExhausted to 429, which clients retry, and FailedPrecondition to
// 400, which blames the request). Reasons not listed take the gateway's
// mapping of their gRPC code (runtime.HTTPStatusFromCode).
var httpStatusByReason = map[string]int{
	ReasonPoolExhausted:         http.StatusConflict,
	ReasonUserLimit:             http.StatusConflict,
	ReasonHoldLimit:             http.StatusConflict,
	ReasonPoolPaused:            http.StatusConflict,
	ReasonPoolClosed:            http.StatusConflict,
	ReasonRequestReused:         http.StatusConflict,
	ReasonReservationPending:    http.StatusConflict,
	ReasonReservationConfirmed:  http.StatusConflict,
	ReasonNotAReservation:       http.StatusConflict,
	ReasonReservationExpired:    http.StatusGone,
	ReasonReservationCancelled:  http.StatusGone,
	ReasonPrizeState:            http.StatusConflict,
	ReasonPrizeConflict:         http.StatusConflict,
	ReasonJobBusy:               http.StatusConflict,
	ReasonImportRejected:        http.StatusUnprocessableEntity,
	ReasonImportTooLarge:        http.StatusRequestEntityTooLarge,
	auth.ReasonRateLimited:      http.StatusTooManyRequests,
	auth.ReasonUnauthenticated:  http.StatusUnauthorized,
	auth.ReasonPermissionDenied: http.StatusForbidden,
	ReasonStoreUnavailable:      http.StatusServiceUnavailable,
	ReasonShuttingDown:          http.StatusServiceUnavailable,
}

// HTTPStatus is the HTTP status the API answers err with.
func HTTPStatus(err error) int {
	st := status.Convert(err)
	return httpStatusOf(reasonOf(st), st.Code())
}

// httpStatusOf is the HTTP status of a refusal with this reason and code.
func httpStatusOf(reason string, code codes.Code) int {
	if s, ok := httpStatusByReason[reason]; ok {
		return s
	}
	return runtime.HTTPStatusFromCode(code)
}

// retryDelay is the wait a refusal's google.rpc.RetryInfo asks for, or 0.
func retryDelay(st *status.Status) time.Duration {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.RetryInfo); ok {
			return info.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

func reasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// httpErrorBody is the JSON body of every error over HTTP.
type httpErrorBody struct {
	// Code is the gRPC status code, Status its name.
	Code   int32  `json:"code"`
	Status string `json:"status"`
	// Message is for people; Reason (the ErrorInfo reason) is for code.
	Message string `json:"message"`
	Reason  string `json:"reason,omitempty"`
	// Details are the status details (google.rpc.ErrorInfo, BadRequest),
	// each with its "@type".
	Details []json.RawMessage `json:"details"`
}

// errorBody turns a google.rpc.Status into the error body.
func errorBody(s *spb.Status) httpErrorBody {
	st := status.FromProto(s)
	body := httpErrorBody{Code: s.GetCode(), Status: codes.Code(s.GetCode()).String(), Message: s.GetMessage(),
		Reason: reasonOf(st), Details: []json.RawMessage{}}
	for _, d := range s.GetDetails() {
		if b, err := protojson.Marshal(d); err == nil {
			body.Details = append(body.Details, b)
		}
	}
	return body
}

// rewriteResponse replaces the gateway's error message (a google.rpc.Status)
// by the error body; other responses pass unchanged.
func rewriteResponse(_ context.Context, resp proto.Message) (any, error) {
	if s, ok := resp.(*spb.Status); ok {
		return errorBody(s), nil
	}
	return resp, nil
}

// httpError answers an error with the status its reason calls for.
func httpError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	var hs *runtime.HTTPStatusError
	if !errors.As(err, &hs) {
		st := status.Convert(err)
		if wait := retryDelay(st); wait > 0 {
			w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(wait.Seconds())), 10))
		}
		var limit int64
		if rest, over := strings.CutPrefix(st.Message(), bodyTooLarge); over && st.Code() == codes.InvalidArgument && reasonOf(st) == "" &&
			scanLimit(rest, &limit) {
			err = bodyOverLimit(limit)
		} else if st.Message() == errBodyTooSlow.Error() && st.Code() == codes.InvalidArgument && reasonOf(st) == "" {
			err = bodyTooSlow()
		} else {
			err = gatewayRefusal(err)
			err = &runtime.HTTPStatusError{HTTPStatus: HTTPStatus(err), Err: err}
		}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// bodyOverLimit is the refusal of a request body larger than limit bytes:
// 413, InvalidArgument naming body. Built only when sent: an ErrorInfo is
// marshalled into the status, which every request would otherwise pay for.
func bodyOverLimit(limit int64) error {
	return &runtime.HTTPStatusError{HTTPStatus: http.StatusRequestEntityTooLarge,
		Err: invalidArgument("body", "larger than "+strconv.FormatInt(limit, 10)+" bytes")}
}

// scanLimit reads the limit out of what follows bodyTooLarge in
// fieldDecoder's refusal.
func scanLimit(rest string, limit *int64) bool {
	_, err := fmt.Sscanf(rest, " %d bytes", limit)
	return err == nil
}

// routingErrors answers a request no route takes with the reason
// NO_SUCH_ROUTE: NotFound for a path the API does not have (404),
// Unimplemented for a method its path does not take (405, with the Allow
// header naming the methods it does take), each with the HTTP status
// grpc-gateway chose. A path it could not read is InvalidArgument naming
// "path".
func routingErrors(routes map[string]apiRoute) runtime.RoutingErrorHandlerFunc {
	return func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, code int) {
		if code == http.StatusMethodNotAllowed {
			if allow := allowedMethods(routes, r); len(allow) > 0 {
				w.Header().Set("Allow", strings.Join(allow, ", "))
			}
		}
		routingError(ctx, mux, m, w, r, code)
	}
}

// routingError is routingErrors' answer, without the Allow header.
func routingError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, code int) {
	var err error
	switch code {
	case http.StatusMethodNotAllowed:
		err = rpcerr.Info(codes.Unimplemented, "no such route: the path does not take this method", ReasonNoSuchRoute)
	case http.StatusBadRequest:
		err = invalidArgument("path", "could not be read")
	default:
		err = rpcerr.Info(codes.NotFound, "no such route: "+http.StatusText(code), ReasonNoSuchRoute)
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, &runtime.HTTPStatusError{HTTPStatus: code, Err: err})
}

// gatewayField finds the field a refusal of grpc-gateway's own names: "missing
// parameter pool_id", "type mismatch, parameter: pool.id, ...", protojson's
// `unknown field "surprise"`, a query's `parsing field "limit"`. Only
// characters of a field name are taken from the request.
var gatewayField = regexp.MustCompile(`(?:parameter:? |field )"?([A-Za-z_][A-Za-z0-9_.]{0,63})"?`)

// timeoutHeader sets an HTTP call's deadline, as grpc-timeout does a gRPC
// call's; grpc-gateway refuses a value it cannot read with a message that
// begins with badTimeoutPrefix.
const (
	timeoutHeader    = "Grpc-Timeout"
	badTimeoutPrefix = "invalid grpc-timeout:"
)

// gatewayRefusal gives the InvalidArgument grpc-gateway answers by itself,
// before any call (a body that is not JSON of the call's message, an unknown
// field, a path or query parameter of the wrong type), the ErrorInfo reason
// and field violation every other InvalidArgument of the API carries: the
// field it names, else "body"; an unreadable Grpc-Timeout header names the
// header. Other errors pass unchanged.
func gatewayRefusal(err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument || reasonOf(st) != "" {
		return err
	}
	if strings.HasPrefix(st.Message(), badTimeoutPrefix) {
		// Not echoed: the header is the caller's, up to net/http's bound.
		return invalidArgument(timeoutHeader, `must be a whole number and a unit (H, M, S, m, u or n), as "2S"`)
	}
	field := "body"
	if rest, ok := strings.CutPrefix(st.Message(), bodyFieldPrefix+" "); ok {
		// fieldDecoder's refusal: `body field "hold_for": what is wrong`.
		if name, err := strconv.QuotedPrefix(rest); err == nil {
			field, _ = strconv.Unquote(name)
			return invalidArgument(field, strings.TrimPrefix(rest[len(name):], ": "))
		}
	}
	msg := st.Message()
	if rest, ok := strings.CutPrefix(msg, "proto:"); ok { // then a space, or protobuf's deliberately random U+00A0
		msg = strings.TrimLeft(rest, " \u00a0")
	}
	if m := gatewayField.FindStringSubmatch(msg); m != nil {
		field = snakeCase(m[1])
		// protojson's position says no more than the field's name does.
		msg = protojsonAt.ReplaceAllLiteralString(msg, "")
	}
	return invalidArgument(field, msg)
}

// snakeCase turns protojson's JSON name of a field (userId) into the proto
// name the API's answers and documents use (user_id); a proto name stays.
func snakeCase(name string) string {
	var b strings.Builder
	for _, r := range name {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// headerMatcher forwards Idempotency-Key as the "idempotency-key" metadata,
// and the other headers as grpc-gateway does by default (Authorization as
// "authorization", the permanent HTTP headers under "grpcgateway-").
func headerMatcher(key string) (string, bool) {
	if textproto.CanonicalMIMEHeaderKey(key) == "Idempotency-Key" {
		return IdempotencyKeyHeader, true
	}
	return runtime.DefaultHeaderMatcher(key)
}

// idempotencyKey returns the request id a call names in its field v or, when
// that is empty, in its "idempotency-key" metadata; both given must agree.
func idempotencyKey(ctx context.Context, field, v string) (string, error) {
	keys := metadata.ValueFromIncomingContext(ctx, IdempotencyKeyHeader)
	if len(keys) == 0 {
		return v, nil
	}
	if len(keys) > 1 {
		return "", invalidArgument(field, "more than one Idempotency-Key")
	}
	if v != "" && v != keys[0] {
		return "", invalidArgument(field, "differs from the Idempotency-Key header; send one or the other, or the same")
	}
	return keys[0], nil
}

// inProcess is a gRPC server with the public one's services and
// interceptors, served on an in-memory listener, and the connection to it:
// the HTTP/JSON API's admin and prize calls, and the web console's, go
// through it, so every rule of the gRPC API holds for them too. It has no
// transport security: its connection never leaves the process.
type inProcess struct {
	inner *grpc.Server
	lis   *bufconn.Listener
	conn  *grpc.ClientConn
	log   *slog.Logger
}

func newInProcess(inner *grpc.Server, log *slog.Logger) (*inProcess, error) {
	ip := &inProcess{inner: inner, lis: bufconn.Listen(1 << 20), log: log}
	opts := append(inProcessDialOptions(),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ip.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgBytes)))
	conn, err := grpc.NewClient("passthrough:///in-process", opts...)
	if err != nil {
		return nil, fmt.Errorf("in-process connection: %w", err)
	}
	ip.conn = conn
	return ip, nil
}

// part serves the in-process server; it stops after the listeners that
// use it (it is started before them).
func (ip *inProcess) part() part {
	return part{"in-process grpc",
		func(context.Context) error {
			go func() {
				if err := ip.inner.Serve(ip.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
					ip.log.Error("in-process grpc server stopped", "err", err)
				}
			}()
			return nil
		},
		func(context.Context) {
			ip.inner.GracefulStop()
			_ = ip.conn.Close()
		}}
}

// gateway is the HTTP/JSON API's handler.
type gateway struct {
	handler http.Handler
}

// newGateway returns the HTTP/JSON API: admin and prize calls go over conn
// (the in-process connection); ClaimService, the hot path, is called
// directly on claims with the unary interceptors in order (directClaims).
func newGateway(conn *grpc.ClientConn, claims dispenserv1.ClaimServiceServer, unary []grpc.UnaryServerInterceptor,
	maxImportBytes int64, bodyTimeout time.Duration,
) (*gateway, error) {
	gw := &gateway{}
	jsonpb := apiMarshaler{&runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{},
	}}
	routes, err := apiRoutes()
	if err != nil {
		return nil, err
	}
	var mux *runtime.ServeMux
	mux = runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, jsonpb),
		runtime.WithErrorHandler(httpError),
		runtime.WithIncomingHeaderMatcher(headerMatcher),
		runtime.WithForwardResponseRewriter(rewriteResponse),
		runtime.WithRoutingErrorHandler(routingErrors(routes)),
		runtime.WithStreamErrorHandler(func(_ context.Context, err error) *status.Status {
			return status.Convert(gatewayRefusal(err))
		}),
		// A path is split into segments before they are unescaped, so an id
		// holding '/' (percent-encoded) stays one segment and reaches its
		// claim; grpc-gateway's default unescapes the whole path first.
		runtime.WithUnescapingMode(runtime.UnescapingModeAllExceptReserved),
		// No X-HTTP-Method-Override on form posts: the API's methods are
		// the ones its OpenAPI document names, nothing else.
		runtime.WithDisablePathLengthFallback(),
		runtime.WithMiddlewares(checkRoutes(routes, &mux)),
	)
	ctx := context.Background()
	direct := directClaims{srv: claims, chain: chainUnary(unary)}
	if err := dispenserv1.RegisterClaimServiceHandlerServer(ctx, mux, direct); err != nil {
		return nil, err
	}
	admin := dispenserv1.NewAdminServiceClient(conn)
	if err := dispenserv1.RegisterAdminServiceHandlerClient(ctx, mux, admin); err != nil {
		return nil, err
	}
	if err := dispenserv1.RegisterPrizeServiceHandlerClient(ctx, mux, dispenserv1.NewPrizeServiceClient(conn)); err != nil {
		return nil, err
	}
	if err := mux.HandlePath(http.MethodPost, "/v1/pools/{pool_id}/imports", importUpload(mux, jsonpb, admin)); err != nil {
		return nil, err
	}
	if err := mux.HandlePath(http.MethodGet, "/openapi.json", func(w http.ResponseWriter, _ *http.Request, _ map[string]string) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openapi.JSON)
	}); err != nil {
		return nil, err
	}
	gw.handler = limitBodies(mux, jsonpb, maxImportBytes, bodyTimeout)
	return gw, nil
}

// apiMarshaler is grpc-gateway's JSON marshaler, but for the error chunk of
// a streaming call ({"error": <google.rpc.Status>}), whose status becomes
// the API's error body ({"error": {"code", "status", "message", "reason",
// "details"}}); streamErrors makes it the whole answer of a stream that
// fails before its first message.
type apiMarshaler struct{ *runtime.JSONPb }

func (m apiMarshaler) Marshal(v any) ([]byte, error) {
	if chunk, ok := v.(map[string]proto.Message); ok && len(chunk) == 1 {
		if s, ok := chunk["error"].(*spb.Status); ok {
			return json.Marshal(map[string]httpErrorBody{"error": errorBody(s)})
		}
	}
	return m.JSONPb.Marshal(v)
}

// isStreamPath reports whether p is a streaming call's: the export or the
// generation of codes.
func isStreamPath(p string) bool {
	return strings.HasPrefix(p, "/v1/pools/") &&
		(strings.HasSuffix(p, "/claims:export") || strings.HasSuffix(p, "/codes:generate"))
}

// streamErrors answers a streaming call that fails before its first message
// as every other call fails: the error body alone, with the HTTP status of
// its reason. grpc-gateway writes the status it chose and the error as a
// stream's chunk; the writer holds both back and writes the chunk's body
// instead. A stream that has begun is passed through as it is.
type streamErrors struct {
	http.ResponseWriter
	began, failed bool
	code          int
	held          bytes.Buffer
}

// maxHeldError bounds what a failed stream's answer may hold.
const maxHeldError = 64 << 10

func (w *streamErrors) WriteHeader(code int) {
	if !w.began && code >= http.StatusBadRequest {
		w.failed, w.code = true, code
		return
	}
	w.began = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *streamErrors) Write(b []byte) (int, error) {
	if w.failed {
		if w.held.Len()+len(b) > maxHeldError {
			return 0, errors.New("error answer too large")
		}
		return w.held.Write(b)
	}
	w.began = true
	return w.ResponseWriter.Write(b)
}

// Flush sends what the stream wrote so far, unless it is a held error.
func (w *streamErrors) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok && !w.failed {
		f.Flush()
	}
}

// finish writes a held error as the error body.
func (w *streamErrors) finish() {
	if !w.failed {
		return
	}
	var chunk struct {
		Error httpErrorBody `json:"error"`
	}
	code := w.code
	out := w.held.Bytes()
	if json.Unmarshal(bytes.TrimSpace(out), &chunk) == nil && chunk.Error.Status != "" {
		code = httpStatusOf(chunk.Error.Reason, codes.Code(chunk.Error.Code))
		if b, err := json.Marshal(chunk.Error); err == nil {
			out = b
		}
	}
	w.Header().Del("Transfer-Encoding")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.ResponseWriter.WriteHeader(code)
	_, _ = w.ResponseWriter.Write(out)
}

// limitBodies bounds request bodies: JSON calls to maxJSONBodyBytes, the
// import upload to maxImport. A larger declared body is refused with 413
// before it is read, an encoded one (Content-Encoding) with 415, and a JSON
// body that does not arrive within bodyTimeout with 408. A HEAD request is
// served as its GET.
func limitBodies(next *runtime.ServeMux, m runtime.Marshaler, maxImport int64, bodyTimeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			// HEAD is GET without the body (RFC 9110): the route answers
			// as to GET, and net/http drops what it writes after the
			// header, since the request it answers is still the HEAD.
			get := *r
			get.Method = http.MethodGet
			r = &get
		}
		limit := int64(maxJSONBodyBytes)
		isImport := r.Method == http.MethodPost && isImportPath(r.URL.Path)
		if isImport {
			limit = maxImport
		}
		refuse := func(err error) { runtime.DefaultHTTPErrorHandler(r.Context(), next, m, w, r, err) }
		if r.ContentLength > limit {
			refuse(bodyOverLimit(limit))
			return
		}
		// A compressed body would be read as if it were not; say so instead.
		if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
			refuse(&runtime.HTTPStatusError{HTTPStatus: http.StatusUnsupportedMediaType,
				Err: invalidArgument("body", "is encoded (Content-Encoding); send it as it is")})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		if !isImport && r.Body != http.NoBody && r.ContentLength != 0 {
			r.Body = timedBody(w, r.Body, bodyTimeout)
		}
		if isStreamPath(r.URL.Path) {
			sw := &streamErrors{ResponseWriter: w}
			next.ServeHTTP(sw, r)
			sw.finish()
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isImportPath matches /v1/pools/{pool_id}/imports.
func isImportPath(p string) bool {
	id, ok := strings.CutPrefix(p, "/v1/pools/")
	id, isImport := strings.CutSuffix(id, "/imports")
	return ok && isImport && id != ""
}

// importUpload is POST /v1/pools/{pool_id}/imports: the body is the file
// itself (lines, or CSV with ?format=csv), streamed into ImportCodes as it
// arrives; ?strict=true refuses the whole file on any invalid line, and
// ?source_name= names it. The answer is the import summary.
func importUpload(mux *runtime.ServeMux, m runtime.Marshaler, admin dispenserv1.AdminServiceClient) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		fail := func(ctx context.Context, err error) { runtime.HTTPError(ctx, mux, m, w, r, err) }
		q := r.URL.Query()
		opts := &dispenserv1.ImportOptions{PoolId: params["pool_id"], SourceName: q.Get("source_name")}
		switch q.Get("format") {
		case "", "lines":
			opts.Format = dispenserv1.ImportFormat_IMPORT_FORMAT_LINES
		case "csv":
			opts.Format = dispenserv1.ImportFormat_IMPORT_FORMAT_CSV
		default:
			fail(r.Context(), invalidArgument("format", `must be "lines" or "csv"`))
			return
		}
		if s := q.Get("strict"); s != "" {
			strict, err := strconv.ParseBool(s)
			if err != nil {
				fail(r.Context(), invalidArgument("strict", "must be true or false"))
				return
			}
			opts.Strict = strict
		}
		ctx, err := runtime.AnnotateContext(r.Context(), mux, r, "/dispenser.v1.AdminService/ImportCodes",
			runtime.WithHTTPPathPattern("/v1/pools/{pool_id}/imports"))
		if err != nil {
			fail(r.Context(), err)
			return
		}
		resp, err := upload.Import(ctx, admin, opts, r.Body, upload.NoProgress{})
		var readErr *upload.ReadError
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			fail(r.Context(), bodyOverLimit(tooBig.Limit))
			return
		case errors.As(err, &readErr):
			fail(r.Context(), status.Error(codes.Canceled, "the upload was cut short; nothing was imported"))
			return
		case err != nil:
			fail(ctx, err)
			return
		}
		b, err := m.Marshal(resp)
		if err != nil {
			fail(ctx, err)
			return
		}
		w.Header().Set("Content-Type", m.ContentType(resp))
		_, _ = w.Write(b)
	}
}

// httpServer returns the HTTP server of the API: header and idle timeouts
// bound slow clients.
func httpServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 64 << 10, ConnContext: httpConnContext}
}
