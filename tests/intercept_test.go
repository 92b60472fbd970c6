package tests

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/proxy"
	"github.com/pgrules/pgrules/stmt"
)

// The interception machinery, tested with a scripted engine on a real
// server: statements marked /*engine*/ go to it, and it writes an audit row
// of its own in the client's transaction before running the statement. What
// the client sees must be what the server would have answered, and the
// engine's writes must commit or fail with the statement.

type auditRules struct{ commits atomic.Int64 }

func (r *auditRules) Open(context.Context, stmt.SessionInfo) stmt.Session { return r }

func (r *auditRules) Intercepts(sql string) bool { return strings.Contains(sql, "/*engine*/") }

func (r *auditRules) Split(sql string) ([]stmt.Part, error) {
	var parts []stmt.Part
	for _, s := range strings.Split(sql, ";") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		kind := map[string]stmt.TxKind{"BEGIN": stmt.TxBegin, "COMMIT": stmt.TxCommit, "ROLLBACK": stmt.TxRollback}[strings.ToUpper(strings.Fields(s)[0])]
		parts = append(parts, stmt.Part{SQL: s, Engine: r.Intercepts(s), TxControl: kind != stmt.TxNone, Tx: kind})
	}
	return parts, nil
}

func (r *auditRules) Exec(ctx context.Context, c stmt.Conn, st stmt.Statement) (*stmt.Result, error) {
	if _, err := c.Query(ctx, "INSERT INTO audit(stmt) VALUES ($1)", st.SQL); err != nil {
		return nil, err
	}
	res, err := c.Exec(ctx, st)
	if err != nil {
		return nil, err
	}
	if strings.Contains(st.SQL, "/*fail*/") {
		// As an engine does when a rule fails: the server fails the
		// transaction, with the engine's error.
		_, err := c.Query(ctx, "SELECT 1/0")
		return nil, err
	}
	return res, nil
}

// CopyIn relays the COPY as it is: the proxy's copy relay is tested
// through the rules engine (copy_test.go).
func (r *auditRules) CopyIn(ctx context.Context, c stmt.Conn, st stmt.Statement) (*stmt.Copy, error) {
	return &stmt.Copy{SQL: st.SQL}, nil
}

func (r *auditRules) Ended(ctx context.Context, committed bool) {}

func (r *auditRules) Commit(ctx context.Context, c stmt.Conn) ([]stmt.Statement, error) {
	r.commits.Add(1)
	rows, err := c.Query(ctx, "SELECT count(*) FROM t WHERE v < 0")
	if err != nil {
		return nil, err
	}
	if string(rows[0][0]) != "0" {
		return nil, pgerr.New(pgerr.CheckViolation, "negative values at commit")
	}
	return nil, nil
}

func (r *auditRules) Close() {}

func withRules(r stmt.Rules) proxyOption { return func(p *proxy.Config) { p.Rules = r } }

