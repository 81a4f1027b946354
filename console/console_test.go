package console_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/dispenser"
	"github.com/dispenserhq/dispenser/internal/testdaemon"
)

// site is a live dispenserd with its console, and keys of each role.
type site struct {
	d                       testdaemon.Daemon
	db                      *pgxpool.Pool
	admin, auditor, claimer string
	adminID                 string
}

func startSite(t *testing.T) *site {
	t.Helper()
	d := testdaemon.Run(t, func(c *dispenser.Config) { c.NoAuth = false })
	ctx := context.Background()
	db, err := pgxpool.New(ctx, d.DB.URL)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	keys := auth.NewStore(db)
	s := &site{d: d, db: db}
	k, text, err := keys.Create(ctx, auth.Key{Name: "ops", Role: auth.Admin})
	require.NoError(t, err)
	s.admin, s.adminID = text, k.ID
	_, s.auditor, err = keys.Create(ctx, auth.Key{Name: "audit", Role: auth.Auditor})
	require.NoError(t, err)
	_, s.claimer, err = keys.Create(ctx, auth.Key{Name: "backend", Role: auth.Claimer})
	require.NoError(t, err)
	return s
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, so tests see them.
func browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func signIn(t *testing.T, s *site, c *http.Client, key string) *http.Response {
	t.Helper()
	resp, err := c.PostForm(s.d.Console+"/login", url.Values{"key": {key}})
	require.NoError(t, err)
	_ = resp.Body.Close()
	return resp
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// createPool creates a pool through an admin's console session.
func (s *site) createPool(t *testing.T, id string) {
	t.Helper()
	c := browser(t)
	signIn(t, s, c, s.admin)
	_, body := get(t, c, s.d.Console+"/pools")
	resp, err := c.PostForm(s.d.Console+"/pools", url.Values{"csrf": {csrfField.FindStringSubmatch(body)[1]}, "id": {id}})
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// The session cookie is HttpOnly and SameSite=Strict; claimer keys, wrong
// keys and no key do not get in; pages without a session send the browser
// to the sign-in page.
func TestSignIn(t *testing.T) {
	t.Parallel()
	s := startSite(t)
	c := browser(t)
	code, _ := get(t, c, s.d.Console+"/pools")
	require.Equal(t, http.StatusSeeOther, code)

	for _, key := range []string{"", "not-a-key", s.claimer} {
		resp := signIn(t, s, c, key)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, key)
		require.Empty(t, resp.Cookies())
	}
	resp := signIn(t, s, c, s.admin)
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Len(t, resp.Cookies(), 1)
	ck := resp.Cookies()[0]
	require.True(t, ck.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, ck.SameSite)
	require.False(t, ck.Secure) // plain HTTP here; under TLS it is Secure and __Host-
	require.Equal(t, "/", ck.Path)

	code, body := get(t, c, s.d.Console+"/pools")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "key "+s.adminID)
	require.NotContains(t, body, s.admin, "the key's secret is never written into a page")

	// Security headers.
	r, err := c.Get(s.d.Console + "/pools")
	require.NoError(t, err)
	_ = r.Body.Close()
	require.Contains(t, r.Header.Get("Content-Security-Policy"), "script-src 'self'")
	require.Equal(t, "no-store", r.Header.Get("Cache-Control"))
	require.Equal(t, "DENY", r.Header.Get("X-Frame-Options"))

	// Sign out needs the CSRF token, then ends the session.
	r, err = c.PostForm(s.d.Console+"/logout", url.Values{})
	require.NoError(t, err)
	_ = r.Body.Close()
	require.Equal(t, http.StatusForbidden, r.StatusCode)
	token := csrfField.FindStringSubmatch(body)[1]
	r, err = c.PostForm(s.d.Console+"/logout", url.Values{"csrf": {token}})
	require.NoError(t, err)
	_ = r.Body.Close()
	require.Equal(t, http.StatusSeeOther, r.StatusCode)
	code, _ = get(t, c, s.d.Console+"/pools")
	require.Equal(t, http.StatusSeeOther, code)
}

// Every change needs the session's CSRF token, and a cross-site request is
// refused from its Sec-Fetch-Site header before the token is looked at.
func TestChangesNeedCSRFToken(t *testing.T) {
	t.Parallel()
	s := startSite(t)
	c := browser(t)
	signIn(t, s, c, s.admin)
	_, body := get(t, c, s.d.Console+"/pools")
	token := csrfField.FindStringSubmatch(body)[1]

	post := func(form url.Values, header map[string]string) int {
		req, err := http.NewRequest(http.MethodPost, s.d.Console+"/pools", strings.NewReader(form.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusForbidden, post(url.Values{"id": {"p1"}}, nil))
	require.Equal(t, http.StatusForbidden, post(url.Values{"id": {"p1"}, "csrf": {"forged"}}, nil))
	require.Equal(t, http.StatusForbidden, post(url.Values{"id": {"p1"}, "csrf": {token}}, map[string]string{"Sec-Fetch-Site": "cross-site"}))
	var n int
	require.NoError(t, s.db.QueryRow(context.Background(), `SELECT count(*) FROM pools`).Scan(&n))
	require.Zero(t, n, "no refused request created a pool")

	require.Equal(t, http.StatusSeeOther, post(url.Values{"id": {"p1"}, "csrf": {token}}, map[string]string{"Sec-Fetch-Site": "same-origin"}))
	require.NoError(t, s.db.QueryRow(context.Background(), `SELECT count(*) FROM pools`).Scan(&n))
	require.Equal(t, 1, n)

	// A token is bound to its session: another admin's does not work here.
	other := browser(t)
	signIn(t, s, other, s.auditor)
	_, body = get(t, other, s.d.Console+"/pools")
	otherToken := csrfField.FindStringSubmatch(body)[1]
	require.NotEqual(t, token, otherToken)
	require.Equal(t, http.StatusForbidden, post(url.Values{"id": {"p2"}, "csrf": {otherToken}}, nil))
}

// Auditors see pools and claims but no codes and no buttons; what an
// auditor's session posts anyway is refused by the console or the API.
func TestAuditorChangesNothing(t *testing.T) {
	t.Parallel()
	s := startSite(t)
	ctx := context.Background()
	s.createPool(t, "p1")
	c := browser(t)
	signIn(t, s, c, s.auditor)
	code, body := get(t, c, s.d.Console+"/pools/p1")
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, body, `id="pause"`)
	require.NotContains(t, body, `id="import"`)
	token := csrfField.FindStringSubmatch(body)[1]
	for _, path := range []string{"/pools/p1/pause", "/pools", "/keys", "/claims/reveal", "/health/jobs/refill/run", "/keys/abc/revoke", "/prizes/1/retry"} {
		resp, err := c.PostForm(s.d.Console+path, url.Values{"csrf": {token}, "id": {"p9"}, "name": {"x"}, "role": {"admin"},
			"pool": {"p1"}, "request_id": {"r"}})
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusForbidden, resp.StatusCode, path)
	}
	var paused bool
	require.NoError(t, s.db.QueryRow(ctx, `SELECT paused FROM pools WHERE id = 'p1'`).Scan(&paused))
	require.False(t, paused)
	code, body = get(t, c, s.d.Console+"/keys")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "Only admins")
}

