// Package input checks the identifiers callers send. Each kind of id has one
// validator, shared by every API that takes it (claims, holds, prizes, keys),
// so a value accepted in one place is never refused, or misread, in another.
// Validators look at the length first: a hostile 8 MiB id costs nothing.
package input

import "unicode/utf8"

// FieldError reports one invalid input field. Field is named as the API
// names it (for example "pool.per_user_limit"), so that a caller can find
// it. Description never repeats the value: it may be a code or a secret.
type FieldError struct {
	Field       string
	Description string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Description }

// MaxKeyChars is the longest user, request or external id, in characters.
const MaxKeyChars = 128

// maxPoolIDLen is the longest pool id, in bytes (ASCII only).
const maxPoolIDLen = 63

// poolIDShape reports whether v has the shape of a pool id,
// ^[a-z0-9][a-z0-9._-]*$ (the length is checked apart). The id is the hash
// tag of every Redis key of the pool, so braces must never be allowed in
// it. A loop over the bytes, not a regexp: every call names a pool, and the
// regexp cost a claim about a microsecond of the server's CPU.
func poolIDShape(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return v != ""
}

// PoolID checks a pool id: 1 to 63 characters of a-z, 0-9, '.', '_' or '-',
// starting with a letter or digit.
func PoolID(field, v string) error {
	if v == "" {
		return &FieldError{field, "is required"}
	}
	if len(v) > maxPoolIDLen || !poolIDShape(v) {
		return &FieldError{field, "must be 1 to 63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"}
	}
	return nil
}

// UserID checks the id of the user a code is for.
func UserID(field, v string) error { return key(field, v) }

// RequestID checks a caller's idempotency key. Since no request id holds a
// control character, ids the service makes for itself (a prize's claim) can
// use one and never meet a caller's.
func RequestID(field, v string) error { return key(field, v) }

// ExternalID checks the id a lottery gives its own record (a prize).
func ExternalID(field, v string) error { return key(field, v) }

// key accepts 1 to 128 characters of valid UTF-8 without control
// characters: what a log line, a CSV export and a Redis key can all carry.
func key(field, v string) error {
	if v == "" {
		return &FieldError{field, "is required"}
	}
	if len(v) > MaxKeyChars*utf8.UTFMax || !utf8.ValidString(v) || utf8.RuneCountInString(v) > MaxKeyChars {
		return &FieldError{field, "must be 1 to 128 characters of UTF-8"}
	}
	for _, r := range v {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return &FieldError{field, "must not contain control characters"}
		}
	}
	return nil
}
