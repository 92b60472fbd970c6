package stmtconn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgrules/pgrules/internal/pgtest"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/stmt"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const schema = `
CREATE TABLE item (
  id int PRIMARY KEY,
  name text NOT NULL,
  qty int CHECK (qty >= 0)
);
CREATE DOMAIN positive AS int CONSTRAINT positive_check CHECK (VALUE > 0);
CREATE FUNCTION fail_with_hint() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'custom failure' USING DETAIL = 'some detail', HINT = 'some hint', ERRCODE = 'P0001';
END $$;
`

// newConn returns a connection to a fresh database with schema, as a
// stmt.Conn, and the underlying PgConn.
func newConn(t *testing.T) (stmt.Conn, *pgconn.PgConn, string) {
	t.Helper()
	url := pgtest.DB(t)
	ctx := context.Background()
	if err := pgtest.Exec(ctx, url, schema); err != nil {
		t.Fatal(err)
	}
	pg, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close(context.Background()) })
	return New(pg, nil), pg, url
}

func texts(rows [][][]byte) [][]string {
	var out [][]string
	for _, r := range rows {
		row := []string{}
		for _, v := range r {
			if v == nil {
				row = append(row, "NULL")
			} else {
				row = append(row, string(v))
			}
		}
		out = append(out, row)
	}
	return out
}

func code(err error) string { return pgerr.Code(err) }

func TestExec(t *testing.T) {
	c, _, _ := newConn(t)
	ctx := context.Background()
	int4 := func(v int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }

	tests := []struct {
		name   string
		st     stmt.Statement
		fields []stmt.Field
		rows   [][]string
		tag    string
	}{{
		name:   "text params and rows",
		st:     stmt.Statement{SQL: "SELECT $1::int + 1 AS n, $2::text AS s, NULL::text AS z", Params: [][]byte{[]byte("41"), []byte("x")}},
		fields: []stmt.Field{{Name: "n", TypeOID: 23, TypeSize: 4, TypeModifier: -1}, {Name: "s", TypeOID: 25, TypeSize: -1, TypeModifier: -1}, {Name: "z", TypeOID: 25, TypeSize: -1, TypeModifier: -1}},
		rows:   [][]string{{"42", "x", "NULL"}},
		tag:    "SELECT 1",
	}, {
		name: "binary params and results, one format for all",
		st: stmt.Statement{SQL: "SELECT $1 + $2 AS n", Params: [][]byte{int4(40), int4(2)}, ParamFormats: []int16{1},
			ParamOIDs: []uint32{23, 23}, ResultFormats: []int16{1}},
		fields: []stmt.Field{{Name: "n", TypeOID: 23, TypeSize: 4, TypeModifier: -1, Format: 1}},
		rows:   [][]string{{string(int4(42))}},
		tag:    "SELECT 1",
	}, {
		name: "insert without rows",
		st:   stmt.Statement{SQL: "INSERT INTO item VALUES (1, 'a', 1), (2, 'b', 2)"},
		tag:  "INSERT 0 2",
	}, {
		name:   "columns of a table, no rows",
		st:     stmt.Statement{SQL: "SELECT id FROM item WHERE id < 0"},
		fields: []stmt.Field{{Name: "id", TableOID: 0 /* checked below */, TableAttrNum: 1, TypeOID: 23, TypeSize: 4, TypeModifier: -1}},
		tag:    "SELECT 0",
	}, {
		name:   "no columns",
		st:     stmt.Statement{SQL: "SELECT"},
		fields: []stmt.Field{},
		rows:   [][]string{{}},
		tag:    "SELECT 1",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := c.Exec(ctx, tt.st)
			if err != nil {
				t.Fatal(err)
			}
			if tt.name == "columns of a table, no rows" {
				if res.Fields[0].TableOID == 0 {
					t.Errorf("TableOID = 0, want item's oid")
				}
				res.Fields[0].TableOID = 0
			}
			if !reflect.DeepEqual(res.Fields, tt.fields) {
				t.Errorf("Fields = %#v, want %#v", res.Fields, tt.fields)
			}
			if got := texts(res.Rows); !reflect.DeepEqual(got, tt.rows) {
				t.Errorf("Rows = %q, want %q", got, tt.rows)
			}
			if res.Tag != tt.tag {
				t.Errorf("Tag = %q, want %q", res.Tag, tt.tag)
			}
		})
	}
}

