package compiler

import (
	"go/build"
	"strings"
	"testing"
)

// TestKnowsNoConnection: the compiler imports nothing that reaches
// PostgreSQL or the client (the engine, stmt, the proxy, pgx), so that it
// compiles and evaluates rules with no database at hand.
func TestKnowsNoConnection(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{
		"github.com/pgrules/pgrules/catalog":       true,
		"github.com/pgrules/pgrules/pgerr":         true,
		"github.com/pgrules/pgrules/rules/sqltext": true,
	}
	for _, path := range pkg.Imports {
		project := strings.HasPrefix(path, "github.com/pgrules/pgrules/")
		if project && !allowed[path] || strings.Contains(path, "jackc/") || strings.Contains(path, "pg_query") || strings.Contains(path, "lib/pq") {
			t.Errorf("the compiler imports %s", path)
		}
	}
}
