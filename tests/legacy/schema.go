package legacy

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/jackc/pgx/v4"
)

//go:embed schema.sql
var schemaSQL string

// Schema returns schema.sql: the SQL-era ref-store tables (spec §2.3) and
// schema_migrations at version 37.
func Schema() string { return schemaSQL }

// LoadSchema runs Schema() on dsn (simple protocol, one round trip). It is
// idempotent.
func LoadSchema(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("legacy: load schema: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, schemaSQL); err != nil {
		return fmt.Errorf("legacy: load schema: %w", err)
	}
	return nil
}