func TestExecNamed(t *testing.T) {
	c, _, _ := newConn(t)
	ctx := context.Background()
	ins := stmt.Statement{Name: "ins", SQL: "INSERT INTO item VALUES ($1, $2) RETURNING id, name", Params: [][]byte{[]byte("1"), []byte("one")}}
	res, err := c.Exec(ctx, ins)
	if err != nil {
		t.Fatal(err)
	}
	if got := texts(res.Rows); !reflect.DeepEqual(got, [][]string{{"1", "one"}}) || res.Tag != "INSERT 0 1" {
		t.Fatalf("first run: rows %q tag %q", got, res.Tag)
	}
	// Without SQL the statement prepared under the name runs.
	res, err = c.Exec(ctx, stmt.Statement{Name: "ins", Params: [][]byte{[]byte("2"), []byte("two")}})
	if err != nil {
		t.Fatal(err)
	}
	if got := texts(res.Rows); !reflect.DeepEqual(got, [][]string{{"2", "two"}}) {
		t.Fatalf("prepared run: rows %q", got)
	}
	// Preparing the name again is the server's error, as for a client.
	if _, err := c.Exec(ctx, ins); code(err) != "42P05" {
		t.Fatalf("preparing again: %v, want SQLSTATE 42P05", err)
	}
	if _, err := c.Exec(ctx, stmt.Statement{Name: "nosuch"}); code(err) != "26000" {
		t.Fatalf("unknown name: %v, want SQLSTATE 26000", err)
	}
}

