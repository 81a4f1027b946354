package dispenser

import (
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

// queryRoute is what one HTTP route takes in its query: the fields of its
// request that neither its path nor its body gives (none when the body is
// the whole request).
type queryRoute struct {
	request protoreflect.MessageDescriptor
	bound   []string // field paths the path or the body gives
	none    bool     // body "*": the query gives nothing
	names   []string // a route of its own: the parameters it reads
}

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

// queryRoutes reads the API's HTTP rules into each route's queryRoute, by
// method and path template as grpc-gateway's Pattern writes it without its
// captures' "=*" ("GET /v1/pools/{pool_id}/claims/{request_id}").
func queryRoutes() (map[string]queryRoute, error) {
	var svc struct {
		HTTP struct {
			Rules []httpRule `yaml:"rules"`
		} `yaml:"http"`
	}
	if err := yaml.Unmarshal(httprules.YAML, &svc); err != nil {
		return nil, fmt.Errorf("http rules: %w", err)
	}
	routes := make(map[string]queryRoute, len(svc.HTTP.Rules))
	var add func(rule httpRule, request protoreflect.MessageDescriptor)
	add = func(rule httpRule, request protoreflect.MessageDescriptor) {
		for method, path := range map[string]string{"GET": rule.Get, "POST": rule.Post, "PUT": rule.Put,
			"PATCH": rule.Patch, "DELETE": rule.Delete} {
			if path == "" {
				continue
			}
			r := queryRoute{request: request, none: rule.Body == "*"}
			for _, m := range pathVar.FindAllStringSubmatch(path, -1) {
				r.bound = append(r.bound, m[1])
			}
			if rule.Body != "" && rule.Body != "*" {
				r.bound = append(r.bound, rule.Body)
			}
			routes[method+" "+pathVarValue.ReplaceAllString(path, "}")] = r
		}
		for _, more := range rule.More {
			add(more, request)
		}
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
		add(rule, md.Input())
	}
	// The raw import upload reads its options from the query itself.
	routes["POST /v1/pools/{pool_id}/imports"] = queryRoute{names: []string{"format", "source_name", "strict"}}
	return routes, nil
}

var (
	pathVar      = regexp.MustCompile(`\{([A-Za-z0-9_.]+)[}=]`)
	pathVarValue = regexp.MustCompile(`=[^}]*}`)
	// queryKey is a parameter name a refusal may echo: a field path's
	// characters, as long as a field path may be.
	queryKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]{0,63}$`)
)

// strictQueries refuses a request whose query names a parameter its route
// does not take: no field of the request, a field its path or body already
// gives, or anything on a route whose body is the whole request.
// grpc-gateway would ignore it, and a misspelt page_size or state would
// list with the default, which looks like an answer to the question asked;
// an unknown field of a body is refused the same way. Routes not in the
// HTTP rules but the raw import upload (the OpenAPI document) are left
// alone.
func strictQueries(routes map[string]queryRoute, mux **runtime.ServeMux) runtime.Middleware {
	return func(next runtime.HandlerFunc) runtime.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request, pathParams map[string]string) {
			if r.URL.RawQuery != "" {
				if err := checkQuery(routes, r); err != nil {
					_, out := runtime.MarshalerForRequest(*mux, r)
					runtime.HTTPError(r.Context(), *mux, out, w, r, err)
					return
				}
			}
			next(w, r, pathParams)
		}
	}
}

// checkQuery is strictQueries' check: nil, or the InvalidArgument naming
// the first parameter (in name order) the route does not take, or naming
// the query when it cannot be read.
func checkQuery(routes map[string]queryRoute, r *http.Request) error {
	pat, ok := runtime.HTTPPattern(r.Context())
	if !ok {
		return nil
	}
	route, ok := routes[r.Method+" "+pathVarValue.ReplaceAllString(pat.String(), "}")]
	if !ok {
		return nil
	}
	values, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil { // a bad escape, a ';' separator: grpc-gateway's parse would say "body"
		return invalidArgument("query", "could not be read: percent-escapes must be well formed, pairs separated by '&'")
	}
	keys := make([]string, 0, len(values))
	for key := range values {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	for _, key := range keys {
		why := route.refuse(key)
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

// refuse says why the route does not take the query parameter key, or ""
// if it does. A key is a field path as grpc-gateway reads one: proto or
// JSON names joined by dots through singular message fields, the last
// optionally followed by a map key in brackets.
func (q queryRoute) refuse(key string) string {
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
// GET. A template's {var} fits any one segment, a verb ("claims:export",
// "{request_id}:confirm") must be there.
func allowedMethods(routes map[string]queryRoute, r *http.Request) []string {
	segs := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	var out []string
	keys := append(slices.Collect(maps.Keys(routes)), "GET /openapi.json")
	for _, key := range keys {
		method, template, _ := strings.Cut(key, " ")
		if fitsTemplate(segs, strings.Split(strings.TrimPrefix(template, "/"), "/")) && !slices.Contains(out, method) {
			out = append(out, method)
		}
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
