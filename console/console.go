// Package console is the web console of the people who run the pools:
// server-rendered pages (html/template) made live with htmx, embedded in the
// binary. It holds no data of its own: every page is made from calls to the
// service's own API, made with the signed-in key, so the API's roles, rate
// limits and code-hiding rules hold here as they do everywhere.
package console

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Roles that may sign in. Claimer keys are for lottery backends, not people.
const (
	RoleAdmin   = "admin"
	RoleAuditor = "auditor"
)

// Identity is who a key belongs to.
type Identity struct {
	// KeyID is the key's public id, logged with every reveal.
	KeyID string
	// Role is RoleAdmin or RoleAuditor (others are refused at sign-in).
	Role string
}

// Config configures the console.
type Config struct {
	// Conn reaches the service's gRPC API; in dispenserd, an in-process
	// connection to a server with the same services and interceptors.
	Conn grpc.ClientConnInterface
	// SignIn checks a key sent from peerAddr (an address without port) and
	// tells whose it is; its error is shown to the person signing in.
	SignIn func(ctx context.Context, key, peerAddr string) (Identity, error)
	// Secure is set when the console is served over TLS: the session
	// cookie then carries Secure and the __Host- prefix.
	Secure bool
	// MaxImportBytes bounds one uploaded import file.
	MaxImportBytes int64
	// CallTimeout bounds each API call a page makes; default 10s. Imports
	// have no bound but the upload's.
	CallTimeout time.Duration
	// SignInTimeout bounds how long the sign-in form, the one body read
	// before any key is checked, may take to arrive; 0 leaves it unbound.
	SignInTimeout time.Duration
	// Logger receives the console's logs (sign-ins, reveals).
	Logger *slog.Logger
}

// Console serves the web console.
type Console struct {
	cfg     Config
	log     *slog.Logger
	pages   map[string]*template.Template
	admin   dispenserv1.AdminServiceClient
	claims  dispenserv1.ClaimServiceClient
	prizes  dispenserv1.PrizeServiceClient
	tracker *tracker
	stats   statsCache
	handler http.Handler
}

// New returns the console.
func New(cfg Config) (*Console, error) {
	if cfg.Conn == nil || cfg.SignIn == nil {
		return nil, errors.New("console: Config.Conn and Config.SignIn are required")
	}
	cfg.CallTimeout = cmp.Or(cfg.CallTimeout, 10*time.Second)
	c := &Console{cfg: cfg, log: cmp.Or(cfg.Logger, slog.Default()).With("component", "console"),
		admin: dispenserv1.NewAdminServiceClient(cfg.Conn), claims: dispenserv1.NewClaimServiceClient(cfg.Conn),
		prizes: dispenserv1.NewPrizeServiceClient(cfg.Conn), tracker: newTracker()}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	c.pages = pages
	c.handler = c.routes()
	return c, nil
}

// Handler is the console's HTTP handler.
func (c *Console) Handler() http.Handler { return c.handler }

// routes builds the mux: the sign-in page and the static files are open;
// every other page needs a session, and every change a CSRF token too.
func (c *Console) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", cacheStatic(http.FileServerFS(static))))
	mux.HandleFunc("GET /login", c.loginPage)
	mux.HandleFunc("POST /login", c.login)
	mux.HandleFunc("POST /logout", c.session(c.logout, true))
	mux.HandleFunc("GET /{$}", c.session(func(w http.ResponseWriter, r *http.Request, _ *request) {
		http.Redirect(w, r, "/pools", http.StatusSeeOther)
	}, false))
	mux.HandleFunc("GET /pools", c.session(c.poolsPage, false))
	mux.HandleFunc("GET /pools/rows", c.session(c.poolsRows, false))
	mux.HandleFunc("POST /pools", c.session(c.createPool, true))
	mux.HandleFunc("GET /pools/{id}", c.session(c.poolPage, false))
	mux.HandleFunc("GET /pools/{id}/live", c.session(c.poolLive, false))
	mux.HandleFunc("POST /pools/{id}/settings", c.session(c.updatePool, true))
	mux.HandleFunc("POST /pools/{id}/pause", c.session(c.pausePool(true), true))
	mux.HandleFunc("POST /pools/{id}/resume", c.session(c.pausePool(false), true))
	mux.HandleFunc("POST /pools/{id}/import", c.session(c.importFile, true))
	mux.HandleFunc("GET /claims", c.session(c.claimsPage, false))
	mux.HandleFunc("POST /claims/reveal", c.session(c.reveal, true))
	mux.HandleFunc("GET /prizes", c.session(c.prizesPage, false))
	mux.HandleFunc("POST /prizes/{id}/retry", c.session(c.prizeAction(true), true))
	mux.HandleFunc("POST /prizes/{id}/cancel", c.session(c.prizeAction(false), true))
	mux.HandleFunc("GET /keys", c.session(c.keysPage, false))
	mux.HandleFunc("POST /keys", c.session(c.createKey, true))
	mux.HandleFunc("POST /keys/{id}/revoke", c.session(c.revokeKey, true))
	mux.HandleFunc("GET /health", c.session(c.healthPage, false))
	mux.HandleFunc("GET /health/live", c.session(c.healthLive, false))
	mux.HandleFunc("POST /health/jobs/{job}/run", c.session(c.adminOnly(c.runJob), true))
	// Cross-origin changes are refused from the browser's own headers
	// (Sec-Fetch-Site, Origin) before any handler; the CSRF token is the
	// second lock, for browsers that send neither.
	return securityHeaders(http.NewCrossOriginProtection().Handler(mux))
}