func TestInterceptSimple(t *testing.T) {
	db := shared.newDB(t)
	admin := connect(t, shared.url("", "", db))
	scalar(t, admin, "CREATE TABLE t (id serial PRIMARY KEY, v int); CREATE TABLE audit (stmt text)")
	rules := &auditRules{}
	p := startProxy(t, shared, withRules(rules))
	c := connect(t, p.url("", "", db))
	ctx := context.Background()

	res, err := c.Exec(ctx, "INSERT INTO t(v) VALUES (1), (2) RETURNING v /*engine*/").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].CommandTag.String() != "INSERT 0 2" || len(res[0].Rows) != 2 || string(res[0].Rows[1][0]) != "2" ||
		len(res[0].FieldDescriptions) != 1 || res[0].FieldDescriptions[0].Name != "v" {
		t.Fatalf("got %+v", res)
	}
	if c.TxStatus() != 'I' {
		t.Fatalf("tx status %c after an autocommit statement", c.TxStatus())
	}
	if got := scalar(t, admin, "SELECT count(*) FROM audit"); got != "1" {
		t.Fatalf("%s audit rows committed, want 1", got)
	}

	// Several statements in one Query: relayed and engine parts in order.
	res, err = c.Exec(ctx, "SELECT 41 + 1; UPDATE t SET v = v + 10 /*engine*/; SELECT sum(v) FROM t").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || string(res[0].Rows[0][0]) != "42" || res[1].CommandTag.String() != "UPDATE 2" || string(res[2].Rows[0][0]) != "23" {
		t.Fatalf("got %+v", res)
	}

	// A failure leaves nothing behind in autocommit, and stops the Query.
	_, err = c.Exec(ctx, "INSERT INTO t(v) VALUES (100) /*engine*/ /*fail*/; INSERT INTO t(v) VALUES (200)").ReadAll()
	if code := sqlStateOf(err); code != "22012" {
		t.Fatalf("error %v, want 22012", err)
	}
	if got := scalar(t, c, "SELECT count(*) FROM t WHERE v >= 100"); got != "0" {
		t.Fatalf("%s rows of the failed Query survived", got)
	}
	if got := scalar(t, admin, "SELECT count(*) FROM audit"); got != "2" {
		t.Fatalf("%s audit rows, want 2: the failed statement's must be rolled back", got)
	}

	// Inside BEGIN the failure leaves the transaction failed, as any error.
	scalar(t, c, "BEGIN")
	_, err = c.Exec(ctx, "INSERT INTO t(v) VALUES (5) /*engine*/ /*fail*/").ReadAll()
	if sqlStateOf(err) != "22012" || c.TxStatus() != 'E' {
		t.Fatalf("error %v, tx status %c; want 22012 and E", err, c.TxStatus())
	}
	if _, err := c.Exec(ctx, "SELECT 1").ReadAll(); sqlStateOf(err) != "25P02" {
		t.Fatalf("statement in the failed transaction: %v, want 25P02", err)
	}
	scalar(t, c, "ROLLBACK")

	// The commit hook runs before the proxy commits what it wrapped.
	before := rules.commits.Load()
	_, err = c.Exec(ctx, "INSERT INTO t(v) VALUES (-1) /*engine*/").ReadAll()
	if sqlStateOf(err) != "23514" || rules.commits.Load() != before+1 {
		t.Fatalf("error %v after %d commit hooks; want 23514 after one", err, rules.commits.Load()-before)
	}
	if got := scalar(t, c, "SELECT count(*) FROM t WHERE v < 0"); got != "0" || c.TxStatus() != 'I' {
		t.Fatalf("%s vetoed rows committed, tx status %c", got, c.TxStatus())
	}
}

