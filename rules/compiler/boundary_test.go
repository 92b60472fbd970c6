package compiler

import (
	"go/build"
	"os/exec"
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
		if strings.HasPrefix(path, "github.com/pgrules/pgrules/") && !allowed[path] {
			t.Errorf("the compiler imports %s", path)
		}
	}
	// Nor through the packages it imports.
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, path := range strings.Fields(string(out)) {
		if strings.Contains(path, "jackc/") || strings.Contains(path, "pg_query") || strings.Contains(path, "lib/pq") || strings.HasSuffix(path, "pgrules/stmt") {
			t.Errorf("the compiler depends on %s", path)
		}
	}
}