// securityHeaders: no framing, no inline script, no referrer, and no page
// (they may hold a revealed code) kept in a cache.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// cacheStatic lets browsers keep the embedded files for an hour.
func cacheStatic(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		next.ServeHTTP(w, r)
	})
}

// cookieName is the session cookie's name: under TLS with the __Host-
// prefix, which browsers accept only with Secure, Path=/ and no Domain.
func (c *Console) cookieName() string {
	if c.cfg.Secure {
		return "__Host-dispenser_session"
	}
	return "dispenser_session"
}

// setSession stores the key in the session cookie: HttpOnly (no script
// reads it), SameSite=Strict (no other site's page sends it), Secure under
// TLS; it lasts as long as the browser session.
func (c *Console) setSession(w http.ResponseWriter, value string) {
	http.SetCookie(w, &http.Cookie{Name: c.cookieName(), Value: value, Path: "/", HttpOnly: true,
		Secure: c.cfg.Secure, SameSite: http.SameSiteStrictMode})
}

func (c *Console) clearSession(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: c.cookieName(), Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: c.cfg.Secure, SameSite: http.SameSiteStrictMode})
}

// csrfToken is derived from the session cookie's value: only a page that
// could read the cookie (none can: HttpOnly) or that the server rendered
// for this session knows it. No server state, so any replica checks it.
func csrfToken(session string) string {
	secret := sha256.Sum256([]byte("dispenser console session:" + session))
	mac := hmac.New(sha256.New, secret[:])
	mac.Write([]byte("csrf v1"))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// request is one signed-in request: who, and how to call the API as them.
type request struct {
	ID      Identity
	CSRF    string
	session string
}

// ctx returns a context that calls the API with the session's key.
func (q *request) ctx(parent context.Context) context.Context {
	if q.session == "" || strings.HasPrefix(q.session, noAuthPrefix) {
		return parent
	}
	return metadata.AppendToOutgoingContext(parent, "authorization", "Bearer "+q.session)
}

// Admin reports whether the signed-in key may change things.
func (q *request) Admin() bool { return q.ID.Role == RoleAdmin }

// noAuthPrefix marks a session made while the service runs without keys:
// its value is random, only there to bind the CSRF token.
const noAuthPrefix = "noauth."

// session wraps a page that needs a signed-in admin or auditor; with change
// set, the request must also carry the session's CSRF token (form field
// "csrf" or header X-CSRF-Token).
func (c *Console) session(h func(http.ResponseWriter, *http.Request, *request), change bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie(c.cookieName())
		if err != nil || ck.Value == "" {
			c.toLogin(w, r)
			return
		}
		id, err := c.cfg.SignIn(r.Context(), strings.TrimPrefix(ck.Value, noAuthPrefix), peerHost(r))
		if err != nil || (id.Role != RoleAdmin && id.Role != RoleAuditor) {
			c.clearSession(w)
			c.toLogin(w, r)
			return
		}
		q := &request{ID: id, session: ck.Value, CSRF: csrfToken(ck.Value)}
		if change {
			sent := r.Header.Get("X-CSRF-Token")
			if sent == "" {
				sent = r.PostFormValue("csrf")
			}
			if subtle.ConstantTimeCompare([]byte(sent), []byte(q.CSRF)) != 1 {
				http.Error(w, "missing or wrong CSRF token: reload the page", http.StatusForbidden)
				return
			}
		}
		h(w, r, q)
	}
}

// adminOnly refuses auditors before h makes any call (the API would too).
func (c *Console) adminOnly(h func(http.ResponseWriter, *http.Request, *request)) func(http.ResponseWriter, *http.Request, *request) {
	return func(w http.ResponseWriter, r *http.Request, q *request) {
		if !q.Admin() {
			http.Error(w, "only admins may do this", http.StatusForbidden)
			return
		}
		h(w, r, q)
	}
}

// toLogin sends a browser to the sign-in page; an htmx request is told to
// load it whole rather than swap it into a fragment.
func (c *Console) toLogin(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("HX-Request") != "" {
		w.Header().Set("HX-Redirect", "/login")
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "not signed in", http.StatusUnauthorized)
		return
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// peerHost is the client's address without its port: the sign-in failure
// budget is per host.
func peerHost(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "login", nil, map[string]any{})
}

// login checks the key with the service and, for an admin or auditor key,
// starts a session. Only the key's id is logged.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if c.cfg.SignInTimeout > 0 {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(c.cfg.SignInTimeout))
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); errors.Is(err, os.ErrDeadlineExceeded) {
		http.Error(w, "the sign-in form did not arrive in time", http.StatusRequestTimeout)
		return
	}
	key := strings.TrimSpace(r.PostFormValue("key"))
	id, err := c.cfg.SignIn(r.Context(), key, peerHost(r))
	if err == nil && id.Role != RoleAdmin && id.Role != RoleAuditor {
		err = errors.New("only admin and auditor keys may sign in to the console")
	}
	if err != nil {
		c.log.InfoContext(r.Context(), "console sign-in refused", "peer", peerHost(r))
		c.render(w, r, http.StatusUnauthorized, "login", nil, map[string]any{"Error": errorText(err)})
		return
	}
	value := key
	if id.KeyID == "" { // authentication is off: bind the session to a random value
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		value = noAuthPrefix + hex.EncodeToString(b)
	}
	c.setSession(w, value)
	c.log.InfoContext(r.Context(), "console sign-in", "key", id.KeyID, "role", id.Role, "peer", peerHost(r))
	http.Redirect(w, r, "/pools", http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, q *request) {
	c.clearSession(w)
	c.log.InfoContext(r.Context(), "console sign-out", "key", q.ID.KeyID)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