func TestInterceptExtended(t *testing.T) {
	db := shared.newDB(t)
	admin := connect(t, shared.url("", "", db))
	scalar(t, admin, "CREATE TABLE t (id serial PRIMARY KEY, v int); CREATE TABLE audit (stmt text)")
	p := startProxy(t, shared, withRules(&auditRules{}))
	c := connect(t, p.url("", "", db))
	ctx := context.Background()

	// Parameters, binary results.
	rr := c.ExecParams(ctx, "INSERT INTO t(v) VALUES ($1) RETURNING id, v /*engine*/", [][]byte{[]byte("7")}, nil, nil, []int16{1, 0}).Read()
	if rr.Err != nil || rr.CommandTag.String() != "INSERT 0 1" || len(rr.Rows) != 1 || len(rr.Rows[0][0]) != 4 || string(rr.Rows[0][1]) != "7" {
		t.Fatalf("got %+v", rr)
	}

	// A named statement prepared once and executed many times.
	if _, err := c.Prepare(ctx, "ins", "INSERT INTO t(v) VALUES ($1) /*engine*/", nil); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1", "2", "3"} {
		if rr := c.ExecPrepared(ctx, "ins", [][]byte{[]byte(v)}, nil, nil).Read(); rr.Err != nil || rr.CommandTag.String() != "INSERT 0 1" {
			t.Fatalf("execute %s: %+v", v, rr)
		}
	}

	// A pipelined batch mixing reads and writes: one transaction, results
	// in order; a failure in it rolls back all of it.
	b := &pgconn.Batch{}
	b.ExecParams("SELECT count(*) FROM t", nil, nil, nil, nil)
	b.ExecParams("UPDATE t SET v = v * 2 /*engine*/", nil, nil, nil, nil)
	b.ExecParams("SELECT sum(v) FROM t", nil, nil, nil, nil)
	res, err := c.ExecBatch(ctx, b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || string(res[0].Rows[0][0]) != "4" || res[1].CommandTag.String() != "UPDATE 4" || string(res[2].Rows[0][0]) != "26" {
		t.Fatalf("got %+v", res)
	}
	b = &pgconn.Batch{}
	b.ExecParams("INSERT INTO t(v) VALUES (1000)", nil, nil, nil, nil)
	b.ExecParams("UPDATE t SET v = 0 /*engine*/ /*fail*/", nil, nil, nil, nil)
	b.ExecParams("INSERT INTO t(v) VALUES (2000)", nil, nil, nil, nil)
	if _, err := c.ExecBatch(ctx, b).ReadAll(); sqlStateOf(err) != "22012" {
		t.Fatalf("failing batch: %v, want 22012", err)
	}
	if got := scalar(t, admin, "SELECT count(*) || '/' || sum(v) FROM t"); got != "4/26" {
		t.Fatalf("after the failed batch: %s, want 4/26 (nothing of it kept)", got)
	}
	if got := scalar(t, c, "SELECT 'still fine'"); got != "still fine" || c.TxStatus() != 'I' {
		t.Fatalf("session after the failed batch: %q %c", got, c.TxStatus())
	}
	// A server error before the engine's statement: skipped like the server would.
	b = &pgconn.Batch{}
	b.ExecParams("SELECT 1/0", nil, nil, nil, nil)
	b.ExecParams("UPDATE t SET v = 0 /*engine*/", nil, nil, nil, nil)
	if _, err := c.ExecBatch(ctx, b).ReadAll(); sqlStateOf(err) != "22012" {
		t.Fatalf("batch with a server error: %v", err)
	}
	if got := scalar(t, admin, "SELECT sum(v) FROM t"); got != "26" {
		t.Fatalf("sum %s: the statement after the error ran", got)
	}
}

