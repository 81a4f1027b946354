package dispenser

import (
	"context"
	"net"
	"net/netip"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// An HTTP caller's address reaches the key checks as a gRPC caller's does,
// so that failed authentications are limited per caller over HTTP too
// (auth.Config's FailureRate), not shared by every HTTP caller:
//
//   - the HTTP servers (API and console) put each connection's remote
//     address in its requests' contexts as the gRPC peer (httpConnContext),
//     which the gateway's direct claims hand to the interceptors as they are;
//   - calls over the in-process connection carry it as clientAddrKey
//     metadata (forwardClientAddr), and the in-process server, whose own
//     peer is the process itself, takes it as the peer (restoreClientAddr).
//
// Only the in-process server reads the key, and only the process can reach
// that server; the connection's interceptor sets the key on every call (or
// removes it), so no value from an HTTP header (Grpc-Metadata-...) gets
// through.
const clientAddrKey = "dispenser-client-addr"

// httpConnContext is an HTTP server's ConnContext: the connection's remote
// address as the peer of every request on it.
func httpConnContext(ctx context.Context, c net.Conn) context.Context {
	return peer.NewContext(ctx, &peer.Peer{Addr: c.RemoteAddr(), LocalAddr: c.LocalAddr()})
}

// forwardClientAddr sets ctx's outgoing clientAddrKey to its peer's
// address, or removes it when ctx has no peer.
func forwardClientAddr(ctx context.Context) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		md.Set(clientAddrKey, p.Addr.String())
	} else {
		md.Delete(clientAddrKey)
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// inProcessDialOptions forward the caller's address on every call over the
// in-process connection.
func inProcessDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
			invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(forwardClientAddr(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
			streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(forwardClientAddr(ctx), desc, cc, method, opts...)
		}),
	}
}

// restoreClientAddr makes the address a call over the in-process
// connection carries its peer. A call without one (a console page's own
// call made without a request) keeps the in-process peer.
func restoreClientAddr(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(clientAddrKey)
	if len(v) != 1 {
		return ctx
	}
	ap, err := netip.ParseAddrPort(v[0])
	if err != nil {
		return ctx
	}
	p := &peer.Peer{Addr: net.TCPAddrFromAddrPort(ap)}
	if own, ok := peer.FromContext(ctx); ok {
		p.LocalAddr, p.AuthInfo = own.LocalAddr, own.AuthInfo
	}
	return peer.NewContext(ctx, p)
}

// inProcessServerOptions are the in-process server's outermost
// interceptors (grpc runs UnaryInterceptor and StreamInterceptor before any
// chained one): the caller's address is the peer before the access log and
// the key checks see it.
func inProcessServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(restoreClientAddr(ctx), req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			w := middleware.WrapServerStream(ss)
			w.WrappedContext = restoreClientAddr(ss.Context())
			return h(srv, w)
		}),
	}
}
