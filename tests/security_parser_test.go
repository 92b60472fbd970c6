package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgrules/pgrules/sqlparse"
)

// No statement may crash the proxy (docs/proxy.md): a statement nested
// deeper than PostgreSQL's parser, run inside the proxy, can safely go is
// refused with 54001, as PostgreSQL refuses one too deep for its own
// stack; that session goes on, every other session is untouched. Wide
// statements, which the grammar keeps flat, pass.

// spDBs are a database with the check-credit rules and one without any,
// behind one proxy, each with a connection of a login role without
// privileges beyond its tables'.
type spDBs struct {
	p                *testProxy
	ruled, plain     string
	admin            *pgconn.PgConn // superuser, straight to the ruled database
	ruledC, plainC   *pgconn.PgConn // the login role, through the proxy
	ruledBy, plainBy *pgconn.PgConn // bystanders, in open transactions
}

func spSetup(t *testing.T) *spDBs {
	t.Helper()
	d := &spDBs{}
	d.ruled, d.p, d.admin = creditDB(t)
	owner := connect(t, d.p.url("", "", d.ruled))
	defineCreditRules(t, owner)
	scalar(t, owner, "INSERT INTO orders (id, customer_id) VALUES (1, 1)")
	scalar(t, d.admin, "CREATE TABLE wide (id int PRIMARY KEY, v text, n int)")
	d.plain = shared.newDB(t)
	plainAdmin := connect(t, shared.url("", "", d.plain))
	scalar(t, plainAdmin, "CREATE TABLE wide (id int PRIMARY KEY, v text, n int)")
	grant := "GRANT ALL ON ALL TABLES IN SCHEMA public TO " + scramUser + "; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO " + scramUser
	scalar(t, d.admin, grant)
	scalar(t, plainAdmin, grant)
	d.ruledC = connect(t, d.p.url(scramUser, scramPass, d.ruled))
	d.plainC = connect(t, d.p.url(scramUser, scramPass, d.plain))
	d.ruledBy = connect(t, d.p.url(scramUser, scramPass, d.ruled))
	d.plainBy = connect(t, d.p.url(scramUser, scramPass, d.plain))
	for _, c := range []*pgconn.PgConn{d.ruledBy, d.plainBy} {
		scalar(t, c, "BEGIN; INSERT INTO wide VALUES (-1, 'bystander', 0)")
	}
	return d
}

// alive checks that every session still answers, the bystanders still in
// their transactions.
func (d *spDBs) alive(t *testing.T) {
	t.Helper()
	for _, c := range []*pgconn.PgConn{d.ruledC, d.plainC} {
		if got := scalar(t, c, "SELECT 41 + 1"); got != "42" {
			t.Fatalf("the session answered %q", got)
		}
	}
	for _, c := range []*pgconn.PgConn{d.ruledBy, d.plainBy} {
		if got := scalar(t, c, "SELECT v FROM wide WHERE id = -1"); got != "bystander" || c.TxStatus() != 'T' {
			t.Fatalf("a bystander's transaction: %q, status %c", got, c.TxStatus())
		}
	}
}

func plusChain(term string, n int) string {
	return opChain(term, "+", n)
}

// opChain is n terms joined by op.
func opChain(term, op string, n int) string {
	return strings.Repeat(term+op, n-1) + term
}

// spDeep are the statements that crashed the proxy, and their kind of
// nesting in other clauses and forms.
func spDeep() []struct{ name, sql string } {
	return []struct{ name, sql string }{
		{"select mentioning pgrules", "SELECT " + plusChain("1", 50000) + " /* pgrules. */"},
		{"insert into a missing table", "INSERT INTO no_such_table VALUES (" + plusChain("1", 50000) + ")"},
		{"update of a ruled table", "UPDATE lineitem SET quantity = " + strings.Repeat("0+", 4500) + "quantity WHERE id = 1"},
		{"casts in a write", "INSERT INTO wide VALUES (1, 'x', 1" + strings.Repeat("::int", 30000) + ")"},
		{"unions in a write", "INSERT INTO wide SELECT 1, 'x', 1" + strings.Repeat(" UNION SELECT 1, 'x', 1", 30000)},
		{"concatenation calling pgrules", "SELECT pgrules.formula('lineitem.amount', " + opChain("'x'", "||", 30000) + ")"},
		{"deep where in a delete", "DELETE FROM lineitem WHERE quantity = " + plusChain("quantity", 30000)},
	}
}