func TestRowsAreCopied(t *testing.T) {
	c, _, _ := newConn(t)
	ctx := context.Background()
	rows, err := c.Query(ctx, "SELECT repeat(chr(96 + i), 3) FROM generate_series(1, 3) i")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Query(ctx, "SELECT repeat('z', 3) FROM generate_series(1, 3)"); err != nil {
		t.Fatal(err)
	}
	if got, want := texts(rows), [][]string{{"aaa"}, {"bbb"}, {"ccc"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("rows after another query = %q, want %q", got, want)
	}
	rows, err = c.Query(ctx, "SELECT $1 || $2", "a", "b")
	if err != nil || len(rows) != 1 || string(rows[0][0]) != "ab" {
		t.Fatalf("Query with args: %q, %v", texts(rows), err)
	}
}

func count(t *testing.T, c stmt.Conn) string {
	t.Helper()
	rows, err := c.Query(context.Background(), "SELECT count(*) FROM item")
	if err != nil {
		t.Fatal(err)
	}
	return string(rows[0][0])
}

func TestBatch(t *testing.T) {
	c, pg, _ := newConn(t)
	ctx := context.Background()

	results, err := c.Batch(ctx, []stmt.Statement{
		{SQL: "INSERT INTO item VALUES ($1, 'a')", Params: [][]byte{[]byte("1")}},
		{Name: "sel", SQL: "SELECT name FROM item WHERE id = $1", Params: [][]byte{[]byte("1")}},
		{Name: "sel", Params: [][]byte{[]byte("2")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 3 || results[0].Tag != "INSERT 0 1" || !reflect.DeepEqual(texts(results[1].Rows), [][]string{{"a"}}) ||
		results[2].Tag != "SELECT 0" || results[2].Fields == nil {
		t.Fatalf("results = %+v", results)
	}

	// An error: the results before it, the server skips what follows, and
	// the implicit transaction up to the Sync rolls back.
	results, err = c.Batch(ctx, []stmt.Statement{
		{SQL: "INSERT INTO item VALUES (2, 'b')"},
		{SQL: "SELECT 1/0"},
		{SQL: "INSERT INTO item VALUES (3, 'c')"},
	})
	if code(err) != pgerr.DivisionByZero {
		t.Fatalf("err = %v, want division by zero", err)
	}
	if len(results) != 1 || results[0].Tag != "INSERT 0 1" {
		t.Fatalf("results = %+v, want the first insert's", results)
	}
	if got := count(t, c); got != "1" {
		t.Fatalf("count = %s, want 1", got)
	}

	// Inside a transaction the batch leaves it failed.
	if _, err := c.Simple(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Batch(ctx, []stmt.Statement{{SQL: "INSERT INTO item VALUES (1, 'dup')"}, {SQL: "SELECT 1"}})
	if code(err) != "23505" || c.TxStatus() != stmt.TxFailed {
		t.Fatalf("err %v, status %c; want 23505 and E", err, c.TxStatus())
	}
	if _, err := c.Simple(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if results, err := c.Batch(ctx, nil); results != nil || err != nil {
		t.Fatalf("empty batch: %v, %v", results, err)
	}
	if pg.IsClosed() {
		t.Fatal("connection closed")
	}
}

func TestSimple(t *testing.T) {
	c, _, _ := newConn(t)
	ctx := context.Background()
	results, err := c.Simple(ctx, "INSERT INTO item VALUES (1, 'a'); SELECT id, name FROM item; SELECT id FROM item WHERE false")
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 3 || results[0].Tag != "INSERT 0 1" || results[0].Fields != nil ||
		!reflect.DeepEqual(texts(results[1].Rows), [][]string{{"1", "a"}}) || len(results[1].Fields) != 2 ||
		results[2].Tag != "SELECT 0" || len(results[2].Fields) != 1 || results[2].Rows != nil {
		t.Fatalf("results = %+v", results)
	}
	results, err = c.Simple(ctx, "SELECT 1; SELECT 1/0; INSERT INTO item VALUES (2, 'b')")
	if code(err) != pgerr.DivisionByZero || len(results) != 1 || results[0].Tag != "SELECT 1" {
		t.Fatalf("results %+v, err %v", results, err)
	}
	if got := count(t, c); got != "1" {
		t.Fatalf("count = %s, want 1: the statement after the error ran", got)
	}
	// An error in the middle of a statement's rows: that statement did not
	// complete.
	results, err = c.Simple(ctx, "SELECT 10 / (3 - i) FROM generate_series(1, 5) i")
	if code(err) != pgerr.DivisionByZero || len(results) != 0 {
		t.Fatalf("results %+v, err %v", results, err)
	}
}

func TestParamTypes(t *testing.T) {
	c, _, _ := newConn(t)
	ctx := context.Background()
	tests := []struct {
		sql  string
		oids []uint32
		want []uint32
	}{
		{"SELECT $1 + 1::int8, $2 || 'x'", nil, []uint32{20, 25}},
		{"SELECT $1 + 1::int8, $2 || 'x'", []uint32{23}, []uint32{23, 25}},
		{"INSERT INTO item (id, name) VALUES ($1, $2)", []uint32{0, 0}, []uint32{23, 25}},
		{"SELECT 1", nil, []uint32{}},
	}
	for _, tt := range tests {
		got, err := c.ParamTypes(ctx, tt.sql, tt.oids)
		if err != nil {
			t.Fatalf("%s: %v", tt.sql, err)
		}
		if len(got) != len(tt.want) || (len(got) > 0 && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("ParamTypes(%q, %v) = %v, want %v", tt.sql, tt.oids, got, tt.want)
		}
	}
	if _, err := c.ParamTypes(ctx, "SELECT FROM nosuch", nil); code(err) != pgerr.UndefinedTable {
		t.Fatalf("err = %v, want 42P01", err)
	}
}

func TestTxStatusAndEnds(t *testing.T) {
	c, _, _ := newConn(t)
	ctx := context.Background()
	type step struct {
		run    func() error
		status stmt.TxStatus
		ended  bool
	}
	simple := func(sql string) func() error {
		return func() error { _, err := c.Simple(ctx, sql); return err }
	}
	exec := func(sql string) func() error {
		return func() error { _, err := c.Exec(ctx, stmt.Statement{SQL: sql}); return err }
	}
	steps := []step{
		{exec("SELECT 1"), stmt.TxIdle, true}, // autocommit
		{simple("BEGIN"), stmt.TxActive, false},
		{exec("INSERT INTO item VALUES (1, 'a')"), stmt.TxActive, false},
		{func() error {
			_, err := c.Batch(ctx, []stmt.Statement{{SQL: "SELECT 1"}, {SQL: "SELECT 2"}})
			return err
		}, stmt.TxActive, false},
		{exec("SELECT 1/0"), stmt.TxFailed, false},
		{exec("SELECT 1"), stmt.TxFailed, false}, // 25P02
		{simple("ROLLBACK"), stmt.TxIdle, true},
		{simple("BEGIN; INSERT INTO item VALUES (1, 'a'); COMMIT"), stmt.TxIdle, true},
		{simple("BEGIN"), stmt.TxActive, false},
		{func() error { _, err := c.ParamTypes(ctx, "SELECT $1::int", nil); return err }, stmt.TxActive, false},
		{exec("COMMIT"), stmt.TxIdle, true},
		{func() error { _, err := c.ParamTypes(ctx, "SELECT $1::int", nil); return err }, stmt.TxIdle, true},
		{exec("INSERT INTO item VALUES (1, 'dup')"), stmt.TxIdle, true}, // a failed autocommit statement
	}
	if c.TxStatus() != stmt.TxIdle {
		t.Fatalf("initial status %c", c.TxStatus())
	}
	for i, s := range steps {
		before := c.TxEnds()
		s.run()
		if c.TxStatus() != s.status {
			t.Errorf("step %d: status %c, want %c", i, c.TxStatus(), s.status)
		}
		if ended := c.TxEnds() != before; ended != s.ended {
			t.Errorf("step %d: TxEnds changed = %v, want %v", i, ended, s.ended)
		}
	}
}

// TestErrorFields compares every field of the server's ErrorResponse, as
// pgconn reads it, with the *pgerr.Error the Conn returns.
func TestErrorFields(t *testing.T) {
	c, _, url := newConn(t)
	ctx := context.Background()
	direct, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	if _, err := c.Simple(ctx, "INSERT INTO item VALUES (1, 'a', 1)"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		sql  string
		// set lists fields that this error must carry, so that the
		// comparison is not of empty strings.
		set func(e *pgerr.Error) bool
	}{
		{"check", "UPDATE item SET qty = -1", func(e *pgerr.Error) bool {
			return e.Code == pgerr.CheckViolation && e.Schema == "public" && e.Table == "item" && e.Constraint == "item_qty_check" && e.Detail != ""
		}},
		{"not null", "INSERT INTO item (id) VALUES (2)", func(e *pgerr.Error) bool { return e.Column == "name" }},
		{"domain", "SELECT (-1)::positive", func(e *pgerr.Error) bool {
			return e.DataType == "positive" && e.Constraint == "positive_check"
		}},
		{"syntax", "SELECT FROM WHERE", func(e *pgerr.Error) bool { return e.Position > 0 }},
		{"internal query", "DO $$ BEGIN EXECUTE 'SELECT * FROM WHERE'; END $$", func(e *pgerr.Error) bool {
			return e.InternalQuery != "" && e.InternalPosition > 0 && e.Where != ""
		}},
		{"raise", "SELECT fail_with_hint()", func(e *pgerr.Error) bool {
			return e.Code == pgerr.RaiseException && e.Hint == "some hint" && e.Detail == "some detail" && e.Where != ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, want := direct.Exec(ctx, tt.sql).ReadAll()
			var pe *pgconn.PgError
			if !errors.As(want, &pe) {
				t.Fatalf("direct: %v", want)
			}
			for _, run := range []func() error{
				func() error { _, err := c.Simple(ctx, tt.sql); return err },
				func() error { _, err := c.Exec(ctx, stmt.Statement{SQL: tt.sql}); return err },
			} {
				err := run()
				var e *pgerr.Error
				if !errors.As(err, &e) {
					t.Fatalf("got %T %v, want *pgerr.Error", err, err)
				}
				wantE := pgerr.Error{
					Code: pe.Code, Severity: pe.SeverityUnlocalized, Message: pe.Message, Detail: pe.Detail, Hint: pe.Hint,
					Position: pe.Position, InternalPosition: pe.InternalPosition, InternalQuery: pe.InternalQuery,
					Where: pe.Where, Schema: pe.SchemaName, Table: pe.TableName, Column: pe.ColumnName,
					DataType: pe.DataTypeName, Constraint: pe.ConstraintName, File: pe.File, Line: pe.Line, Routine: pe.Routine,
				}
				if *e != wantE {
					t.Errorf("got  %+v\nwant %+v", *e, wantE)
				}
				if !tt.set(e) || e.Severity != pgerr.SeverityError || e.File == "" || e.Line == 0 || e.Routine == "" {
					t.Errorf("error lacks the fields the case is about: %+v", *e)
				}
			}
		})
	}
}

func TestConnectionErrors(t *testing.T) {
	c, pg, url := newConn(t)
	ctx := context.Background()

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Exec(canceled, stmt.Statement{SQL: "SELECT 1"}); code(err) != pgerr.ConnectionFailure || !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled context: %v, want 08006 wrapping context.Canceled", err)
	}

	// The server ends the session: its FATAL error, or the lost connection.
	if err := pgtest.Exec(ctx, url, fmt.Sprintf("SELECT pg_terminate_backend(%d)", pg.PID())); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var err error
	for time.Now().Before(deadline) && !pg.IsClosed() {
		_, err = c.Exec(ctx, stmt.Statement{SQL: "SELECT 1"})
	}
	var e *pgerr.Error
	if !errors.As(err, &e) || (e.Code != pgerr.AdminShutdown && e.Code != pgerr.ConnectionFailure) || e.Severity != pgerr.SeverityFatal {
		t.Fatalf("after pg_terminate_backend: %#v", err)
	}
	_, err = c.Simple(ctx, "SELECT 1")
	if !errors.As(err, &e) || e.Code != pgerr.ConnectionFailure || e.Severity != pgerr.SeverityFatal || e.Err == nil {
		t.Fatalf("on a closed connection: %#v", err)
	}
}

func TestNotice(t *testing.T) {
	var got []string
	c := New(nil, func(m string) { got = append(got, m) })
	c.Notice("one")
	c.Notice("two")
	if !reflect.DeepEqual(got, []string{"one", "two"}) {
		t.Fatalf("notices = %q", got)
	}
	New(nil, nil).Notice("dropped")
}
