package testenv

import (
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// A port taken between the check that found it free and the server's bind
// (here by a listener of this test) is given up for another, not waited on
// until a timeout.
func TestRedisServerMovesOffATakenPort(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = taken.Close() })
	busy := taken.Addr().(*net.TCPAddr).Port

	var tried []int
	s := &RedisServer{t: t, dir: t.TempDir()}
	s.startOnFreePort(func(tb testing.TB) int {
		p := busy
		if len(tried) > 0 {
			p = freePort(tb)
		}
		tried = append(tried, p)
		return p
	})
	t.Cleanup(s.Kill)
	require.Len(t, tried, 2)
	require.Equal(t, tried[1], s.Port)
	pid, err := serverPID(s.client())
	require.NoError(t, err)
	require.Equal(t, s.cmd.Process.Pid, pid)

	// The start on the taken port ended with redis-server's own reason.
	other := &RedisServer{t: t, Port: busy, dir: t.TempDir()}
	err = other.start()
	require.ErrorContains(t, err, "exited")
	require.Nil(t, other.cmd)
}
