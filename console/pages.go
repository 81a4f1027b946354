package console

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/dispenserhq/dispenser/internal/upload"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// pageNames are the templates/<name>.html files; each defines "content"
// and may define fragments that polls fetch alone.
var pageNames = []string{"login", "pools", "pool", "claims", "prizes", "keys", "health"}

var funcs = template.FuncMap{
	"when": func(ts *timestamppb.Timestamp) string {
		if ts == nil {
			return "—"
		}
		return ts.AsTime().UTC().Format("2006-01-02 15:04:05Z")
	},
	"dur": func(d *durationpb.Duration) string {
		if d == nil {
			return "—"
		}
		return d.AsDuration().Round(time.Millisecond).String()
	},
	"seconds": func(d *durationpb.Duration) int64 { return int64(d.AsDuration().Seconds()) },
	"window": func(ts *timestamppb.Timestamp) string {
		if ts == nil {
			return ""
		}
		return ts.AsTime().UTC().Format(windowLayout)
	},
	"count": groupDigits,
	"rate":  func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
	"pct":   func(f float64) string { return strconv.FormatFloat(f, 'f', 0, 64) + "%" },
	"prizeState": func(s dispenserv1.PrizeState) string {
		return strings.ToLower(strings.TrimPrefix(s.String(), "PRIZE_STATE_"))
	},
	"keyRole": func(r dispenserv1.KeyRole) string {
		return strings.ToLower(strings.TrimPrefix(r.String(), "KEY_ROLE_"))
	},
	"join": strings.Join,
}

