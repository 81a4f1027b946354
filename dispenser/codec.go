package dispenser

import (
	"bytes"
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// A request message that is not valid protobuf is bad input, and the caller
// is told so: InvalidArgument naming "body", as over HTTP. gRPC itself
// answers Internal ("failed to unmarshal the received message"), whatever
// its codec returns, and before any interceptor runs. So the server's codec
// does not fail: it leaves the message empty but for a marker in its
// unknown fields, and the interceptors below refuse a marked message. The
// marker's field number, 19999, is in the range protobuf reserves for
// itself, so no message of the API can have it.
var undecodable = protowire.AppendBytes(protowire.AppendTag(nil, 19999, protowire.BytesType),
	[]byte("dispenser: undecodable request"))

// lenientCodec is gRPC's protobuf codec, but for marking what it cannot
// decode (see undecodable).
type lenientCodec struct{ encoding.CodecV2 }

func newLenientCodec() lenientCodec {
	return lenientCodec{encoding.GetCodecV2(grpcproto.Name)}
}

func (c lenientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	m, ok := v.(proto.Message)
	if err == nil || !ok {
		return err
	}
	proto.Reset(m)
	m.ProtoReflect().SetUnknown(undecodable)
	return nil
}

// undecoded reports whether m is a request lenientCodec could not decode.
func undecoded(m any) bool {
	p, ok := m.(proto.Message)
	if !ok {
		return false
	}
	u := p.ProtoReflect().GetUnknown()
	return len(u) > 0 && bytes.Equal(u, undecodable)
}

func badBody() error {
	return invalidArgument("body", "is not a valid protobuf message of the method's request type")
}

// refuseUndecodedUnary refuses a unary call whose request did not decode.
func refuseUndecodedUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if undecoded(req) {
		return nil, badBody()
	}
	return h(ctx, req)
}

// refuseUndecodedStream refuses each streamed message that did not decode.
func refuseUndecodedStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return h(srv, checkedStream{ss})
}

type checkedStream struct{ grpc.ServerStream }

func (s checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if undecoded(m) {
		return badBody()
	}
	return nil
}
