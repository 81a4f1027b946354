package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Under TLS the session cookie is Secure and carries the __Host- prefix.
func TestSecureCookie(t *testing.T) {
	t.Parallel()
	conn, err := grpc.NewClient("passthrough:///unused", grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	c, err := New(Config{Conn: conn, Secure: true, MaxImportBytes: 1 << 20,
		SignIn: func(context.Context, string, string) (Identity, error) {
			return Identity{KeyID: "k1", Role: RoleAdmin}, nil
		}})
	require.NoError(t, err)
	req := httptest.NewRequest(http.MethodPost, "https://console.example/login", strings.NewReader(url.Values{"key": {"k1.secret"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	c.Handler().ServeHTTP(rec, req)
	require.Equal(t, http.StatusSeeOther, rec.Code)
	cookies := rec.Result().Cookies()
	require.Len(t, cookies, 1)
	require.Equal(t, "__Host-dispenser_session", cookies[0].Name)
	require.True(t, cookies[0].Secure)
	require.True(t, cookies[0].HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, cookies[0].SameSite)
}