func parsePages() (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// groupDigits writes n with thousands separators.
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// view is what every template gets.
type view struct {
	Page  string
	Q     *request
	Flash string
	Error string
	Data  map[string]any
}

// render executes a page (layout and content), or one of its fragments
// when fragment is set.
func (c *Console) renderView(w http.ResponseWriter, code int, page, fragment string, v view) {
	t := c.pages[page]
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	var buf strings.Builder
	name := "layout"
	if fragment != "" {
		name = fragment
	}
	if err := t.ExecuteTemplate(&buf, name, v); err != nil {
		c.log.Error("console template", "page", page, "err", err)
		http.Error(w, "the page could not be drawn", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(code)
	_, _ = io.WriteString(w, buf.String())
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, code int, page string, q *request, data map[string]any) {
	v := view{Page: page, Q: q, Data: data, Flash: flashText[r.URL.Query().Get("done")]}
	if e, ok := data["Error"].(string); ok {
		v.Error = e
	}
	c.renderView(w, code, page, "", v)
}

func (c *Console) fragment(w http.ResponseWriter, page, name string, q *request, data map[string]any) {
	c.renderView(w, http.StatusOK, page, name, view{Page: page, Q: q, Data: data})
}

// flashText is what a redirect after a change says (?done=...): a fixed
// set, so nothing a caller writes into a URL is echoed.
var flashText = map[string]string{
	"created": "Pool created.", "saved": "Settings saved.", "paused": "Pool paused: claims are refused with POOL_PAUSED.",
	"resumed": "Pool resumed.", "retried": "Delivery queued again.", "cancelled": "Prize cancelled.",
	"revoked": "Key revoked (within the servers' key cache time, 5 s).",
}

// errorText is what a page shows of a failed call: the status message
// (which never holds a code) and its reason.
func errorText(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() != "" {
			return st.Message() + " (" + info.GetReason() + ")"
		}
	}
	return st.Message()
}

// httpCode is the status a page answers a failed call with.
func httpCode(err error) int {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func (c *Console) call(r *http.Request, q *request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(q.ctx(r.Context()), c.cfg.CallTimeout)
}

func seeOther(w http.ResponseWriter, r *http.Request, path, done string) {
	http.Redirect(w, r, path+"?done="+url.QueryEscape(done), http.StatusSeeOther)
}

// ---- Pools ----

// poolRow is one pool with its levels and live figures.
type poolRow struct {
	Pool     *dispenserv1.Pool
	Stats    *dispenserv1.PoolStats
	StatsErr string
	Live     live
}

// maxListedPools bounds what one pools page reads (and polls).
const maxListedPools = 100

// poolRows reads the pools and their stats, and samples them for the live
// figures.
func (c *Console) poolRows(r *http.Request, q *request, only string) ([]poolRow, error) {
	ctx, cancel := c.call(r, q)
	defer cancel()
	var pools []*dispenserv1.Pool
	if only != "" {
		p, err := c.admin.GetPool(ctx, &dispenserv1.GetPoolRequest{PoolId: only})
		if err != nil {
			return nil, err
		}
		pools = []*dispenserv1.Pool{p.GetPool()}
	} else {
		resp, err := c.admin.ListPools(ctx, &dispenserv1.ListPoolsRequest{PageSize: maxListedPools})
		if err != nil {
			return nil, err
		}
		pools = resp.GetPools()
	}
	paths := map[string]map[string]int64{}
	if h, err := c.admin.GetHealth(ctx, &dispenserv1.GetHealthRequest{}); err == nil {
		for _, pc := range h.GetClaimPaths() {
			if paths[pc.GetPoolId()] == nil {
				paths[pc.GetPoolId()] = map[string]int64{}
			}
			paths[pc.GetPoolId()][pc.GetPath()] = pc.GetClaimed()
		}
	}
	rows := make([]poolRow, 0, len(pools))
	for _, p := range pools {
		row := poolRow{Pool: p}
		st, err := c.stats.get(ctx, p.GetId(), func(ctx context.Context) (*dispenserv1.PoolStats, error) {
			resp, err := c.admin.GetPoolStats(ctx, &dispenserv1.GetPoolStatsRequest{PoolId: p.GetId()})
			return resp.GetStats(), err
		})
		if err != nil {
			row.StatsErr = errorText(err)
		} else {
			row.Stats = st
			// Stamped with when Postgres counted, so that a cached answer
			// read twice is one sample.
			at := time.Now()
			if st.GetReadTime() != nil {
				at = st.GetReadTime().AsTime()
			}
			c.tracker.add(p.GetId(), sample{at: at, claimed: row.Stats.GetClaimed(), paths: paths[p.GetId()]})
		}
		row.Live = c.tracker.live(p.GetId())
		rows = append(rows, row)
	}
	return rows, nil
}

func (c *Console) poolsPage(w http.ResponseWriter, r *http.Request, q *request) {
	rows, err := c.poolRows(r, q, "")
	data := map[string]any{"Rows": rows}
	if err != nil {
		data["Error"] = errorText(err)
	}
	c.render(w, r, http.StatusOK, "pools", q, data)
}

func (c *Console) poolsRows(w http.ResponseWriter, r *http.Request, q *request) {
	rows, err := c.poolRows(r, q, "")
	data := map[string]any{"Rows": rows}
	if err != nil {
		data["RowsError"] = errorText(err)
	}
	c.fragment(w, "pools", "rows", q, data)
}

// windowLayout is how the settings form writes a claim window's ends: a
// datetime-local input, read as UTC.
const windowLayout = "2006-01-02T15:04"

// poolForm reads the pool settings of a create or edit form; mask lists
// the fields it set.
func poolForm(r *http.Request) (*dispenserv1.Pool, []string, error) {
	p := &dispenserv1.Pool{Id: strings.TrimSpace(r.PostFormValue("id")), DisplayName: r.PostFormValue("display_name")}
	mask := []string{"display_name"}
	ints := []struct {
		field string
		set   func(int32)
	}{
		{"per_user_limit", func(v int32) { p.PerUserLimit = v }},
		{"refill_low_water", func(v int32) { p.RefillLowWater = v }},
		{"refill_batch_size", func(v int32) { p.RefillBatchSize = v }},
		{"redis_shards", func(v int32) { p.RedisShards = v }},
		{"holds_per_user", func(v int32) { p.HoldsPerUser = v }},
	}
	for _, f := range ints {
		s := strings.TrimSpace(r.PostFormValue(f.field))
		if s == "" {
			continue
		}
		v, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: must be a whole number", f.field)
		}
		f.set(int32(v))
		mask = append(mask, f.field)
	}
	for _, f := range []struct {
		field string
		set   func(*durationpb.Duration)
	}{
		{"hold_default", func(d *durationpb.Duration) { p.HoldDefault = d }},
		{"hold_max", func(d *durationpb.Duration) { p.HoldMax = d }},
	} {
		s := strings.TrimSpace(r.PostFormValue(f.field))
		if s == "" {
			continue
		}
		v, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: must be whole seconds", f.field)
		}
		f.set(durationpb.New(time.Duration(v) * time.Second))
		mask = append(mask, f.field)
	}
	for _, f := range []struct {
		field string
		set   func(*timestamppb.Timestamp)
	}{
		{"claim_starts_at", func(ts *timestamppb.Timestamp) { p.ClaimStartsAt = ts }},
		{"claim_ends_at", func(ts *timestamppb.Timestamp) { p.ClaimEndsAt = ts }},
	} {
		if _, ok := r.PostForm[f.field]; !ok {
			continue
		}
		mask = append(mask, f.field)
		s := strings.TrimSpace(r.PostFormValue(f.field))
		if s == "" {
			continue // unset: the window has no such end
		}
		t, err := time.ParseInLocation(windowLayout, s, time.UTC)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: must be a UTC date and time (%s)", f.field, windowLayout)
		}
		f.set(timestamppb.New(t))
	}
	if _, ok := r.PostForm["webhook_url"]; ok {
		p.WebhookUrl = strings.TrimSpace(r.PostFormValue("webhook_url"))
		mask = append(mask, "webhook_url")
	}
	return p, mask, nil
}

