package tests

import (
	"context"
	"testing"
)

func TestProxyRelaysAQuery(t *testing.T) {
	db := shared.newDB(t)
	p := startProxy(t, shared)
	c := connect(t, p.url("", "", db))
	res, err := c.Exec(context.Background(), "SELECT 40 + 2 AS answer, current_database()").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(res[0].Rows[0][0]); got != "42" {
		t.Fatalf("answer = %q", got)
	}
	if got := string(res[0].Rows[0][1]); got != db {
		t.Fatalf("database = %q, want %q", got, db)
	}
	if c.TxStatus() != 'I' {
		t.Fatalf("tx status %c", c.TxStatus())
	}
}
