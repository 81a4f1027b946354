// Package upload streams an import file into AdminService.ImportCodes: the
// one loop that dispenserctl, dispenser-bench, the HTTP/JSON API's upload
// route and the web console share.
package upload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"
)

// Progress is told how an upload goes.
type Progress interface {
	// Add reports bytes and rows sent.
	Add(bytes, rows int64)
	// Uploaded reports that every byte is sent: the server is landing the
	// import.
	Uploaded()
	// Abort stops drawing.
	Abort()
}

// NoProgress reports nothing.
type NoProgress struct{}

func (NoProgress) Add(int64, int64) {}
func (NoProgress) Uploaded()        {}
func (NoProgress) Abort()           {}

// ChunkBytes is the size of one data message of an import stream.
const ChunkBytes = 256 << 10

// ReadError is a failure to read src: the upload was cut short (or, for an
// http.MaxBytesReader, passed its limit), and nothing was imported. Err is
// the reader's error.
type ReadError struct{ Err error }

func (e *ReadError) Error() string { return fmt.Sprintf("read file: %v (nothing was imported)", e.Err) }
func (e *ReadError) Unwrap() error { return e.Err }

// Import streams src to ImportCodes with opts and waits for the summary.
// If the upload fails midway (a *ReadError, or the server's status), the
// stream is cancelled and the server lands nothing.
func Import(ctx context.Context, c dispenserv1.AdminServiceClient, opts *dispenserv1.ImportOptions,
	src io.Reader, prog Progress,
) (*dispenserv1.ImportCodesResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.ImportCodes(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&dispenserv1.ImportCodesRequest{Payload: &dispenserv1.ImportCodesRequest_Options{Options: opts}}); err != nil {
		_, rerr := stream.CloseAndRecv()
		return nil, serverFirst(rerr, err)
	}
	buf := make([]byte, ChunkBytes)
	for {
		n, rerr := io.ReadFull(src, buf)
		if n > 0 {
			chunk := buf[:n]
			msg := &dispenserv1.ImportCodesRequest{Payload: &dispenserv1.ImportCodesRequest_Data{Data: chunk}}
			if err := stream.Send(msg); err != nil {
				// The server ended the call; its status says why.
				_, serr := stream.CloseAndRecv()
				prog.Abort()
				return nil, serverFirst(serr, err)
			}
			prog.Add(int64(n), int64(bytes.Count(chunk, []byte{'\n'})))
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			prog.Abort()
			return nil, &ReadError{Err: rerr}
		}
	}
	prog.Uploaded()
	resp, err := stream.CloseAndRecv()
	prog.Abort()
	return resp, err
}

// serverFirst prefers the server's status over the local send error.
func serverFirst(serverErr, sendErr error) error {
	if serverErr != nil && !errors.Is(serverErr, io.EOF) {
		return serverErr
	}
	return sendErr
}
