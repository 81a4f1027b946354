// Package rpcerr builds the service's refusals: a gRPC status carrying a
// google.rpc.ErrorInfo in the service's domain, and, when the caller should
// wait before calling again, a google.rpc.RetryInfo (over HTTP, the
// Retry-After header). The authorizer and the services build theirs here.
package rpcerr

import (
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Domain is the domain of every google.rpc.ErrorInfo the service sends.
const Domain = "dispenser.v1"

// New is a status with details; should they fail to attach, the status
// alone, so that a refusal is never lost to its details.
func New(code codes.Code, msg string, details ...protoadapt.MessageV1) error {
	st, err := status.New(code, msg).WithDetails(details...)
	if err != nil {
		return status.Error(code, msg)
	}
	return st.Err()
}

// Info is a status with an ErrorInfo of reason.
func Info(code codes.Code, msg, reason string) error {
	return New(code, msg, &errdetails.ErrorInfo{Reason: reason, Domain: Domain})
}

// Retry is Info with a RetryInfo asking the caller to wait before calling
// again.
func Retry(code codes.Code, msg, reason string, wait time.Duration) error {
	return New(code, msg, &errdetails.ErrorInfo{Reason: reason, Domain: Domain},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)})
}
