package dispenser

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
)

// errBodyTooSlow is the read error of a JSON body that did not arrive
// within its time (limitBodies): a caller that trickles a body holds a
// connection, before any key is checked.
var errBodyTooSlow = errors.New("body " + bodyTooSlowWhy)

const bodyTooSlowWhy = "not received in time: send it at once"

// bodyTooSlow is the refusal of such a body: 408, InvalidArgument naming
// body.
func bodyTooSlow() error {
	return &runtime.HTTPStatusError{HTTPStatus: http.StatusRequestTimeout, Err: invalidArgument("body", bodyTooSlowWhy)}
}

// timedBody gives body, the request w answers, until d from now to arrive,
// or it fails with errBodyTooSlow. The deadline bounds the body alone:
// net/http clears it once the body has arrived, before it watches the
// connection for a caller that hangs up during a long answer (an export's,
// a generation's; TestHTTPBodyMustArriveInTime).
func timedBody(w http.ResponseWriter, body io.ReadCloser, d time.Duration) io.ReadCloser {
	if http.NewResponseController(w).SetReadDeadline(time.Now().Add(d)) != nil {
		return body // a writer without deadlines (tests' recorders)
	}
	return deadlineBody{body}
}

type deadlineBody struct{ io.ReadCloser }

func (b deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		err = errBodyTooSlow
	}
	return n, err
}