func (c *Console) createPool(w http.ResponseWriter, r *http.Request, q *request) {
	p, _, err := poolForm(r)
	if err == nil {
		ctx, cancel := c.call(r, q)
		defer cancel()
		_, err = c.admin.CreatePool(ctx, &dispenserv1.CreatePoolRequest{Pool: p})
		if err == nil {
			c.log.InfoContext(r.Context(), "console: pool created", "key", q.ID.KeyID, "pool", p.GetId())
			seeOther(w, r, "/pools/"+url.PathEscape(p.GetId()), "created")
			return
		}
	}
	rows, _ := c.poolRows(r, q, "")
	code := httpCode(err)
	if status.Code(err) == codes.Unknown {
		code = http.StatusBadRequest // a form field the console itself refused
	}
	c.render(w, r, code, "pools", q, map[string]any{"Rows": rows, "Error": errorText(err), "Form": p})
}

func (c *Console) poolPage(w http.ResponseWriter, r *http.Request, q *request) {
	c.renderPool(w, r, q, http.StatusOK, "")
}

func (c *Console) renderPool(w http.ResponseWriter, r *http.Request, q *request, code int, errText string) {
	rows, err := c.poolRows(r, q, r.PathValue("id"))
	if err != nil {
		c.render(w, r, httpCode(err), "pool", q, map[string]any{"Error": errorText(err)})
		return
	}
	data := map[string]any{"Row": rows[0], "MaxImportBytes": c.cfg.MaxImportBytes}
	if errText != "" {
		data["Error"] = errText
	}
	c.render(w, r, code, "pool", q, data)
}

func (c *Console) poolLive(w http.ResponseWriter, r *http.Request, q *request) {
	rows, err := c.poolRows(r, q, r.PathValue("id"))
	data := map[string]any{}
	if err != nil {
		data["RowsError"] = errorText(err)
	} else {
		data["Row"] = rows[0]
	}
	c.fragment(w, "pool", "live", q, data)
}

func (c *Console) updatePool(w http.ResponseWriter, r *http.Request, q *request) {
	p, mask, err := poolForm(r)
	if err == nil {
		p.Id = r.PathValue("id")
		ctx, cancel := c.call(r, q)
		defer cancel()
		_, err = c.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{Pool: p, UpdateMask: &fieldmaskpb.FieldMask{Paths: mask}})
		if err == nil {
			c.log.InfoContext(r.Context(), "console: pool settings changed", "key", q.ID.KeyID, "pool", p.GetId(), "fields", mask)
			seeOther(w, r, "/pools/"+url.PathEscape(p.GetId()), "saved")
			return
		}
	}
	code := httpCode(err)
	if status.Code(err) == codes.Unknown {
		code = http.StatusBadRequest
	}
	c.renderPool(w, r, q, code, errorText(err))
}

func (c *Console) pausePool(pause bool) func(http.ResponseWriter, *http.Request, *request) {
	return func(w http.ResponseWriter, r *http.Request, q *request) {
		id := r.PathValue("id")
		ctx, cancel := c.call(r, q)
		defer cancel()
		_, err := c.admin.UpdatePool(ctx, &dispenserv1.UpdatePoolRequest{Pool: &dispenserv1.Pool{Id: id, Paused: pause},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"paused"}}})
		if err != nil {
			c.renderPool(w, r, q, httpCode(err), errorText(err))
			return
		}
		c.log.InfoContext(r.Context(), "console: pool paused or resumed", "key", q.ID.KeyID, "pool", id, "paused", pause)
		done := "resumed"
		if pause {
			done = "paused"
		}
		seeOther(w, r, "/pools/"+url.PathEscape(id), done)
	}
}

