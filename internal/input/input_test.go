package input

import (
	"errors"
	"strings"
	"testing"
)

func TestValidators(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("a", 8<<20)
	cases := []struct {
		name  string
		check func(string, string) error
		v     string
		ok    bool
	}{
		{"pool", PoolID, "summer-2026.v1_a", true},
		{"pool empty", PoolID, "", false},
		{"pool brace", PoolID, "a{b}", false},
		{"pool upper", PoolID, "Summer", false},
		{"pool leading dash", PoolID, "-a", false},
		{"pool 63", PoolID, strings.Repeat("a", 63), true},
		{"pool 64", PoolID, strings.Repeat("a", 64), false},
		{"pool huge", PoolID, huge, false},
		{"request", RequestID, "order-77 / Ünïcödé ✓", true},
		{"request empty", RequestID, "", false},
		{"request 128 runes", RequestID, strings.Repeat("é", 128), true},
		{"request 129 runes", RequestID, strings.Repeat("é", 129), false},
		{"request newline", RequestID, "a\nb", false},
		{"request prize form", RequestID, "\x01prize:1", false},
		{"request DEL", RequestID, "a\x7fb", false},
		{"request C1", RequestID, "a\u0085b", false},
		{"request bad UTF-8", RequestID, "a\xffb", false},
		{"request huge", RequestID, huge, false},
		{"user tab", UserID, "a\tb", false},
		{"user", UserID, "user-42", true},
		{"external", ExternalID, "draw-2026-11-22#7", true},
		{"external NUL", ExternalID, "a\x00", false},
	}
	for _, c := range cases {
		err := c.check("f", c.v)
		if (err == nil) != c.ok {
			t.Errorf("%s: got %v, want ok=%v", c.name, err, c.ok)
			continue
		}
		var fe *FieldError
		if err == nil {
			continue
		}
		if !errors.As(err, &fe) || fe.Field != "f" {
			t.Errorf("%s: %v does not name the field", c.name, err)
		}
		if len(c.v) > 3 && strings.Contains(err.Error(), c.v) {
			t.Errorf("%s: the error repeats the value", c.name)
		}
	}
}
