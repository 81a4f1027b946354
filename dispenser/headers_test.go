package dispenser_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/dispenserhq/dispenser/dispenser"
)

// A call's headers are bounded as over HTTP (64 KiB). grpc-go clients
// refuse to send more once the server says so; a hand-made client that
// sends 100 KiB anyway is refused, and the server goes on serving.
func TestHeaderListBounded(t *testing.T) {
	t.Parallel()
	g := dispenser.NewGRPCServer(slog.New(slog.DiscardHandler))
	healthpb.RegisterHealthServer(g, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)

	conn, err := net.Dial("tcp", lis.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = conn.Write([]byte(http2.ClientPreface))
	require.NoError(t, err)
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil) // one per connection: its table carries over
	require.NoError(t, fr.WriteSettings())

	// send writes one health check as stream id, with pad bytes of padding
	// headers, in frames of 16 KiB, and returns the first write's error (a
	// server that closes the connection part way makes the next write fail).
	send := func(id uint32, pad int) error {
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		for _, f := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
			{Name: ":path", Value: "/grpc.health.v1.Health/Check"}, {Name: ":authority", Value: "test"},
			{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"}} {
			require.NoError(t, enc.WriteField(f))
		}
		// Headers of 4 KiB each: one string longer than the whole bound
		// closes the connection instead (the decoder's string limit).
		for i := 0; pad > 0; i++ {
			n := min(pad, 4<<10)
			require.NoError(t, enc.WriteField(hpack.HeaderField{Name: "x-padding-" + strconv.Itoa(i), Value: strings.Repeat("p", n)}))
			pad -= n
		}
		b := block.Bytes()
		const frame = 16 << 10
		first := b[:min(frame, len(b))]
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndHeaders: len(b) <= frame}); err != nil {
			return err
		}
		for rest := b[len(first):]; len(rest) > 0; {
			n := min(frame, len(rest))
			if err := fr.WriteContinuation(id, n == len(rest), rest[:n]); err != nil {
				return err
			}
			rest = rest[n:]
		}
		// An empty request message: the 5-byte gRPC frame header.
		return fr.WriteData(id, true, []byte{0, 0, 0, 0, 0})
	}
	// answer reads frames until stream id ends, and returns its grpc-status,
	// or "" if the stream was reset or the connection closed.
	answer := func(id uint32) string {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return "" // closed (x/net's framer drops a client far over the bound)
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					require.NoError(t, fr.WriteSettingsAck())
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					require.NoError(t, fr.WritePing(true, f.Data))
				}
			case *http2.GoAwayFrame:
				return ""
			case *http2.RSTStreamFrame:
				if f.StreamID == id {
					return ""
				}
			case *http2.MetaHeadersFrame:
				if f.StreamID == id && f.StreamEnded() {
					for _, h := range f.RegularFields() {
						if h.Name == "grpc-status" {
							return h.Value
						}
					}
					return "none"
				}
			}
		}
	}

	// Under the bound, in several frames: served.
	require.NoError(t, send(1, 40<<10))
	require.Equal(t, "0", answer(1))
	// Over it: refused, the stream reset or the connection closed.
	if err := send(3, 100<<10); err == nil {
		require.Empty(t, answer(3), "100 KiB of headers were served")
	}

	// The server goes on serving.
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer cc.Close()
	_, err = healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
}