func TestSecurityParserDeepStatementsAre54001(t *testing.T) {
	d := spSetup(t)
	for _, proto := range protocols {
		for _, db := range []struct {
			name      string
			c, direct *pgconn.PgConn
		}{
			{"with rules", d.ruledC, connect(t, shared.url(scramUser, scramPass, d.ruled))},
			{"without rules", d.plainC, connect(t, shared.url(scramUser, scramPass, d.plain))},
		} {
			for _, st := range spDeep() {
				t.Run(proto.name+"/"+db.name+"/"+st.name, func(t *testing.T) {
					e := evExec(t, proto.exec, db.c, st.sql)
					if e == nil {
						t.Fatalf("%.60s... ran", st.sql)
					}
					// PostgreSQL may refuse it first, its own way: without
					// rules a text that does not mention pgrules goes to
					// it, and the extended protocol's Parse does.
					direct := evExec(t, proto.exec, db.direct, st.sql)
					if direct == nil {
						t.Fatalf("%.60s... ran directly", st.sql)
					}
					if e.Code != direct.Code && (e.Code != "54001" || !strings.Contains(e.Message, "stack depth limit exceeded") || e.Hint == "") {
						t.Fatalf("%.60s...: %s %s (hint %q), want 54001 with a hint, or PostgreSQL's %s", st.sql, e.Code, e.Message, e.Hint, direct.Code)
					}
					d.alive(t)
				})
			}
		}
	}
	if got := scalar(t, d.admin, "SELECT count(*) FROM lineitem"); got != "0" {
		t.Fatalf("%s line items after refused writes", got)
	}
}

// TestSecurityParserDeepStatementInTransaction: the refusal fails the
// transaction, as PostgreSQL's own error would, and undoes its writes.
func TestSecurityParserDeepStatementInTransaction(t *testing.T) {
	d := spSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, proto := range protocols {
		for _, c := range []*pgconn.PgConn{d.ruledC, d.plainC} {
			scalar(t, c, "BEGIN")
			scalar(t, c, "INSERT INTO wide VALUES (7, 'in the transaction', 0)")
			e := evExec(t, proto.exec, c, "SELECT "+plusChain("1", 50000)+" /* pgrules. */")
			if e == nil || e.Code != "54001" {
				t.Fatalf("%s: %v, want 54001", proto.name, e)
			}
			if c.TxStatus() != 'E' {
				t.Fatalf("%s: transaction status %c after the refusal, want E", proto.name, c.TxStatus())
			}
			_, err := c.Exec(ctx, "SELECT 1").ReadAll()
			if code := errCode(err); code != "25P02" {
				t.Fatalf("%s: a statement after the refusal: %v, want 25P02", proto.name, err)
			}
			scalar(t, c, "ROLLBACK")
			if got := scalar(t, c, "SELECT count(*) FROM wide WHERE id = 7"); got != "0" {
				t.Fatalf("%s: the transaction's insert survived its rollback", proto.name)
			}
		}
	}
	// A simple Query whose deep statement follows a write: the whole
	// Query is one implicit transaction, refused as one.
	e := pgError(t, d.ruledC, "INSERT INTO wide VALUES (8, 'before', 0); UPDATE wide SET n = "+plusChain("n", 30000))
	if e == nil || e.Code != "54001" {
		t.Fatalf("a Query with a deep statement: %v, want 54001", e)
	}
	if got := scalar(t, d.ruledC, "SELECT count(*) FROM wide WHERE id = 8"); got != "0" {
		t.Fatal("the write before the refused statement of its Query was kept")
	}
	d.alive(t)
}

// TestSecurityParserWideStatements: statements the grammar keeps flat
// pass through whatever their size, with their results, in a database
// with rules, where the proxy parses every write.
func TestSecurityParserWideStatements(t *testing.T) {
	d := spSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rows := make([]string, 100000)
	for i := range rows {
		rows[i] = fmt.Sprintf("(%d, 'v%d', %d + 1)", i+1, i+1, i)
	}
	in := make([]string, 50000)
	for i := range in {
		in[i] = fmt.Sprint(2 * (i + 1)) // the even ids
	}
	ands := make([]string, 5000)
	for i := range ands {
		ands[i] = fmt.Sprintf("id <> %d", 3*(i+1))
	}
	ors := make([]string, 5000)
	for i := range ors {
		ors[i] = fmt.Sprintf("id = %d", 99999-2*i)
	}
	for _, proto := range protocols {
		for _, c := range []*pgconn.PgConn{d.ruledC} {
			steps := []struct{ sql, check, want string }{
				{"INSERT INTO wide (id, v, n) VALUES " + strings.Join(rows, ", "),
					"SELECT count(*) || ' ' || sum(n) FROM wide WHERE id > 0", "100000 5000050000"},
				{"DELETE FROM wide WHERE id IN (" + strings.Join(in, ", ") + ")",
					"SELECT count(*) || ' ' || count(*) FILTER (WHERE id % 2 = 0) FROM wide WHERE id > 0", "50000 0"},
				{"UPDATE wide SET n = 0 WHERE id <= 15000 AND " + strings.Join(ands, " AND "),
					"SELECT count(*) FROM wide WHERE n = 0 AND id > 0", "5000"},
				{"UPDATE wide SET v = 'or' WHERE " + strings.Join(ors, " OR "),
					"SELECT count(*) FROM wide WHERE v = 'or'", "5000"},
				{"DELETE FROM wide WHERE id > 0", "SELECT count(*) FROM wide WHERE id > 0", "0"},
			}
			for _, s := range steps {
				if err := proto.exec(ctx, c, s.sql); err != nil {
					t.Fatalf("%s: %.60s...: %v", proto.name, s.sql, err)
				}
				if got := scalar(t, c, s.check); got != s.want {
					t.Fatalf("%s: after %.60s...: %s, want %s", proto.name, s.sql, got, s.want)
				}
			}
		}
	}

	// The same through the rules of a table that has them: the engine
	// parses, rewrites and deparses these.
	lines := make([]string, 2000)
	for i := range lines {
		lines[i] = fmt.Sprintf("(%d, 1, 3, 1)", i+1)
	}
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprint(2 * (i + 1))
	}
	for _, sql := range []string{
		"INSERT INTO lineitem (id, order_id, product_id, quantity) VALUES " + strings.Join(lines, ", "),
		"UPDATE lineitem SET quantity = quantity + " + plusChain("1", 200) + " - 200 + 1 WHERE id IN (" + strings.Join(ids, ", ") + ")",
		"DELETE FROM lineitem WHERE id > 1500 AND " + strings.Join(ands[:500], " AND "),
	} {
		if e := pgError(t, d.ruledC, sql); e != nil {
			t.Fatalf("%.60s...: %v", sql, e)
		}
	}
	// 1500 lines of gizmos at 0.10, the 750 even ones with quantity 2.
	if got := scalar(t, d.admin, "SELECT amount_total FROM orders WHERE id = 1"); got != "225.00" {
		t.Fatalf("orders.amount_total %s, want 225.00", got)
	}
	if got := scalar(t, d.admin, "SELECT balance FROM customer WHERE id = 1"); got != "225.00" {
		t.Fatalf("customer.balance %s, want 225.00", got)
	}
	d.alive(t)
}

