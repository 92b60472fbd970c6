package demo

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// The check-credit scenario's SQL scripts.
var (
	//go:embed schema.sql
	Schema string
	//go:embed data.sql
	Data string
	//go:embed triggers.sql
	Triggers string
	//go:embed rules.sql
	Rules string
	// Events are the demo's events and the schema they need; "{{webhook}}"
	// stands for the URL their webhook posts to.
	//go:embed events.sql
	Events string
)

// Load runs the schema and data scripts on the database at url.
func Load(ctx context.Context, url string) error {
	return Exec(ctx, url, Schema, Data)
}

// Exec runs each script, in order, as one simple-protocol query on one
// connection to url.
func Exec(ctx context.Context, url string, scripts ...string) error {
	conn, err := pgconn.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, s := range scripts {
		if _, err := conn.Exec(ctx, s).ReadAll(); err != nil {
			return fmt.Errorf("load scenario: %w", err)
		}
	}
	return nil
}