// importFile streams the request body (the file itself, sent by
// console.js so that the browser can show the upload's progress) into
// ImportCodes, and answers the summary as a fragment: counts and invalid
// lines by number and reason, never their text.
func (c *Console) importFile(w http.ResponseWriter, r *http.Request, q *request) {
	fail := func(code int, msg string) {
		c.renderView(w, code, "pool", "import-result", view{Page: "pool", Q: q, Error: msg})
	}
	if r.ContentLength > c.cfg.MaxImportBytes {
		fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("the file is larger than %s bytes", groupDigits(c.cfg.MaxImportBytes)))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, c.cfg.MaxImportBytes)
	qs := r.URL.Query()
	opts := &dispenserv1.ImportOptions{PoolId: r.PathValue("id"), Format: dispenserv1.ImportFormat_IMPORT_FORMAT_LINES,
		Strict: qs.Get("strict") == "true", SourceName: qs.Get("source_name")}
	if qs.Get("format") == "csv" {
		opts.Format = dispenserv1.ImportFormat_IMPORT_FORMAT_CSV
	}
	resp, err := upload.Import(q.ctx(r.Context()), c.admin, opts, r.Body, upload.NoProgress{})
	var readErr *upload.ReadError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("the file is larger than %s bytes; nothing was imported", groupDigits(tooBig.Limit)))
		return
	case errors.As(err, &readErr):
		fail(http.StatusBadRequest, "the upload was cut short; nothing was imported")
		return
	case err != nil:
		fail(httpCode(err), errorText(err))
		return
	}
	c.log.InfoContext(r.Context(), "console: import", "key", q.ID.KeyID, "pool", opts.GetPoolId(),
		"import", resp.GetImportId(), "inserted", resp.GetInserted())
	c.renderView(w, http.StatusOK, "pool", "import-result", view{Page: "pool", Q: q,
		Data: map[string]any{"Summary": resp}})
}

// ---- Claims ----

// claimsPage looks claims up by request id or user id. Codes are never
// put in the page: an admin reveals one at a time (reveal).
func (c *Console) claimsPage(w http.ResponseWriter, r *http.Request, q *request) {
	qs := r.URL.Query()
	pool, requestID, userID := strings.TrimSpace(qs.Get("pool")), strings.TrimSpace(qs.Get("request_id")), strings.TrimSpace(qs.Get("user_id"))
	data := map[string]any{"Pool": pool, "RequestID": requestID, "UserID": userID}
	code := http.StatusOK
	if pool != "" && (requestID != "" || userID != "") {
		ctx, cancel := c.call(r, q)
		defer cancel()
		var claims []*dispenserv1.Claim
		var err error
		if requestID != "" {
			var resp *dispenserv1.GetClaimResponse
			resp, err = c.claims.GetClaim(ctx, &dispenserv1.GetClaimRequest{PoolId: pool, RequestId: requestID, UserId: userID})
			if err == nil {
				claims = []*dispenserv1.Claim{resp.GetClaim()}
			}
		} else {
			var resp *dispenserv1.ListUserClaimsResponse
			resp, err = c.claims.ListUserClaims(ctx, &dispenserv1.ListUserClaimsRequest{PoolId: pool, UserId: userID})
			claims = resp.GetClaims()
		}
		if err != nil {
			code = httpCode(err)
			data["Error"] = errorText(err)
		}
		for _, cl := range claims {
			cl.Code = "" // the page shows no code; reveal fetches one
		}
		data["Claims"] = claims
		data["Searched"] = true
	}
	c.render(w, r, code, "claims", q, data)
}

// reveal shows one claim's code to an admin, and logs who saw which claim
// (never the code).
func (c *Console) reveal(w http.ResponseWriter, r *http.Request, q *request) {
	if !q.Admin() {
		http.Error(w, "only admins may reveal codes", http.StatusForbidden)
		return
	}
	pool, requestID, prizeID := r.PostFormValue("pool"), r.PostFormValue("request_id"), r.PostFormValue("prize_id")
	ctx, cancel := c.call(r, q)
	defer cancel()
	var code string
	var err error
	switch {
	case requestID != "":
		var resp *dispenserv1.GetClaimResponse
		resp, err = c.claims.GetClaim(ctx, &dispenserv1.GetClaimRequest{PoolId: pool, RequestId: requestID})
		code = resp.GetClaim().GetCode()
	case prizeID != "":
		var resp *dispenserv1.GetPrizeResponse
		resp, err = c.prizes.GetPrize(ctx, &dispenserv1.GetPrizeRequest{PrizeId: prizeID})
		code = resp.GetPrize().GetCode()
	default:
		err = status.Error(codes.InvalidArgument, "request_id or prize_id is required")
	}
	if err == nil && code == "" {
		err = status.Error(codes.NotFound, "no code to reveal")
	}
	if err != nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(httpCode(err))
		_, _ = io.WriteString(w, errorText(err))
		return
	}
	c.log.InfoContext(r.Context(), "console: code revealed", "key", q.ID.KeyID, "pool", pool,
		"request_id", requestID, "prize", prizeID)
	c.fragment(w, "claims", "revealed", q, map[string]any{"Code": code})
}

