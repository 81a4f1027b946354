package dispenser

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"gopkg.in/yaml.v3"

	httprules "github.com/dispenserhq/dispenser/proto/http"
)

// apiRoute is what one HTTP route takes beyond its path: in its query, the
// fields of its request that neither its path nor its body gives (none when
// the body is the whole request); in its body, fields its path gives too,
// which must then agree.
type apiRoute struct {
	request protoreflect.MessageDescriptor
	bound   []string // field paths the path or the body gives
	none    bool     // body "*": the query gives nothing
	names   []string // a route of its own: the parameters it reads
	agree   []pathField
}

// pathField is a path parameter a JSON body may name as well: param as the
// path's template names it (pool.id), key as the body's top-level field
// (id, in a body that is the pool).
type pathField struct{ param, key string }

// httpRule is one rule of the API's HTTP mapping (google.api.HttpRule, as
// YAML): a method's route, and any more routes it has.
type httpRule struct {
	Selector string     `yaml:"selector"`
	Get      string     `yaml:"get"`
	Post     string     `yaml:"post"`
	Put      string     `yaml:"put"`
	Patch    string     `yaml:"patch"`
	Delete   string     `yaml:"delete"`
	Body     string     `yaml:"body"`
	More     []httpRule `yaml:"additional_bindings"`
}

// apiRoutes reads the API's HTTP rules into each route's apiRoute, by
// method and path template as grpc-gateway's Pattern writes it
// ("GET /v1/pools/{pool_id=*}/claims/{request_id=*}"), so a request's route
// is found without rewriting its pattern.
func apiRoutes() (map[string]apiRoute, error) {
	return apiRoutesFrom(httprules.YAML)
}

// apiRoutesFrom is apiRoutes over the HTTP rules in rulesYAML.
func apiRoutesFrom(rulesYAML []byte) (map[string]apiRoute, error) {
	var svc struct {
		HTTP struct {
			Rules []httpRule `yaml:"rules"`
		} `yaml:"http"`
	}
	if err := yaml.Unmarshal(rulesYAML, &svc); err != nil {
		return nil, fmt.Errorf("http rules: %w", err)
	}
	routes := make(map[string]apiRoute, len(svc.HTTP.Rules))
	var add func(rule httpRule, request protoreflect.MessageDescriptor) error
	add = func(rule httpRule, request protoreflect.MessageDescriptor) error {
		for method, path := range map[string]string{"GET": rule.Get, "POST": rule.Post, "PUT": rule.Put,
			"PATCH": rule.Patch, "DELETE": rule.Delete} {
			if path == "" {
				continue
			}
			r := apiRoute{request: request, none: rule.Body == "*"}
			for _, m := range pathVar.FindAllStringSubmatch(path, -1) {
				param := m[1]
				r.bound = append(r.bound, param)
				// The body may name the parameter too: a top-level field
				// of a body that is the request, or of the one it is.
				key, found := param, rule.Body == "*"
				if !found && rule.Body != "" {
					key, found = strings.CutPrefix(param, rule.Body+".")
				}
				if !found {
					continue
				}
				if strings.Contains(key, ".") {
					return fmt.Errorf("http rule %q: path field %q sits deeper in the body than the body check reads", rule.Selector, param)
				}
				r.agree = append(r.agree, pathField{param: param, key: key})
			}
			if rule.Body != "" && rule.Body != "*" {
				r.bound = append(r.bound, rule.Body)
			}
			routes[method+" "+gatewayTemplate(path)] = r
		}
		for _, more := range rule.More {
			if err := add(more, request); err != nil {
				return err
			}
		}
		return nil
	}
	for _, rule := range svc.HTTP.Rules {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(rule.Selector))
		if err != nil {
			return nil, fmt.Errorf("http rule %q: %w", rule.Selector, err)
		}
		md, ok := d.(protoreflect.MethodDescriptor)
		if !ok {
			return nil, fmt.Errorf("http rule %q: not a method", rule.Selector)
		}
		if err := add(rule, md.Input()); err != nil {
			return nil, err
		}
	}
	// The raw import upload reads its options from the query itself.
	routes["POST "+gatewayTemplate("/v1/pools/{pool_id}/imports")] = apiRoute{names: []string{"format", "source_name", "strict"}}
	return routes, nil
}

