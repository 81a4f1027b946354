package console_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/dispenser"
	"github.com/dispenserhq/dispenser/internal/testdaemon"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// ScreenshotsEnv names a directory where TestConsoleEndToEnd writes a PNG of
// each page (`make console-screenshots` points it at docs/console); unset,
// they go to the test's temporary directory.
const ScreenshotsEnv = "DISPENSER_CONSOLE_SCREENSHOTS"

// lockedBuffer collects the daemon's JSON logs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// chromium starts Debian's Chromium, headless, with a fresh profile; the
// flags keep it off the network (this machine has none beyond loopback).
func chromium(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	require.NoError(t, err, "Chromium is missing: scripts/services.sh installs it (Debian package chromium)")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(1280, 900),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	require.NoError(t, chromedp.Do(ctx), "starting Chromium") // the browser lives as long as ctx
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelTimeout)
	return ctx
}

// eventually polls a JavaScript expression until it is true. Expressions
// read elements with ?. : a poll's swap may briefly leave one out.
func eventually(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(20*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))
}

// do runs steps in the browser.
func do(ctx context.Context, t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, steps...))
}

func textOf(ctx context.Context, t *testing.T, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	require.NoError(t, err)
	return strings.TrimSpace(s)
}

func count(ctx context.Context, t *testing.T, sel string) int {
	t.Helper()
	nodes, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll(sel), chromedp.AtLeast(0)))
	require.NoError(t, err)
	return len(nodes)
}

func pageHTML(ctx context.Context, t *testing.T) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	require.NoError(t, err)
	return s
}

func number(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.ReplaceAll(s, ",", ""), 10, 64)
	require.NoError(t, err, "number %q", s)
	return n
}

// shooter writes full-page screenshots.
type shooter struct {
	dir string
}

func (s shooter) shot(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(s.dir, name+".png"), png, 0o644))
}

