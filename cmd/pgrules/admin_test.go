package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/pgrules/pgrules/internal/demo"
	"github.com/pgrules/pgrules/internal/pgtest"
	pgsql "github.com/pgrules/pgrules/sql"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestInstallAndExplain(t *testing.T) {
	url := pgtest.DB(t)
	ctx := context.Background()
	if err := pgtest.Exec(ctx, url, demo.Schema); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"installed the pgrules schema, version " + fmt.Sprint(pgsql.Version), "the pgrules schema is up to date (version " + fmt.Sprint(pgsql.Version) + ")"} {
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

func TestVerifyAndRebuild(t *testing.T) {
	url := pgtest.DB(t)
	ctx := context.Background()
	if err := pgtest.Exec(ctx, url, demo.Schema+";"+demo.Data); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := install(ctx, []string{"--upstream", url}, &out); err != nil {
		t.Fatal(err)
	}
	// Rules defined behind the proxy's back, over rows whose derived
	// values were never computed, written with the guard lifted.
	if err := pgtest.Exec(ctx, url, demo.Rules+`;
		SET LOCAL pgrules.guard = off;
		INSERT INTO orders (id, customer_id) VALUES (1, 1);
		INSERT INTO lineitem (order_id, product_id, quantity, unit_price) VALUES (1, 1, 3, 10.00), (1, 2, 2, 25.50)`); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err := maintain(ctx, []string{"--upstream", url}, &out, false)
	if err == nil || !strings.Contains(out.String(), "lineitem.amount: public.lineitem 1: stored NULL, computed 30.00") ||
		!strings.Contains(out.String(), "pgrules.guard: public.lineitem: INSERT by ") ||
		!strings.Contains(out.String(), "customer.unpaid_order_count: public.customer 1: stored 0, computed 1") {
		t.Fatalf("verify: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := maintain(ctx, []string{"--upstream", url}, &out, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "lineitem.amount: 2 rows corrected") || !strings.Contains(out.String(), "customer.balance: 1 rows corrected") {
		t.Fatalf("rebuild:\n%s", out.String())
	}
	out.Reset()
	if err := maintain(ctx, []string{"--upstream", url, "customer"}, &out, false); err != nil || out.String() != "no drift\n" {
		t.Fatalf("verify after rebuild: %v\n%s", err, out.String())
	}
	// --table names the table too, and only its drift is reported.
	if err := pgtest.Exec(ctx, url, "SET LOCAL pgrules.guard = off; UPDATE customer SET unpaid_order_count = 7"); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := maintain(ctx, []string{"--upstream", url, "--table", "orders"}, &out, false); err != nil || out.String() != "no drift\n" {
		t.Fatalf("verify --table orders: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := maintain(ctx, []string{"--upstream", url, "--table", "customer"}, &out, false); err == nil || !strings.Contains(out.String(), "customer.unpaid_order_count") {
		t.Fatalf("verify --table customer: %v\n%s", err, out.String())
	}
}
