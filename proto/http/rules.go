// Package httprules holds the HTTP/JSON mapping of the API
// (dispenser_http.yaml: google.api.Service http rules), which
// protoc-gen-grpc-gateway and protoc-gen-openapiv2 read at generation time
// (make proto) and dispenserd reads again to know which query parameters
// each route takes.
package httprules

import _ "embed"

// YAML is the mapping.
//
//go:embed dispenser_http.yaml
var YAML []byte