// reason is the ErrorInfo reason of a gRPC error.
func reason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// The console in a real browser against a live dispenserd, Postgres and
// Redis: sign in, create a pool, import a file and see its counts, watch
// the levels move under a claim load, pause and see POOL_PAUSED from a
// claim, reveal a code as admin (and find the reveal in the log, with the
// key's id and without the code), retry a parked prize, look at keys and
// health, sign out; then as auditor, find no button that changes things.
func TestConsoleEndToEnd(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{}
	d := testdaemon.Run(t, func(c *dispenser.Config) {
		c.NoAuth = false
		c.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	})
	bg := context.Background()
	db, err := pgxpool.New(bg, d.DB.URL)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	keys := auth.NewStore(db)
	adminKey, admin, err := keys.Create(bg, auth.Key{Name: "on-call", Role: auth.Admin})
	require.NoError(t, err)
	_, auditor, err := keys.Create(bg, auth.Key{Name: "finance", Role: auth.Auditor})
	require.NoError(t, err)
	_, claimer, err := keys.Create(bg, auth.Key{Name: "lottery-backend", Role: auth.Claimer})
	require.NoError(t, err)
	conn, err := grpc.NewClient(d.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	as := func(key string) context.Context {
		return metadata.AppendToOutgoingContext(bg, "authorization", "Bearer "+key)
	}
	adminAPI, claimAPI, prizeAPI := dispenserv1.NewAdminServiceClient(conn), dispenserv1.NewClaimServiceClient(conn), dispenserv1.NewPrizeServiceClient(conn)

	shots := shooter{dir: os.Getenv(ScreenshotsEnv)}
	if shots.dir == "" {
		shots.dir = t.TempDir()
	}
	require.NoError(t, os.MkdirAll(shots.dir, 0o755))

	ctx := chromium(t)
	site := d.Console

	// Sign in.
	do(ctx, t, chromedp.Navigate(site+"/"), chromedp.WaitVisible(chromedp.ID("key")))
	shots.shot(ctx, t, "login")
	do(ctx, t,
		chromedp.SendKeys(chromedp.ID("key"), admin),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.ID("create-pool")))
	require.Contains(t, textOf(ctx, t, "#who"), adminKey.ID)

	// Create a pool.
	do(ctx, t,
		chromedp.SendKeys(chromedp.ID("new-pool-id"), "spring-sale"),
		chromedp.Click(chromedp.ID("create-pool-submit")),
		chromedp.WaitVisible(chromedp.ID("import")))
	require.Contains(t, textOf(ctx, t, "h1"), "spring-sale")

	// Import a file: 400 codes, one repeated line, two invalid lines.
	var file strings.Builder
	codes := map[string]bool{}
	for i := range 400 {
		c := fmt.Sprintf("SPRING-%04d-XQ7P", i)
		codes[c] = true
		file.WriteString(c + "\n")
	}
	file.WriteString("SPRING-0007-XQ7P\nab\n" + strings.Repeat("Z", 200) + "\n")
	path := filepath.Join(t.TempDir(), "spring.txt")
	require.NoError(t, os.WriteFile(path, []byte(file.String()), 0o600))
	do(ctx, t,
		chromedp.SetUploadFiles(chromedp.ID("import-file"), []string{path}),
		chromedp.Click(chromedp.ID("import-submit")),
		chromedp.WaitVisible(chromedp.ID("import-summary")))
	require.Equal(t, "400", textOf(ctx, t, "#import-inserted"))
	require.Equal(t, "2", textOf(ctx, t, "#import-invalid"))
	summary := textOf(ctx, t, "#import-result")
	require.NotContains(t, summary, "ZZZZ", "invalid lines are shown by number, never by their text")
	require.Contains(t, summary, "402")
	require.Contains(t, summary, "403") // the invalid lines, by number
	shots.shot(ctx, t, "pool-import")
	do(ctx, t, eventually(`document.querySelector("#level-available") && document.querySelector("#level-available").textContent.trim() === "400"`))

	// Levels move under a small claim load, through Redis.
	_, err = adminAPI.RunJob(as(admin), &dispenserv1.RunJobRequest{Job: dispenserv1.Job_JOB_REFILL, PoolId: "spring-sale"})
	require.NoError(t, err)
	loadCtx, stopLoad := context.WithCancel(bg)
	loadDone := make(chan struct{})
	var firstCode, firstUser string
	var mu sync.Mutex
	go func() {
		defer close(loadDone)
		for i := 0; loadCtx.Err() == nil && i < 300; i++ {
			user := fmt.Sprintf("user-%03d", i)
			resp, err := claimAPI.ClaimCode(as(claimer), &dispenserv1.ClaimCodeRequest{PoolId: "spring-sale", UserId: user, RequestId: "order-" + user})
			if err == nil && i == 0 {
				mu.Lock()
				firstCode, firstUser = resp.GetClaim().GetCode(), user
				mu.Unlock()
			}
			time.Sleep(40 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { stopLoad(); <-loadDone })
	do(ctx, t, eventually(`Number(document.querySelector("#level-claimed")?.textContent.replace(/,/g, "")) > 20`))
	before := number(t, textOf(ctx, t, "#level-claimed"))
	do(ctx, t, eventually(fmt.Sprintf(`Number(document.querySelector("#level-claimed")?.textContent.replace(/,/g, "")) > %d`, before)))
	do(ctx, t, eventually(`document.querySelector("#pool-live .rate") && document.querySelector("#pool-live .rate").textContent.trim() !== "…" && Number(document.querySelector("#pool-live .rate").textContent) > 0`))
	require.Contains(t, textOf(ctx, t, "#pool-live .mix"), "redis")
	shots.shot(ctx, t, "pool")
	do(ctx, t, chromedp.Navigate(site+"/pools"), chromedp.WaitVisible(chromedp.ID("pool-rows")),
		eventually(`document.querySelector("#pool-rows svg.spark") !== null`))
	shots.shot(ctx, t, "pools")
	stopLoad()
	<-loadDone

	// Settings: a claim window's end, in UTC, saved and shown back.
	do(ctx, t, chromedp.Navigate(site+"/pools/spring-sale"), chromedp.WaitVisible(chromedp.ID("settings")),
		chromedp.SetValue(chromedp.CSS(`#settings input[name="claim_ends_at"]`), "2099-12-31T23:59"),
		chromedp.Click(chromedp.ID("save-settings")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	pool, err := adminAPI.GetPool(as(admin), &dispenserv1.GetPoolRequest{PoolId: "spring-sale"})
	require.NoError(t, err)
	require.Equal(t, time.Date(2099, 12, 31, 23, 59, 0, 0, time.UTC), pool.GetPool().GetClaimEndsAt().AsTime())

	// Pause: a claim is refused with POOL_PAUSED.
	do(ctx, t, chromedp.Navigate(site+"/pools/spring-sale"), chromedp.WaitVisible(chromedp.ID("pause")),
		chromedp.Click(chromedp.ID("pause")), chromedp.WaitVisible(chromedp.ID("resume")))
	require.Equal(t, "paused", textOf(ctx, t, "#pool-state"))
	// Replicas cache pool settings for up to a second (claim.PoolCacheTTLDefault).
	require.Eventually(t, func() bool {
		_, err := claimAPI.ClaimCode(as(claimer), &dispenserv1.ClaimCodeRequest{PoolId: "spring-sale", UserId: "late", RequestId: "late-" + strconv.FormatInt(time.Now().UnixNano(), 10)})
		return reason(err) == "POOL_PAUSED"
	}, 5*time.Second, 100*time.Millisecond, "a claim on the paused pool is refused with POOL_PAUSED")

	// Reveal a code as admin; the reveal is logged with the key's id and
	// without the code.
	mu.Lock()
	code, user := firstCode, firstUser
	mu.Unlock()
	require.NotEmpty(t, code)
	do(ctx, t, chromedp.Navigate(site+"/claims?pool=spring-sale&user_id="+user),
		chromedp.WaitVisible(chromedp.ID("claims")))
	html := pageHTML(ctx, t)
	require.NotContains(t, html, code, "the page holds no code before a reveal")
	shots.shot(ctx, t, "claims")
	do(ctx, t, chromedp.Click(chromedp.CSS("button.reveal")),
		chromedp.WaitVisible(chromedp.CSS("code.revealed")))
	require.Equal(t, code, textOf(ctx, t, "code.revealed"))
	shots.shot(ctx, t, "claims-revealed")
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `"msg":"console: code revealed"`) }, 5*time.Second, 50*time.Millisecond)
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(line, "console: code revealed") {
			require.Contains(t, line, `"key":"`+adminKey.ID+`"`)
			require.Contains(t, line, `"request_id":"order-`+user+`"`)
		}
	}
	require.NotContains(t, logs.String(), code, "no log line holds a code")

	// A parked prize: its pool has no codes, so delivery parks it.
	_, err = adminAPI.CreatePool(as(admin), &dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "vip-draw"}})
	require.NoError(t, err)
	rec, err := prizeAPI.RecordPrize(as(admin), &dispenserv1.RecordPrizeRequest{PoolId: "vip-draw", UserId: "winner-1", ExternalId: "draw-42"})
	require.NoError(t, err)
	_, err = prizeAPI.MarkPrizeReady(as(admin), &dispenserv1.MarkPrizeReadyRequest{PrizeId: rec.GetPrize().GetId()})
	require.NoError(t, err)
	_, err = adminAPI.RunJob(as(admin), &dispenserv1.RunJobRequest{Job: dispenserv1.Job_JOB_DELIVER, PoolId: "vip-draw"})
	require.NoError(t, err)
	got, err := prizeAPI.GetPrize(as(admin), &dispenserv1.GetPrizeRequest{PrizeId: rec.GetPrize().GetId()})
	require.NoError(t, err)
	require.Equal(t, dispenserv1.PrizeState_PRIZE_STATE_FAILED, got.GetPrize().GetState())
	do(ctx, t, chromedp.Navigate(site+"/prizes?pool=vip-draw&state=failed"),
		chromedp.WaitVisible(chromedp.ID("prizes")))
	require.Contains(t, textOf(ctx, t, "#prizes"), "POOL_EXHAUSTED")
	shots.shot(ctx, t, "prizes")
	do(ctx, t, chromedp.Click(chromedp.CSS("button.retry")),
		chromedp.WaitVisible(chromedp.CSS(".flash")))
	got, err = prizeAPI.GetPrize(as(admin), &dispenserv1.GetPrizeRequest{PrizeId: rec.GetPrize().GetId()})
	require.NoError(t, err)
	require.Equal(t, dispenserv1.PrizeState_PRIZE_STATE_READY, got.GetPrize().GetState())
	require.Zero(t, count(ctx, t, "button.retry"), "the retried prize left the parked list")

	// Keys: create one, shown once.
	do(ctx, t, chromedp.Navigate(site+"/keys"), chromedp.WaitVisible(chromedp.ID("create-key")),
		chromedp.SendKeys(chromedp.CSS(`#create-key input[name="name"]`), "checkout-backend"),
		chromedp.Click(chromedp.ID("create-key-submit")), chromedp.WaitVisible(chromedp.ID("new-key-secret")))
	secret := textOf(ctx, t, "#new-key-secret")
	require.NotEmpty(t, secret)
	require.NotContains(t, logs.String(), secret, "no log line holds a key's secret")
	shots.shot(ctx, t, "keys")

	// Health.
	do(ctx, t, chromedp.Navigate(site+"/health"), chromedp.WaitVisible(chromedp.ID("jobs")))
	require.Contains(t, textOf(ctx, t, "#postgres"), "up")
	require.Contains(t, textOf(ctx, t, "#redis"), "up")
	require.Contains(t, textOf(ctx, t, `#jobs tr[data-job="refill"]`), "ok")
	do(ctx, t, chromedp.Click(chromedp.CSS(`#jobs tr[data-job="reconcile"] button.run-job`)), chromedp.WaitVisible(chromedp.ID("job-ran")))
	require.Contains(t, textOf(ctx, t, "#job-ran"), "spring-sale")
	require.Contains(t, textOf(ctx, t, `#jobs tr[data-job="reconcile"]`), "ok")
	shots.shot(ctx, t, "health")

	// Sign out.
	do(ctx, t, chromedp.Click(chromedp.ID("sign-out")), chromedp.WaitVisible(chromedp.ID("key")))
	do(ctx, t, chromedp.Navigate(site+"/pools"), chromedp.WaitVisible(chromedp.ID("key")))
	loc, err := chromedp.Run(ctx, chromedp.Location())
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(loc, "/login"), loc)

	// An auditor sees claims and pools, and no button that changes things.
	do(ctx, t,
		chromedp.SendKeys(chromedp.ID("key"), auditor),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.ID("pool-rows")),
		chromedp.Navigate(site+"/claims?pool=spring-sale&user_id="+user),
		chromedp.WaitVisible(chromedp.ID("claims")))
	require.Contains(t, textOf(ctx, t, "#claims"), "order-"+user)
	require.Zero(t, count(ctx, t, "button.reveal"))
	html = pageHTML(ctx, t)
	require.NotContains(t, html, code)
	do(ctx, t, chromedp.Navigate(site+"/pools/spring-sale"), chromedp.WaitVisible(chromedp.ID("pool-live")))
	require.Zero(t, count(ctx, t, "#pause, #resume, #import, #settings, #create-pool"))
	shots.shot(ctx, t, "auditor-pool")
	do(ctx, t, chromedp.Navigate(site+"/prizes?pool=vip-draw&state=ready"), chromedp.WaitVisible(chromedp.ID("prizes")))
	require.Zero(t, count(ctx, t, "button.retry, button.cancel"))
	require.Zero(t, count(ctx, t, `nav a[href="/keys"]`))
	do(ctx, t, chromedp.Navigate(site+"/health"), chromedp.WaitVisible(chromedp.ID("jobs")))
	require.Zero(t, count(ctx, t, "button.run-job"))
	do(ctx, t, chromedp.Click(chromedp.ID("sign-out")), chromedp.WaitVisible(chromedp.ID("key")))
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("the browser session ran out of time")
	}
}
