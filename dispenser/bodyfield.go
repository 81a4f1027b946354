package dispenser

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
)

// NewDecoder is grpc-gateway's JSON decoder, except that a value protojson
// refuses without naming its field is refused naming the field it sits in:
// a duration or a time it cannot read ("hold_for": "abc", "claim_ends_at":
// "2020-13-01T00:00:00Z"), or an object where such a value belongs.
// protojson names the field when a scalar is wrong (gatewayField finds it)
// but only a position for these.
// A body the route check already holds (readBody) is not copied again.
func (m apiMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	if rb, ok := r.(*readBody); ok {
		return fieldDecoder{Decoder: m.JSONPb.NewDecoder(r), seen: rb}
	}
	seen := &bytes.Buffer{}
	return fieldDecoder{Decoder: m.JSONPb.NewDecoder(io.TeeReader(r, seen)), seen: seen}
}

// fieldDecoder keeps what the decoder read, to find a refused value's field.
type fieldDecoder struct {
	runtime.Decoder
	seen interface{ Bytes() []byte }
}

// readBody is a request body read whole into memory (apiRoute.bodyAgrees):
// its reader, and the bytes for fieldDecoder.
type readBody struct {
	*bytes.Reader
	b []byte
}

func (rb *readBody) Bytes() []byte { return rb.b }
func (*readBody) Close() error     { return nil }

// bodyFieldPrefix starts the refusal of a value fieldDecoder placed;
// gatewayRefusal names the field it quotes.
const bodyFieldPrefix = "body field"

// bodyTooLarge starts fieldDecoder's refusal of a body over its limit,
// which limitBodies could not refuse before reading it (one sent without
// its length); httpError answers it as limitBodies does.
const bodyTooLarge = "body larger than"

// protojsonAt is where protojson says an error is, in the value it read.
var protojsonAt = regexp.MustCompile(`\(line (\d+):(\d+)\): `)

func (d fieldDecoder) Decode(v any) error {
	err := d.Decoder.Decode(v)
	if err == nil {
		return d.ended()
	}
	if tooBig, over := errors.AsType[*http.MaxBytesError](err); over {
		// grpc-gateway keeps only the text; httpError answers it 413.
		return fmt.Errorf("%s %d bytes", bodyTooLarge, tooBig.Limit)
	}
	if errors.Is(err, errBodyTooSlow) {
		return errBodyTooSlow // the same: httpError answers it 408
	}
	msg := err.Error()
	if gatewayField.MatchString(msg) {
		return err
	}
	// protojson read the value json.Decoder gave it: the body from its
	// first character that is not white space.
	raw := bytes.TrimLeft(d.seen.Bytes(), " \t\r\n")
	at, why := -1, ""
	if m := protojsonAt.FindStringSubmatchIndex(msg); m != nil {
		line, _ := strconv.Atoi(msg[m[2]:m[3]])
		col, _ := strconv.Atoi(msg[m[4]:m[5]])
		at, why = offsetOf(raw, line, col), msg[m[1]:]
	}
	// What protojson says of a string with half a UTF-16 pair in it
	// ("\ud800"), which json.Decoder had let through: an escape it cannot
	// read, quoting what follows, or at the body's end no more than EOF.
	if strings.Contains(msg, "invalid escape code") || strings.HasSuffix(msg, "unexpected EOF") {
		if lone := loneSurrogate(raw); lone >= 0 {
			at, why = lone, "holds half of a UTF-16 surrogate pair (a \\u escape); a string must be valid Unicode"
		}
	}
	field := snakeCase(fieldAt(raw, at))
	if !queryKey.MatchString(field) { // none, or not a name to echo
		return err
	}
	return fmt.Errorf("%s %q: %s", bodyFieldPrefix, field, why)
}

// loneSurrogate is the offset in raw, JSON, of the first \u escape that is
// half of a UTF-16 surrogate pair without its other half, or -1.
func loneSurrogate(raw []byte) int {
	escape := func(i int) (rune, bool) { // the \uXXXX at i
		if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 16)
		return rune(v), err == nil
	}
	inString := false
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c == '"':
			inString = !inString
		case c == '\\' && inString:
			r, ok := escape(i)
			if !ok {
				i++ // \" \\ \n and the like: skip the escaped character
				continue
			}
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return i
			case r >= 0xD800 && r <= 0xDBFF:
				if lo, ok := escape(i + 6); !ok || lo < 0xDC00 || lo > 0xDFFF {
					return i
				}
				i += 6
			}
			i += 5
		}
	}
	return -1
}

// ended refuses a body with more after its JSON value (a second object,
// say), which grpc-gateway would ignore: a body is one request.
func (d fieldDecoder) ended() error {
	w, ok := d.Decoder.(runtime.DecoderWrapper)
	if !ok {
		return nil
	}
	if _, err := w.Token(); !errors.Is(err, io.EOF) {
		return errors.New("holds more than one JSON value")
	}
	return nil
}

// offsetOf turns a line and column (1-based, the column counted in
// characters, as protojson counts them) into a byte offset of b, or -1.
func offsetOf(b []byte, line, col int) int {
	off := 0
	for range line - 1 {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return -1
		}
		off += i + 1
	}
	for range col - 1 {
		if off >= len(b) {
			return -1
		}
		_, size := utf8.DecodeRune(b[off:])
		off += size
	}
	return off
}

// fieldAt is the field path (keys joined by dots, array indexes left out)
// of the JSON token of raw that spans offset at: the key itself, or the
// value of the key it belongs to. "" when at is outside raw or raw cannot
// be read up to it.
func fieldAt(raw []byte, at int) string {
	if at < 0 || at >= len(raw) {
		return ""
	}
	type frame struct {
		object    bool
		key       string
		expectKey bool
	}
	var stack []frame
	path := func() string {
		var parts []string
		for _, f := range stack {
			if f.object && f.key != "" {
				parts = append(parts, f.key)
			}
		}
		return strings.Join(parts, ".")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		top := len(stack) - 1
		if top >= 0 && stack[top].object && stack[top].expectKey {
			if key, ok := tok.(string); ok {
				stack[top].key, stack[top].expectKey = key, false
				if dec.InputOffset() > int64(at) {
					return path()
				}
				continue
			}
		}
		here := path()
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{object: true, expectKey: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:top]
		}
		if dec.InputOffset() > int64(at) {
			return here
		}
		if top = len(stack) - 1; top >= 0 && stack[top].object && !isOpen(tok) {
			stack[top].expectKey = true
		}
	}
}

// isOpen reports whether tok opens an object or an array.
func isOpen(tok json.Token) bool {
	return tok == json.Delim('{') || tok == json.Delim('[')
}
