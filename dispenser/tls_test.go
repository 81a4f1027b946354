package dispenser_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/dispenserhq/dispenser/dispenser"
	"github.com/dispenserhq/dispenser/internal/testdaemon"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// pki makes a CA and certificates signed by it, written as PEM files.
type pki struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	p := &pki{t: t, dir: t.TempDir(), cert: cert, key: key}
	p.write(name+"-ca.pem", "CERTIFICATE", der)
	return p
}

func (p *pki) write(name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	require.NoError(p.t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	return path
}

func (p *pki) caFile() string { return filepath.Join(p.dir, p.cert.Subject.CommonName+"-ca.pem") }

// issue returns cert and key files for a server (127.0.0.1) or a client.
func (p *pki) issue(name string, server bool) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(p.t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	require.NoError(p.t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(p.t, err)
	return p.write(name+".pem", "CERTIFICATE", der), p.write(name+"-key.pem", "EC PRIVATE KEY", keyDER)
}

// serveTLS runs a server with the TLS config and returns its address.
func serveTLS(t *testing.T, tlsCfg dispenser.TLSConfig) string {
	t.Helper()
	addr := testdaemon.Run(t, func(c *dispenser.Config) { c.TLS = tlsCfg }).Addr
	return addr
}

// reach makes one call and returns its gRPC code (NotFound means the call
// got through: the pool does not exist).
func reach(t *testing.T, addr string, creds credentials.TransportCredentials) codes.Code {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = dispenserv1.NewAdminServiceClient(conn).GetPool(ctx, &dispenserv1.GetPoolRequest{PoolId: "nope"})
	return status.Code(err)
}

func TestTLSAndMutualTLS(t *testing.T) {
	t.Parallel()
	ca := newPKI(t, "dispenser-test")
	other := newPKI(t, "someone-else")
	serverCert, serverKey := ca.issue("server", true)
	clientCert, clientKey := ca.issue("client", false)
	strangerCert, strangerKey := other.issue("stranger", false)

	creds := func(caFile, cert, key string) credentials.TransportCredentials {
		c, err := dispenser.ClientTLS(caFile, cert, key)
		require.NoError(t, err)
		return c
	}

	tlsAddr := serveTLS(t, dispenser.TLSConfig{CertFile: serverCert, KeyFile: serverKey})
	require.Equal(t, codes.NotFound, reach(t, tlsAddr, creds(ca.caFile(), "", "")), "TLS client gets through")
	require.Equal(t, codes.Unavailable, reach(t, tlsAddr, insecure.NewCredentials()), "plaintext client refused")
	require.Equal(t, codes.Unavailable, reach(t, tlsAddr, creds(other.caFile(), "", "")), "server not trusted")

	mtlsAddr := serveTLS(t, dispenser.TLSConfig{CertFile: serverCert, KeyFile: serverKey, ClientCAFile: ca.caFile()})
	require.Equal(t, codes.NotFound, reach(t, mtlsAddr, creds(ca.caFile(), clientCert, clientKey)), "client with a certificate gets through")
	require.Equal(t, codes.Unavailable, reach(t, mtlsAddr, creds(ca.caFile(), "", "")), "client without a certificate refused")
	require.Equal(t, codes.Unavailable, reach(t, mtlsAddr, creds(ca.caFile(), strangerCert, strangerKey)), "certificate of another CA refused")
}

// The HTTP/JSON listener uses the gRPC listener's TLS: HTTPS with the same
// certificate, and with a client CA, only clients with a certificate of it.
func TestHTTPOverTLS(t *testing.T) {
	t.Parallel()
	ca := newPKI(t, "dispenser-test")
	serverCert, serverKey := ca.issue("server", true)
	clientCert, clientKey := ca.issue("client", false)
	client := func(cert, key string) *http.Client {
		pool := x509.NewCertPool()
		pemCA, err := os.ReadFile(ca.caFile())
		require.NoError(t, err)
		require.True(t, pool.AppendCertsFromPEM(pemCA))
		cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if cert != "" {
			pair, err := tls.LoadX509KeyPair(cert, key)
			require.NoError(t, err)
			cfg.Certificates = []tls.Certificate{pair}
		}
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	get := func(c *http.Client, url string) (int, error) {
		resp, err := c.Get(url + "/v1/pools/nope")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return resp.StatusCode, nil
	}

	d := testdaemon.Run(t, func(c *dispenser.Config) { c.TLS = dispenser.TLSConfig{CertFile: serverCert, KeyFile: serverKey} })
	httpsURL := strings.Replace(d.HTTP, "http://", "https://", 1)
	st, err := get(client("", ""), httpsURL)
	require.NoError(t, err)
	require.Equal(t, http.StatusNotFound, st, "an HTTPS call gets through")
	st, err = get(&http.Client{Timeout: 5 * time.Second}, d.HTTP)
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, st, "plain HTTP is refused by the TLS listener")

	m := testdaemon.Run(t, func(c *dispenser.Config) {
		c.TLS = dispenser.TLSConfig{CertFile: serverCert, KeyFile: serverKey, ClientCAFile: ca.caFile()}
	})
	mURL := strings.Replace(m.HTTP, "http://", "https://", 1)
	st, err = get(client(clientCert, clientKey), mURL)
	require.NoError(t, err)
	require.Equal(t, http.StatusNotFound, st, "a client with a certificate gets through")
	_, err = get(client("", ""), mURL)
	require.Error(t, err, "a client without a certificate is refused")
}
