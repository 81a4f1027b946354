// Package migrations holds the database schema as numbered SQL files and
// applies them with tern, then the claim functions from functions.sql. Every
// replica may call Migrate at start-up: tern takes a Postgres advisory lock,
// so replicas that boot together apply each migration once, each in its own
// transaction with its version row; functions.sql is applied under an
// advisory lock of its own, every time.
package migrations

import (
	"context"
	"embed"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
)

//go:embed *.sql
var files embed.FS

// functionsSQL is the current body of every claim function, applied with
// CREATE OR REPLACE after the numbered migrations (see its header).
//
//go:embed functions.sql
var functionsSQL string

// functionsLock is the advisory lock key under which functions.sql is
// applied, so that replicas starting together apply it one after another.
const functionsLock = 0x64697370_66756e63 // "dispfunc"

// VersionTable records the applied schema version. It lives in the
// connection's current schema, so a test can own a whole schema.
const VersionTable = "dispenser_schema_version"

// Migrate brings the schema reached through conn up to the newest version and
// returns the version it started from and the version it ended at.
func Migrate(ctx context.Context, conn *pgx.Conn) (from, to int32, err error) {
	m, err := migrate.NewMigrator(ctx, conn, VersionTable)
	if err != nil {
		return 0, 0, fmt.Errorf("new migrator: %w", err)
	}
	if err := m.LoadMigrations(files); err != nil {
		return 0, 0, fmt.Errorf("load migrations: %w", err)
	}
	if from, err = m.GetCurrentVersion(ctx); err != nil {
		return 0, 0, fmt.Errorf("read schema version: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return from, 0, fmt.Errorf("migrate from version %d: %w", from, err)
	}
	if err := applyFunctions(ctx, conn); err != nil {
		return from, 0, err
	}
	if to, err = m.GetCurrentVersion(ctx); err != nil {
		return from, 0, fmt.Errorf("read schema version: %w", err)
	}
	return from, to, nil
}

// Latest is the version Migrate brings a schema to.
func Latest() (int32, error) {
	names, err := migrate.FindMigrations(files)
	if err != nil {
		return 0, fmt.Errorf("find migrations: %w", err)
	}
	return int32(len(names)), nil
}

// applyFunctions creates or replaces the claim functions in one transaction.
func applyFunctions(ctx context.Context, conn *pgx.Conn) error {
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(functionsLock)); err != nil {
			return err
		}
		// The simple protocol: the file holds many statements.
		_, err := tx.Exec(ctx, functionsSQL, pgx.QueryExecModeSimpleProtocol)
		return err
	})
	if err != nil {
		return fmt.Errorf("apply functions.sql: %w", err)
	}
	return nil
}
