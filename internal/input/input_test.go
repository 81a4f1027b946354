package input

import (
	"errors"
	"math/rand/v2"
	"regexp"
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

// poolIDSpec is the pool id's shape as the API documents it; PoolID checks
// it with a loop over the bytes, which must agree with it everywhere.
var poolIDSpec = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func TestPoolIDMatchesItsPattern(t *testing.T) {
	t.Parallel()
	// Every byte at every place of short ids, then random ids of the
	// characters near the edges of the allowed ranges.
	var ids []string
	for b := range 256 {
		for _, f := range []string{"%", "a%", "%a", "a%b"} {
			ids = append(ids, strings.ReplaceAll(f, "%", string([]byte{byte(b)})))
		}
	}
	alphabet := []byte("az09._-{}/:AZ`@[~ \x00\xff")
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, rng.IntN(66))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		ids = append(ids, string(b))
	}
	for _, id := range ids {
		want := poolIDSpec.MatchString(id)
		if got := PoolID("pool_id", id) == nil; got != want {
			t.Fatalf("PoolID(%q) ok=%v, the pattern says %v", id, got, want)
		}
	}
}
