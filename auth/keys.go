// Package auth authenticates callers by API key and authorises them by role:
// claimers claim (optionally in named pools only), auditors read without
// seeing codes, admins do everything. Keys are stored hashed.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	//go:embed sql/create_key.sql
	createKeySQL string
	//go:embed sql/get_key.sql
	getKeySQL string
	//go:embed sql/list_keys.sql
	listKeysSQL string
	//go:embed sql/revoke_key.sql
	revokeKeySQL string
)

// Role is what a key may do.
type Role string

// The roles.
const (
	Claimer Role = "claimer"
	Admin   Role = "admin"
	Auditor Role = "auditor"
)

// ParseRole reads a role name.
func ParseRole(s string) (Role, error) {
	switch r := Role(strings.ToLower(s)); r {
	case Claimer, Admin, Auditor:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q (claimer, admin or auditor)", s)
}

var (
	// ErrBadKey means the presented key is malformed, unknown, wrong or revoked.
	ErrBadKey = errors.New("invalid API key")
	// ErrKeyNotFound means no key has the id.
	ErrKeyNotFound = errors.New("key not found")
)

// Key is a stored API key; it never holds the secret.
type Key struct {
	ID    string
	Name  string
	Role  Role
	Pools []string // claimer pools; nil: every pool
	Rate  float64  // requests per second; 0: the server's default
	Burst int
	// CreatedAt and RevokedAt (zero while valid).
	CreatedAt, RevokedAt time.Time
	hash                 []byte
}

// AllowsPool reports whether the key may act on the pool.
func (k Key) AllowsPool(pool string) bool {
	if k.Pools == nil {
		return true
	}
	for _, p := range k.Pools {
		if p == pool {
			return true
		}
	}
	return false
}

// Store keeps keys in Postgres.
type Store struct{ db *pgxpool.Pool }

// NewStore returns a Store on a migrated database.
func NewStore(db *pgxpool.Pool) *Store { return &Store{db: db} }

const keyPrefix = "dk_"

// idAlphabet makes 12-character ids; 36 symbols, rejection sampled.
const idAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

func newID() string {
	b := make([]byte, 0, 12)
	buf := make([]byte, 1)
	for len(b) < 12 {
		_, _ = rand.Read(buf)
		if int(buf[0]) < 252 { // 252 = 7*36, no modulo bias
			b = append(b, idAlphabet[int(buf[0])%36])
		}
	}
	return string(b)
}

// Create makes a key and returns it with its full text, "dk_<id>_<secret>",
// which is shown once and never stored.
func (s *Store) Create(ctx context.Context, k Key) (Key, string, error) {
	if k.Role == "" {
		return Key{}, "", errors.New("a key needs a role")
	}
	if len(k.Name) > 200 {
		return Key{}, "", errors.New("a key name is at most 200 characters")
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	text := base64.RawURLEncoding.EncodeToString(secret)
	k.ID = newID()
	sum := sha256.Sum256([]byte(text))
	k.hash = sum[:]
	err := s.db.QueryRow(ctx, createKeySQL, k.ID, k.Name, string(k.Role), k.Pools, k.hash, k.Rate, k.Burst).Scan(&k.CreatedAt)
	if err != nil {
		return Key{}, "", fmt.Errorf("create key: %w", err)
	}
	return k, keyPrefix + k.ID + "_" + text, nil
}

// Get returns a key by id.
func (s *Store) Get(ctx context.Context, id string) (Key, error) {
	k, err := scanKey(s.db.QueryRow(ctx, getKeySQL, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Key{}, ErrKeyNotFound
	}
	if err != nil {
		return Key{}, fmt.Errorf("get key: %w", err)
	}
	return k, nil
}

// List returns every key, revoked ones too.
func (s *Store) List(ctx context.Context) ([]Key, error) {
	rows, err := s.db.Query(ctx, listKeysSQL)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Key, error) { return scanKey(r) })
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return keys, nil
}

// Revoke makes a key unusable; revoking a revoked key changes nothing. An
// unknown id is ErrKeyNotFound.
func (s *Store) Revoke(ctx context.Context, id string) (Key, error) {
	if _, err := s.db.Exec(ctx, revokeKeySQL, id); err != nil {
		return Key{}, fmt.Errorf("revoke key: %w", err)
	}
	return s.Get(ctx, id)
}

// Verify checks a presented key text against the store: its id must exist,
// its secret must hash to the stored hash (compared in constant time), and
// it must not be revoked. Every failure is ErrBadKey, so a caller cannot tell
// an unknown id from a wrong secret.
func (s *Store) Verify(ctx context.Context, text string) (Key, error) {
	id, secret, ok := splitKey(text)
	if !ok {
		return Key{}, ErrBadKey
	}
	k, err := s.Get(ctx, id)
	if errors.Is(err, ErrKeyNotFound) {
		return Key{}, ErrBadKey
	}
	if err != nil {
		return Key{}, err
	}
	if !k.matches(secret) || !k.RevokedAt.IsZero() {
		return Key{}, ErrBadKey
	}
	return k, nil
}

func (k Key) matches(secret string) bool {
	sum := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(sum[:], k.hash) == 1
}

// secretLen is the length of a key's secret: 32 bytes, base64url without
// padding.
const secretLen = 43

// splitKey parses "dk_<id>_<secret>", refusing anything not of exactly the
// shape Create makes, so a malformed key never costs a lookup.
func splitKey(text string) (id, secret string, ok bool) {
	rest, found := strings.CutPrefix(text, keyPrefix)
	if !found || len(rest) != 12+1+secretLen || rest[12] != '_' {
		return "", "", false
	}
	id, secret = rest[:12], rest[13:]
	for i := range len(id) {
		if c := id[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return "", "", false
		}
	}
	for i := range len(secret) {
		if c := secret[i]; !isSecretByte(c) {
			return "", "", false
		}
	}
	return id, secret, true
}

func scanKey(row pgx.Row) (Key, error) {
	var k Key
	var role string
	var revoked pgtype.Timestamptz
	err := row.Scan(&k.ID, &k.Name, &role, &k.Pools, &k.hash, &k.Rate, &k.Burst, &k.CreatedAt, &revoked)
	k.Role, k.RevokedAt = Role(role), revoked.Time
	return k, err
}

// isSecretByte reports a byte a key's secret may hold: base64url's alphabet.
func isSecretByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}