// gatewayTemplate writes a rule's path template as grpc-gateway's Pattern
// does: a capture without a value is one segment, "=*".
func gatewayTemplate(path string) string {
	return pathVarBare.ReplaceAllString(path, "{$1=*}")
}

var (
	pathVar     = regexp.MustCompile(`\{([A-Za-z0-9_.]+)[}=]`)
	pathVarBare = regexp.MustCompile(`\{([A-Za-z0-9_.]+)\}`)
	// queryKey is a parameter name a refusal may echo: a field path's
	// characters, as long as a field path may be.
	queryKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]{0,63}$`)
)

// checkRoutes is the check every route's request passes before its handler
// runs, which grpc-gateway alone would not make:
//
//   - its query names only parameters the route takes: a field of the
//     request its path and body do not give, and nothing on a route whose
//     body is the whole request. grpc-gateway would ignore the rest, and a
//     misspelt page_size or state would list with the default, which looks
//     like an answer to the question asked; an unknown field of a body is
//     refused the same way.
//   - a JSON body that names a field the path gives too (a claim's pool_id,
//     an update's pool id) names the path's value. grpc-gateway would take
//     the path's without a word, so a claim posted to one pool's URL with
//     another pool in its body would be decided in the URL's pool.
//
// Each refusal is InvalidArgument naming the parameter or field, before
// anything is done. Routes not in the HTTP rules but the raw import upload
// (the OpenAPI document) are left alone.
func checkRoutes(routes map[string]apiRoute, mux **runtime.ServeMux) runtime.Middleware {
	return func(next runtime.HandlerFunc) runtime.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request, pathParams map[string]string) {
			if r.URL.RawQuery == "" && (r.Method == http.MethodGet || len(pathParams) == 0) {
				next(w, r, pathParams) // nothing to check: the common GET, or no path field
				return
			}
			pat, ok := runtime.HTTPPattern(r.Context())
			if !ok {
				next(w, r, pathParams)
				return
			}
			route := routes[r.Method+" "+pat.String()]
			var err error
			if r.URL.RawQuery != "" {
				err = route.checkQuery(r.URL.RawQuery)
			}
			if err == nil && len(route.agree) > 0 {
				err = route.bodyAgrees(r, pathParams)
			}
			if err != nil {
				_, out := runtime.MarshalerForRequest(*mux, r)
				runtime.HTTPError(r.Context(), *mux, out, w, r, err)
				return
			}
			next(w, r, pathParams)
		}
	}
}

// checkQuery is checkRoutes' query check: nil, or the InvalidArgument
// naming the first parameter (in name order) the route does not take, or
// naming the query when it cannot be read. The zero apiRoute (a route not
// in the table) takes any query.
func (q apiRoute) checkQuery(rawQuery string) error {
	if q.request == nil && q.names == nil {
		return nil
	}
	values, err := url.ParseQuery(rawQuery)
	if err != nil { // a bad escape, a ';' separator: grpc-gateway's parse would say "body"
		return invalidArgument("query", "could not be read: percent-escapes must be well formed, pairs separated by '&'")
	}
	keys := make([]string, 0, len(values))
	for key := range values {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	for _, key := range keys {
		why := q.refuse(key)
		if why == "" {
			continue
		}
		if !queryKey.MatchString(key) {
			return invalidArgument("query", "names a parameter this route does not take")
		}
		return invalidArgument(key, why)
	}
	return nil
}

// bodyAgrees is checkRoutes' body check: nil, or the InvalidArgument naming
// the first of the route's path fields whose value the JSON body gives
// otherwise (by proto or JSON name). The body is read once and handed on
// as a readBody; one that names none of those fields is not parsed here,
// nor one that is not JSON (the gateway refuses it). A body over its limit
// is refused 413, one that did not arrive in time 408.
func (q apiRoute) bodyAgrees(r *http.Request, pathParams map[string]string) error {
	buf := bytes.NewBuffer(make([]byte, 0, min(max(r.ContentLength, 0)+1, maxJSONBodyBytes+1)))
	_, err := buf.ReadFrom(r.Body)
	body := buf.Bytes()
	r.Body = &readBody{Reader: bytes.NewReader(body), b: body}
	if tooBig, over := errors.AsType[*http.MaxBytesError](err); over {
		return bodyOverLimit(tooBig.Limit)
	} else if errors.Is(err, errBodyTooSlow) {
		return bodyTooSlow()
	} else if err != nil {
		return invalidArgument("body", "could not be read")
	}
	var top map[string]json.RawMessage
	for _, f := range q.agree {
		// The stem is in both the proto name and the JSON name protojson
		// also takes (pool_id, poolId), unless the key is spelled with
		// escapes ("pool\u005fid"), which protojson reads as the name.
		if stem, _, _ := strings.Cut(f.key, "_"); !bytes.Contains(body, []byte(stem)) && !bytes.Contains(body, []byte(`\u`)) {
			continue
		}
		if top == nil && json.Unmarshal(body, &top) != nil {
			return nil
		}
		inPath := pathParams[f.param]
		for key, raw := range top {
			var inBody string
			if snakeCase(key) == f.key && json.Unmarshal(raw, &inBody) == nil && inBody != "" && inBody != inPath {
				return invalidArgument(f.param, "differs from the one in the URL")
			}
		}
	}
	return nil
}

// refuse says why the route does not take the query parameter key, or ""
// if it does. A key is a field path as grpc-gateway reads one: proto or
// JSON names joined by dots through singular message fields, the last
// optionally followed by a map key in brackets.
func (q apiRoute) refuse(key string) string {
	if q.names != nil {
		if slices.Contains(q.names, key) {
			return ""
		}
		return "is not a parameter of this route"
	}
	if q.none {
		return "is not a query parameter: this route reads its request from the body"
	}
	if i := strings.IndexByte(key, '['); i >= 0 && strings.HasSuffix(key, "]") {
		key = key[:i]
	}
	desc := q.request
	var path []string
	for part := range strings.SplitSeq(key, ".") {
		if desc == nil {
			return "is not a field of the request"
		}
		fd := desc.Fields().ByTextName(part)
		if fd == nil {
			fd = desc.Fields().ByJSONName(part)
		}
		if fd == nil {
			return "is not a field of the request"
		}
		path = append(path, string(fd.Name()))
		desc = nil
		if fd.Message() != nil && fd.Cardinality() != protoreflect.Repeated {
			desc = fd.Message()
		}
	}
	joined := strings.Join(path, ".")
	for _, b := range q.bound {
		if joined == b || strings.HasPrefix(joined, b+".") || strings.HasPrefix(b, joined+".") {
			return "is given by the path or the body, not the query"
		}
	}
	return ""
}

// allowedMethods is, for a 405 answer's Allow header, the methods the
// routes whose template the request's path fits take, in a fixed order:
// from the same route table as the query check, and the OpenAPI document's
// GET; HEAD wherever GET is. A template's {var} fits any one segment, a verb ("claims:export",
// "{request_id}:confirm") must be there.
func allowedMethods(routes map[string]apiRoute, r *http.Request) []string {
	segs := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	var out []string
	keys := append(slices.Collect(maps.Keys(routes)), "GET /openapi.json")
	for _, key := range keys {
		method, template, _ := strings.Cut(key, " ")
		if fitsTemplate(segs, strings.Split(strings.TrimPrefix(template, "/"), "/")) && !slices.Contains(out, method) {
			out = append(out, method)
		}
	}
	if slices.Contains(out, http.MethodGet) {
		out = append(out, http.MethodHead) // limitBodies answers it as GET without the body
	}
	slices.Sort(out)
	return out
}

// fitsTemplate reports whether path segments fit a template's.
func fitsTemplate(segs, tmpl []string) bool {
	if len(segs) != len(tmpl) {
		return false
	}
	for i, t := range tmpl {
		s := segs[i]
		if i == len(tmpl)-1 {
			if name, verb, ok := strings.Cut(t, "}:"); ok && strings.HasPrefix(name, "{") {
				rest, found := strings.CutSuffix(s, ":"+verb)
				if !found || rest == "" {
					return false
				}
				continue
			}
		}
		if strings.HasPrefix(t, "{") {
			if s == "" {
				return false
			}
			continue
		}
		if s != t {
			return false
		}
	}
	return true
}