// ---- Prizes ----

var prizeStates = []dispenserv1.PrizeState{dispenserv1.PrizeState_PRIZE_STATE_FAILED, dispenserv1.PrizeState_PRIZE_STATE_PENDING,
	dispenserv1.PrizeState_PRIZE_STATE_READY, dispenserv1.PrizeState_PRIZE_STATE_ASSIGNED,
	dispenserv1.PrizeState_PRIZE_STATE_DELIVERED, dispenserv1.PrizeState_PRIZE_STATE_CANCELLED}

func (c *Console) prizesPage(w http.ResponseWriter, r *http.Request, q *request) {
	qs := r.URL.Query()
	c.renderPrizes(w, r, q, qs.Get("pool"), qs.Get("state"), nil)
}

// renderPrizes lists a pool's prizes in one state (parked ones, "failed",
// by default), with failed, the error of an action that was refused.
func (c *Console) renderPrizes(w http.ResponseWriter, r *http.Request, q *request, pool, stateName string, failed error) {
	pool = strings.TrimSpace(pool)
	state := dispenserv1.PrizeState_PRIZE_STATE_FAILED
	if v, ok := dispenserv1.PrizeState_value["PRIZE_STATE_"+strings.ToUpper(stateName)]; ok && stateName != "" {
		state = dispenserv1.PrizeState(v)
	}
	data := map[string]any{"States": prizeStates}
	code := http.StatusOK
	if failed != nil {
		code, data["Error"] = httpCode(failed), errorText(failed)
	}
	ctx, cancel := c.call(r, q)
	defer cancel()
	if pools, err := c.admin.ListPools(ctx, &dispenserv1.ListPoolsRequest{PageSize: maxListedPools}); err == nil {
		data["Pools"] = pools.GetPools()
		if pool == "" && len(pools.GetPools()) > 0 {
			pool = pools.GetPools()[0].GetId()
		}
	}
	data["Pool"], data["State"] = pool, state
	if pool != "" {
		resp, err := c.prizes.ListPrizes(ctx, &dispenserv1.ListPrizesRequest{PoolId: pool, State: state, PageSize: 100})
		if err != nil && failed == nil {
			code, data["Error"] = httpCode(err), errorText(err)
		}
		for _, p := range resp.GetPrizes() {
			p.Code = ""
		}
		data["Prizes"] = resp.GetPrizes()
	}
	c.render(w, r, code, "prizes", q, data)
}

func (c *Console) prizeAction(retry bool) func(http.ResponseWriter, *http.Request, *request) {
	return func(w http.ResponseWriter, r *http.Request, q *request) {
		id := r.PathValue("id")
		ctx, cancel := c.call(r, q)
		defer cancel()
		var err error
		done := "retried"
		if retry {
			_, err = c.prizes.RetryDelivery(ctx, &dispenserv1.RetryDeliveryRequest{PrizeId: id})
		} else {
			_, err = c.prizes.CancelPrize(ctx, &dispenserv1.CancelPrizeRequest{PrizeId: id})
			done = "cancelled"
		}
		pool, state := r.PostFormValue("pool"), r.PostFormValue("state")
		if err != nil {
			c.renderPrizes(w, r, q, pool, state, err)
			return
		}
		c.log.InfoContext(r.Context(), "console: prize "+done, "key", q.ID.KeyID, "prize", id)
		http.Redirect(w, r, "/prizes?pool="+url.QueryEscape(pool)+"&state="+url.QueryEscape(state)+"&done="+done, http.StatusSeeOther)
	}
}

// ---- Keys ----

func (c *Console) keysPage(w http.ResponseWriter, r *http.Request, q *request) {
	c.renderKeys(w, r, q, http.StatusOK, map[string]any{})
}