// TestSecurityParserLimitsAtTheEdge: a statement just within the limits
// runs through the rules, one just beyond is refused.
func TestSecurityParserLimitsAtTheEdge(t *testing.T) {
	d := spSetup(t)
	scalar(t, d.ruledC, "INSERT INTO lineitem (id, order_id, product_id, quantity) VALUES (1, 1, 1, 1)")
	// NestingBound counts the chain, the SET list and the statement.
	within := "UPDATE lineitem SET quantity = " + strings.Repeat("0+", sqlparse.MaxNesting-10) + "quantity + 1 WHERE id = 1"
	if e := pgError(t, d.ruledC, within); e != nil {
		t.Fatalf("a statement within the limits: %v", e)
	}
	if got := scalar(t, d.admin, "SELECT amount FROM lineitem WHERE id = 1"); got != "20.00" {
		t.Fatalf("lineitem.amount %s after the update, want 20.00", got)
	}
	beyond := "UPDATE lineitem SET quantity = " + strings.Repeat("0+", sqlparse.MaxNesting+1) + "quantity + 1 WHERE id = 1"
	if e := pgError(t, d.ruledC, beyond); e == nil || e.Code != "54001" {
		t.Fatalf("a statement beyond the limits: %v, want 54001", e)
	}
	d.alive(t)
}

// TestSecurityParserDeepRuleExpression: a rule whose expression nests
// deeper than the expression parser survives is refused with 54001 when
// defined; the proxy and its other sessions go on.
func TestSecurityParserDeepRuleExpression(t *testing.T) {
	d := spSetup(t)
	owner := connect(t, d.p.url("", "", d.ruled))
	for _, expression := range []string{
		strings.Repeat("-", 1_000_000) + "1",
		strings.Repeat("(", 1_000_000) + "1" + strings.Repeat(")", 1_000_000),
	} {
		for _, proto := range protocols {
			e := evExec(t, proto.exec, owner, "SELECT pgrules.formula('lineitem.amount', '"+expression+"')")
			if e == nil || e.Code != "54001" || e.Hint == "" {
				t.Fatalf("%s: defining a rule of %.20s...: %v, want 54001 with a hint", proto.name, expression, e)
			}
		}
	}
	if got := scalar(t, d.admin, "SELECT expression FROM pgrules.rules WHERE name = 'lineitem.amount'"); got != "row.quantity * row.unit_price" {
		t.Fatalf("the rule is now %.40q", got)
	}
	d.alive(t)
}

// TestSecurityParserParameterZero: a write of a table with rules naming
// the parameter $0 gets PostgreSQL's own answer, in both protocols.
func TestSecurityParserParameterZero(t *testing.T) {
	d := spSetup(t)
	direct := connect(t, shared.url(scramUser, scramPass, d.ruled))
	for _, proto := range protocols {
		for _, sql := range []string{
			"UPDATE lineitem SET quantity = $0 WHERE id = 1",
			"INSERT INTO lineitem (order_id, product_id, quantity) VALUES (1, 1, $0)",
		} {
			want := evExec(t, proto.exec, direct, sql)
			e := evExec(t, proto.exec, d.ruledC, sql)
			if want == nil || e == nil || e.Code != want.Code || e.Code != "42P02" {
				t.Fatalf("%s: %s: %v through pgrules, %v directly", proto.name, sql, e, want)
			}
		}
	}
	d.alive(t)
}