// An upload over the size limit is refused and lands nothing; an upload of
// a strict file with an invalid line lands nothing either.
func TestImportLimits(t *testing.T) {
	t.Parallel()
	d := testdaemon.Run(t, func(c *dispenser.Config) { c.NoAuth = false; c.MaxImportBytes = 1 << 10 })
	ctx := context.Background()
	db, err := pgxpool.New(ctx, d.DB.URL)
	require.NoError(t, err)
	t.Cleanup(db.Close)
	_, admin, err := auth.NewStore(db).Create(ctx, auth.Key{Role: auth.Admin})
	require.NoError(t, err)
	s := &site{d: d, db: db, admin: admin}
	s.createPool(t, "p1")
	c := browser(t)
	signIn(t, s, c, admin)
	_, body := get(t, c, d.Console+"/pools/p1")
	token := csrfField.FindStringSubmatch(body)[1]
	upload := func(query, data string) (int, string) {
		req, err := http.NewRequest(http.MethodPost, d.Console+"/pools/p1/import?"+query, strings.NewReader(data))
		require.NoError(t, err)
		req.Header.Set("X-CSRF-Token", token)
		resp, err := c.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := upload("", strings.Repeat("CODE-0123456789\n", 100))
	require.Equal(t, http.StatusRequestEntityTooLarge, code)
	require.Contains(t, body, "larger than")
	code, body = upload("strict=true", "GOOD-CODE-1\nx\n")
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body, "IMPORT_REJECTED")
	require.NotContains(t, body, "GOOD-CODE-1")
	var n int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM codes`).Scan(&n))
	require.Zero(t, n)
	code, body = upload("", "GOOD-CODE-1\nGOOD-CODE-2\n")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `<strong id="import-inserted">2</strong>`)
	require.NotContains(t, body, "GOOD-CODE")
}

// Hostile ids in paths and forms are answered as the API answers them
// (not found, invalid), escaped in the page, and never crash a handler.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	s := startSite(t)
	s.createPool(t, "p1")
	c := browser(t)
	signIn(t, s, c, s.admin)
	for _, path := range []string{"/pools/%3Cscript%3Ealert(1)%3C%2Fscript%3E", "/pools/..%2F..%2Fetc", "/pools/" + strings.Repeat("a", 5000),
		"/claims?pool=%3Cb%3E&request_id=%00", "/claims?pool=p1&user_id=" + strings.Repeat("u", 300), "/prizes?pool=p1&state=%3Cx%3E"} {
		code, body := get(t, c, s.d.Console+path)
		require.Less(t, code, 500, path)
		require.NotContains(t, body, "<script>alert", path)
		require.NotContains(t, body, "<b>", path)
	}
	// A login body far over the limit is refused without reading it all.
	resp, err := http.Post(s.d.Console+"/login", "application/x-www-form-urlencoded", strings.NewReader("key="+strings.Repeat("k", 1<<20)))
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

// The sign-in form, the one body the console reads before any key is
// checked, must arrive within the HTTP body timeout: one trickled a byte at
// a time is answered 408 instead of holding its connection.
func TestSignInFormMustArriveInTime(t *testing.T) {
	t.Parallel()
	d := testdaemon.Run(t, func(c *dispenser.Config) { c.NoAuth, c.HTTPBodyTimeout = false, 300*time.Millisecond })
	conn, err := net.Dial("tcp", strings.TrimPrefix(d.Console, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(20*time.Second)))
	form := "key=" + strings.Repeat("k", 40)
	_, err = fmt.Fprintf(conn, "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n", len(form))
	require.NoError(t, err)
	start := time.Now()
	for i := range len(form) {
		if _, err := io.WriteString(conn, form[i:i+1]); err != nil {
			break // answered and closed
		}
		time.Sleep(100 * time.Millisecond)
		if time.Since(start) > time.Second {
			break // long past the timeout: read the answer
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
}