func (c *Console) renderKeys(w http.ResponseWriter, r *http.Request, q *request, code int, data map[string]any) {
	if q.Admin() {
		ctx, cancel := c.call(r, q)
		defer cancel()
		resp, err := c.admin.ListKeys(ctx, &dispenserv1.ListKeysRequest{})
		if err != nil {
			code, data["Error"] = httpCode(err), errorText(err)
		}
		data["Keys"] = resp.GetKeys()
	}
	c.render(w, r, code, "keys", q, data)
}

func (c *Console) createKey(w http.ResponseWriter, r *http.Request, q *request) {
	role := dispenserv1.KeyRole_KEY_ROLE_UNSPECIFIED
	if v, ok := dispenserv1.KeyRole_value["KEY_ROLE_"+strings.ToUpper(r.PostFormValue("role"))]; ok {
		role = dispenserv1.KeyRole(v)
	}
	k := &dispenserv1.ApiKey{Name: strings.TrimSpace(r.PostFormValue("name")), Role: role}
	for p := range strings.SplitSeq(r.PostFormValue("pools"), ",") {
		if p = strings.TrimSpace(p); p != "" {
			k.Pools = append(k.Pools, p)
		}
	}
	ctx, cancel := c.call(r, q)
	defer cancel()
	resp, err := c.admin.CreateKey(ctx, &dispenserv1.CreateKeyRequest{Key: k})
	if err != nil {
		c.renderKeys(w, r, q, httpCode(err), map[string]any{"Error": errorText(err)})
		return
	}
	c.log.InfoContext(r.Context(), "console: key created", "key", q.ID.KeyID, "new_key", resp.GetKey().GetId())
	// The secret is in this answer only: never in a URL, a log or a cache.
	c.renderKeys(w, r, q, http.StatusOK, map[string]any{"Created": resp})
}

func (c *Console) revokeKey(w http.ResponseWriter, r *http.Request, q *request) {
	ctx, cancel := c.call(r, q)
	defer cancel()
	id := r.PathValue("id")
	if _, err := c.admin.RevokeKey(ctx, &dispenserv1.RevokeKeyRequest{KeyId: id}); err != nil {
		c.renderKeys(w, r, q, httpCode(err), map[string]any{"Error": errorText(err)})
		return
	}
	c.log.InfoContext(r.Context(), "console: key revoked", "key", q.ID.KeyID, "revoked", id)
	seeOther(w, r, "/keys", "revoked")
}

// ---- Health ----

func (c *Console) health(r *http.Request, q *request) map[string]any {
	ctx, cancel := c.call(r, q)
	defer cancel()
	h, err := c.admin.GetHealth(ctx, &dispenserv1.GetHealthRequest{})
	if err != nil {
		return map[string]any{"HealthError": errorText(err)}
	}
	return map[string]any{"Health": h}
}

// jobNames are the jobs an admin may run from the health page.
var jobNames = map[string]dispenserv1.Job{
	"refill": dispenserv1.Job_JOB_REFILL, "reconcile": dispenserv1.Job_JOB_RECONCILE,
	"deliver": dispenserv1.Job_JOB_DELIVER, "expire-holds": dispenserv1.Job_JOB_EXPIRE_HOLDS,
}

// runJob runs a job now, on this replica, over every pool (RunJob), and
// shows what it did.
func (c *Console) runJob(w http.ResponseWriter, r *http.Request, q *request) {
	name := r.PathValue("job")
	job, ok := jobNames[name]
	data := c.health(r, q)
	if !ok {
		data["Error"] = "no such job"
		c.render(w, r, http.StatusNotFound, "health", q, data)
		return
	}
	ctx, cancel := context.WithTimeout(q.ctx(r.Context()), time.Minute)
	defer cancel()
	resp, err := c.admin.RunJob(ctx, &dispenserv1.RunJobRequest{Job: job})
	if err != nil {
		data["Error"] = errorText(err)
		c.render(w, r, httpCode(err), "health", q, data)
		return
	}
	c.log.InfoContext(r.Context(), "console: job run", "key", q.ID.KeyID, "job", name)
	data = c.health(r, q) // after the run
	data["Ran"], data["Reports"] = name, resp.GetPools()
	c.render(w, r, http.StatusOK, "health", q, data)
}

func (c *Console) healthPage(w http.ResponseWriter, r *http.Request, q *request) {
	c.render(w, r, http.StatusOK, "health", q, c.health(r, q))
}

func (c *Console) healthLive(w http.ResponseWriter, r *http.Request, q *request) {
	c.fragment(w, "health", "live", q, c.health(r, q))
}
