package dispenser_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/dispenserhq/dispenser/dispenser"
	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// rawCodec sends the bytes it is given as they are: a client that sends
// what no protobuf encoder would.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2("proto").Unmarshal(data, v)
}

func (rawCodec) Name() string { return "proto" }

// Bytes that are not a protobuf message of the method's request type are
// InvalidArgument naming "body", as a body that is not JSON is over HTTP,
// not gRPC's own Internal; nothing is written, and the same connection
// serves well-formed calls.
func TestUndecodableRequests(t *testing.T) {
	ctx, b := start(t, setupOpts{}) // start calls t.Parallel
	raw := grpc.ForceCodecV2(rawCodec{})
	garbage := [][]byte{
		{0xff, 0xff, 0xff, 0xff},                  // a truncated varint tag
		{0x0a, 0x7f, 'p'},                         // field 1 claims 127 bytes, has 1
		{0x0a, 0x02, 0xc3, 0x28},                  // field 1 (a string) is not UTF-8
		{0x1a, 0x01, 'u', 0x10, 0x01, 0x12, 0x01}, // cut inside its last field
	}
	for _, g := range garbage {
		err := b.conn.Invoke(ctx, "/dispenser.v1.ClaimService/ClaimCode", g, &dispenserv1.ClaimCodeResponse{}, raw)
		requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "body")
		err = b.conn.Invoke(ctx, "/dispenser.v1.AdminService/CreatePool", g, &dispenserv1.CreatePoolResponse{}, raw)
		requireStatus(t, err, codes.InvalidArgument, dispenser.ReasonInvalidArgument, "body")
	}
	// A streamed message too: the import's first chunk.
	stream, err := b.conn.NewStream(ctx, &dispenserv1.AdminService_ServiceDesc.Streams[0], "/dispenser.v1.AdminService/ImportCodes", raw)
	require.NoError(t, err)
	require.NoError(t, stream.SendMsg(garbage[0]))
	require.NoError(t, stream.CloseSend())
	requireStatus(t, stream.RecvMsg(&dispenserv1.ImportCodesResponse{}), codes.InvalidArgument, dispenser.ReasonInvalidArgument, "body")

	// Well-formed bytes through the same codec reach the handler.
	good, err := proto.Marshal(&dispenserv1.CreatePoolRequest{Pool: &dispenserv1.Pool{Id: "p1"}})
	require.NoError(t, err)
	require.NoError(t, b.conn.Invoke(ctx, "/dispenser.v1.AdminService/CreatePool", good, &dispenserv1.CreatePoolResponse{}, raw))
	list, err := b.admin.ListPools(ctx, &dispenserv1.ListPoolsRequest{})
	require.NoError(t, err)
	require.Len(t, list.GetPools(), 1, "only the well-formed call made a pool")
	require.Equal(t, "p1", list.GetPools()[0].GetId())
}
