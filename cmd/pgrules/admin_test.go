package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/pgrules/pgrules/internal/demo"
	"github.com/pgrules/pgrules/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestInstallAndExplain(t *testing.T) {
	url := pgtest.DB(t)
	ctx := context.Background()
	if err := pgtest.Exec(ctx, url, demo.Schema); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"installed the pgrules schema, version 2", "the pgrules schema is up to date (version 2)"} {
		var out bytes.Buffer
		if err := install(ctx, []string{"--upstream", url}, &out); err != nil || !strings.Contains(out.String(), want) {
			t.Fatalf("install: %v, %q; want %q", err, out.String(), want)
		}
	}
	if err := pgtest.Exec(ctx, url, demo.Rules); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := explain(ctx, []string{"--upstream", url, "lineitem"}, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "1  lineitem.unit_price  copy") || !strings.Contains(lines[2], "lineitem.amount") ||
		!strings.Contains(lines[2], "orders.amount_total") {
		t.Fatalf("explain lineitem:\n%s", out.String())
	}
	if err := explain(ctx, []string{"--upstream", url, "nosuch"}, &out); err == nil {
		t.Fatal("explain of an unknown table succeeded")
	}
	if err := install(ctx, nil, &out); err == nil || !strings.Contains(err.Error(), "--upstream") {
		t.Fatalf("install without --upstream: %v", err)
	}
}