func sqlStateOf(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// auditSession is a raw client logged in through a proxy running
// auditRules, on a fresh database with their tables, and an administrator's
// connection to that database.
func auditSession(t *testing.T) (admin *pgconn.PgConn, c *ftConn) {
	t.Helper()
	db := shared.newDB(t)
	admin = connect(t, shared.url("", "", db))
	scalar(t, admin, "CREATE TABLE t (id serial PRIMARY KEY, v int); CREATE TABLE audit (stmt text)")
	p := startProxy(t, shared, withRules(&auditRules{}))
	c = ftDial(t, p.Addr)
	c.login(db)
	return admin, c
}

// TestInterceptAheadFails: the client's Parse, Bind and Describe of a
// statement the engine runs go upstream in front of the engine's first
// statement, in one exchange. When the server refuses one of them (here a
// Bind whose binary int4 is two bytes long), the client gets that error
// and nothing else, the engine's statements do not run, and the session,
// in a transaction block or not, goes on as the server would have.
func TestInterceptAheadFails(t *testing.T) {
	admin, c := auditSession(t)
	const insert = "INSERT INTO t(v) VALUES ($1) /*engine*/"
	batch := func(v []byte) {
		c.send(&pgproto3.Parse{Query: insert, ParameterOIDs: []uint32{23}},
			&pgproto3.Bind{ParameterFormatCodes: []int16{1}, Parameters: [][]byte{v}},
			&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{})
	}
	expect := func(what string, want ...string) {
		t.Helper()
		for _, w := range want {
			m := c.recv()
			got := fmt.Sprintf("%T", m)
			switch m := m.(type) {
			case *pgproto3.ErrorResponse:
				got += " " + m.Code
			case *pgproto3.ReadyForQuery:
				got += " " + string(m.TxStatus)
			case *pgproto3.CommandComplete:
				got += " " + string(m.CommandTag)
			}
			if got != w {
				t.Fatalf("%s: got %s, want %s", what, got, w)
			}
		}
	}
	bad, good := []byte{0, 1}, []byte{0, 0, 0, 5}
	batch(bad)
	expect("bad Bind, autocommit", "*pgproto3.ParseComplete", "*pgproto3.ErrorResponse 08P01", "*pgproto3.ReadyForQuery I")
	batch(good)
	expect("good Bind", "*pgproto3.ParseComplete", "*pgproto3.BindComplete", "*pgproto3.NoData", "*pgproto3.CommandComplete INSERT 0 1", "*pgproto3.ReadyForQuery I")
	c.send(&pgproto3.Query{String: "BEGIN"})
	expect("BEGIN", "*pgproto3.CommandComplete BEGIN", "*pgproto3.ReadyForQuery T")
	batch(good)
	expect("good Bind in a block", "*pgproto3.ParseComplete", "*pgproto3.BindComplete", "*pgproto3.NoData", "*pgproto3.CommandComplete INSERT 0 1", "*pgproto3.ReadyForQuery T")
	batch(bad)
	expect("bad Bind in a block", "*pgproto3.ParseComplete", "*pgproto3.ErrorResponse 08P01", "*pgproto3.ReadyForQuery E")
	c.send(&pgproto3.Query{String: "ROLLBACK"})
	expect("ROLLBACK", "*pgproto3.CommandComplete ROLLBACK", "*pgproto3.ReadyForQuery I")
	if got := scalar(t, admin, "SELECT (SELECT count(*) FROM t) || '/' || (SELECT count(*) FROM audit)"); got != "1/1" {
		t.Fatalf("rows/audit rows: %s, want 1/1 (the good autocommit insert only)", got)
	}
}

// TestInterceptFlush: a batch that executes a statement the engine wants
// and then waits at a Flush cannot be run (the statement and its rules must
// commit together, which needs the Sync): it is refused with 0A000, the
// rest of the batch is dropped as after any error, and the client's Sync
// gets its ReadyForQuery.
func TestInterceptFlush(t *testing.T) {
	admin, c := auditSession(t)
	c.send(&pgproto3.Parse{Query: "INSERT INTO t(v) VALUES (1) /*engine*/"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Flush{})
	if e, ok := c.recv().(*pgproto3.ErrorResponse); !ok || e.Code != "0A000" {
		t.Fatalf("got %#v, want ErrorResponse 0A000", e)
	}
	c.send(&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
	if z, ok := c.recv().(*pgproto3.ReadyForQuery); !ok || z.TxStatus != 'I' {
		t.Fatalf("got %#v, want ReadyForQuery I", z)
	}
	if n := scalar(t, admin, "SELECT count(*) FROM t"); n != "0" {
		t.Fatalf("%s rows written by the refused batch", n)
	}
	// Without the engine's statement, Flush works as always.
	c.send(&pgproto3.Parse{Query: "SELECT 42"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Flush{})
	for _, want := range []string{"*pgproto3.ParseComplete", "*pgproto3.BindComplete", "*pgproto3.DataRow", "*pgproto3.CommandComplete"} {
		if got := fmt.Sprintf("%T", c.recv()); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
	c.send(&pgproto3.Sync{})
	if _, ok := c.recv().(*pgproto3.ReadyForQuery); !ok {
		t.Fatal("no ReadyForQuery")
	}
}

// TestInterceptCopyIn: a COPY FROM STDIN in one Query with a statement the
// engine runs gets the client's data, as the server would: the Query's
// statements commit together, a CopyFail rolls all of them back, and a
// client that sends anything but copy messages during the COPY has broken
// the protocol.
func TestInterceptCopyIn(t *testing.T) {
	admin, c := auditSession(t)
	copyIn := func(end pgproto3.FrontendMessage) []string {
		t.Helper()
		c.send(&pgproto3.Query{String: "INSERT INTO t(v) VALUES (1) /*engine*/; COPY t (v) FROM STDIN"})
		var got []string
		for {
			switch m := c.recv().(type) {
			case *pgproto3.CopyInResponse:
				// Flush and Sync mean nothing during a COPY.
				c.send(&pgproto3.CopyData{Data: []byte("2\n")}, &pgproto3.Flush{}, &pgproto3.Sync{}, &pgproto3.CopyData{Data: []byte("3\n")}, end)
			case *pgproto3.CommandComplete:
				got = append(got, string(m.CommandTag))
			case *pgproto3.ErrorResponse:
				got = append(got, m.Code)
			case *pgproto3.ReadyForQuery:
				return append(got, string(m.TxStatus))
			default:
				t.Fatalf("unexpected %T", m)
			}
		}
	}
	if got := strings.Join(copyIn(&pgproto3.CopyFail{Message: "changed my mind"}), " "); got != "INSERT 0 1 57014 I" {
		t.Fatalf("with CopyFail: %s", got)
	}
	if got := scalar(t, admin, "SELECT count(*) FROM t"); got != "0" {
		t.Fatalf("%s rows kept after CopyFail", got)
	}
	if got := strings.Join(copyIn(&pgproto3.CopyDone{}), " "); got != "INSERT 0 1 COPY 2 I" {
		t.Fatalf("with CopyDone: %s", got)
	}
	if got := scalar(t, admin, "SELECT string_agg(v::text, ' ' ORDER BY v) FROM t"); got != "1 2 3" {
		t.Fatalf("rows %s, want 1 2 3", got)
	}
	c.send(&pgproto3.Query{String: "INSERT INTO t(v) VALUES (4) /*engine*/; COPY t (v) FROM STDIN"})
	if _, ok := c.recv().(*pgproto3.CommandComplete); !ok {
		t.Fatal("no CommandComplete for the INSERT")
	}
	if _, ok := c.recv().(*pgproto3.CopyInResponse); !ok {
		t.Fatal("no CopyInResponse")
	}
	c.send(&pgproto3.Query{String: "SELECT 1"})
	c.expectFatal("08P01")
	if got := scalar(t, admin, "SELECT count(*) FROM t"); got != "3" {
		t.Fatalf("%s rows after the protocol violation, want 3", got)
	}
}

// TestAheadFailsWithRules: the same through the rules engine, in the
// extended protocol as drivers send it: a Bind the server refuses fails
// the statement with the server's error, nothing of it is written, and the
// next statement runs its rules.
func TestAheadFailsWithRules(t *testing.T) {
	c, admin, _, _ := rulesDB(t, "CREATE TABLE p (id int PRIMARY KEY, total int); CREATE TABLE c (id int PRIMARY KEY, p_id int REFERENCES p, v int)",
		[]string{"SELECT pgrules.sum('p.total', 'c.v')"})
	ctx := context.Background()
	scalar(t, c, "INSERT INTO p (id) VALUES (1)")
	const insert = "INSERT INTO c (id, p_id, v) VALUES ($1, 1, $2)"
	oids := []uint32{23, 23}
	rr := c.ExecParams(ctx, insert, [][]byte{{0, 0, 0, 1}, {0, 7}}, oids, []int16{1}, nil).Read()
	if sqlStateOf(rr.Err) != "08P01" || c.TxStatus() != 'I' {
		t.Fatalf("bad Bind: %v, status %c", rr.Err, c.TxStatus())
	}
	rr = c.ExecParams(ctx, insert, [][]byte{{0, 0, 0, 1}, {0, 0, 0, 7}}, oids, []int16{1}, nil).Read()
	if rr.Err != nil || rr.CommandTag.String() != "INSERT 0 1" {
		t.Fatalf("good Bind: %+v", rr)
	}
	if got := scalar(t, admin, "SELECT (SELECT count(*) FROM c) || '/' || (SELECT total FROM p)"); got != "1/7" {
		t.Fatalf("children/total: %s, want 1/7", got)
	}
}
