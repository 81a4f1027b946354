package dispenser

import (
	"cmp"
	"context"
	"log/slog"

	"google.golang.org/grpc"

	"github.com/dispenserhq/dispenser/auth"
	"github.com/dispenserhq/dispenser/console"
)

// newConsole returns the web console over conn (the in-process gRPC
// connection). Sign-ins go through authz's key checks and failure limits;
// with authentication off (authz nil) anyone who reaches the console's
// listener is an admin, as on the API.
func newConsole(conn *grpc.ClientConn, authz *auth.Authorizer, cfg Config, log *slog.Logger) (*console.Console, error) {
	signIn := func(context.Context, string, string) (console.Identity, error) {
		return console.Identity{Role: console.RoleAdmin}, nil
	}
	if authz != nil {
		signIn = func(ctx context.Context, key, peerAddr string) (console.Identity, error) {
			k, err := authz.SignIn(ctx, key, peerAddr)
			if err != nil {
				return console.Identity{}, err
			}
			return console.Identity{KeyID: k.ID, Role: string(k.Role)}, nil
		}
	}
	return console.New(console.Config{Conn: conn, SignIn: signIn, Secure: cfg.TLS.Enabled(),
		MaxImportBytes: cmp.Or(cfg.MaxImportBytes, MaxImportBytesDefault),
		SignInTimeout:  cmp.Or(cfg.HTTPBodyTimeout, HTTPBodyTimeoutDefault), Logger: log})
}
