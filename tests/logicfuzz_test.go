package tests

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// TestLogicFuzz is the differential logic fuzzer: random schemas and rule
// sets (logicfuzz_gen_test.go), random statements in every transaction
// shape, run through pgrules on one database and directly on a twin whose
// logic is PL/pgSQL triggers. After each transaction both must have given
// the same errors, the same RETURNING rows and the same data, and
// pgrules.verify() must find nothing. A difference prints a reproduction,
// reduced to the transactions it needs.
//
// make test runs a fixed set of seeds; make fuzz runs new ones for as long
// as -fuzz.duration says (-fuzz.seed starts elsewhere).
var (
	fuzzDuration = flag.Duration("fuzz.duration", 0, "run the logic fuzzer for this long (0: the fixed seeds of make test)")
	fuzzSeed     = flag.Uint64("fuzz.seed", 0, "the logic fuzzer's first seed (0: from the clock when -fuzz.duration is set)")
	fuzzTxs      = flag.Int("fuzz.txs", 30, "transactions per case")
	fuzzOnly     = flag.String("fuzz.only", "", "run only the differential (\"twin\") or the concurrent (\"concurrent\") part of each case")
)

// fzFixedCases is what make test runs: enough to pass every shape and most
// rule combinations, within about two minutes under the race detector.
const fzFixedCases = 12

func TestLogicFuzz(t *testing.T) {
	seed, cases := uint64(1), fzFixedCases
	var deadline time.Time
	if *fuzzDuration > 0 {
		seed, cases = uint64(time.Now().UnixNano()), 1<<30
		deadline = time.Now().Add(*fuzzDuration)
	}
	if *fuzzSeed != 0 {
		seed = *fuzzSeed
	}
	p := startProxy(t, shared)
	var ran, txs, statements, failed, bad int
	// The concurrent sessions' errors by SQLSTATE: the serialization
	// failures and deadlocks are the price of exactness under concurrency.
	codes := make(map[string]int)
	for i := range cases {
		if !deadline.IsZero() && time.Now().After(deadline) {
			break
		}
		fc := fzGenerate(seed + uint64(i))
		ran++
		t.Run(fmt.Sprintf("seed=%d", fc.seed), func(t *testing.T) {
			if *fuzzOnly != "concurrent" {
				history := fc.transactions(*fuzzTxs)
				n, stmts, refused, err := fc.run(t, p, history)
				txs, statements, failed = txs+n, statements+stmts, failed+refused
				if err != nil {
					bad++
					t.Fatalf("%v\n%s", err, fc.reproduce(t, p, history))
				}
			}
			// The concurrent part runs under make fuzz: its interleavings
			// are the scheduler's, and a failure must name a seed that
			// replays it, which the fixed seeds of make test cannot
			// promise.
			if *fuzzOnly == "concurrent" || *fuzzOnly == "" && *fuzzDuration > 0 && i%3 == 0 {
				n, err := fc.concurrently(t, p, codes)
				txs += n
				if err != nil {
					bad++
					t.Fatalf("concurrent sessions: %v\nschema:\n%s\nrules:\n%s", err, fc.schema, strings.Join(fc.rules, ";\n"))
				}
			}
		})
		if bad > 0 && *fuzzDuration == 0 {
			break
		}
	}
	t.Logf("logic fuzzer: %d cases from seed %d, %d of them failing; %d transactions, %d statements (%d refused by both)", ran, seed, bad, txs, statements, failed)
	if len(codes) > 0 {
		t.Logf("concurrent sessions' errors by SQLSTATE: %v", codes)
	}
}

// fzShape is how a transaction's statements are sent.
type fzShape int

const (
	fzAutocommit   fzShape = iota // each statement a Query of its own
	fzCommit                      // BEGIN, the statements, COMMIT
	fzRollback                    // BEGIN, the statements, ROLLBACK
	fzOneQuery                    // one Query holding every statement
	fzExtended                    // each statement with its values as parameters, in BEGIN ... COMMIT
	fzBatch                       // one pipelined batch of parameterised statements
	fzSavepoint                   // BEGIN, SAVEPOINT, ROLLBACK TO or RELEASE half way, COMMIT
	fzControlQuery                // one Query with BEGIN, COMMIT or ROLLBACK among the statements
	fzControlBatch                // the same as one pipelined batch
	fzPortal                      // in BEGIN ... COMMIT, each statement's portal fetched a row at a time, a Sync after each
	fzCopy                        // in BEGIN ... COMMIT, each plain INSERT's rows sent as a COPY FROM STDIN
	fzShapes
)

var fzShapeNames = [...]string{"autocommit", "commit", "rollback", "query", "extended", "batch", "savepoint", "control query", "control batch", "portal", "copy"}

// fzControls are the transaction control of a fzControlQuery or
// fzControlBatch: what comes first, and what ends the block (tx.texts).
var fzControls = [][2]string{{"BEGIN", "COMMIT"}, {"", "COMMIT"}, {"BEGIN", "ROLLBACK"}, {"", "ROLLBACK"}, {"BEGIN", ""}}

// fzTx is one transaction of a case.
type fzTx struct {
	shape      fzShape
	statements []fzStatement
	// release, for fzSavepoint: RELEASE instead of ROLLBACK TO.
	release bool
	// control and at, for fzControlQuery and fzControlBatch: which of
	// fzControls, and the statement the block ends after.
	control, at int
}

// texts are the statements of a fzControlQuery or fzControlBatch with its
// transaction control: BEGIN first, COMMIT or ROLLBACK after statement at,
// the rest after it — in PostgreSQL's implicit transactions, that is a
// block, then an implicit transaction of its own.
func (tx fzTx) texts() []fzStatement {
	c := fzControls[tx.control]
	var out []fzStatement
	if c[0] != "" {
		out = append(out, fzStatement{text: c[0], params: c[0]})
	}
	for i, st := range tx.statements {
		out = append(out, st)
		if i == tx.at && c[1] != "" {
			out = append(out, fzStatement{text: c[1], params: c[1]})
		}
	}
	return out
}

func (tx fzTx) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "-- %s\n", fzShapeNames[tx.shape])
	if tx.shape == fzControlQuery || tx.shape == fzControlBatch {
		for _, st := range tx.texts() {
			fmt.Fprintf(&b, "%s;\n", st.text)
		}
		return b.String()
	}
	for i, st := range tx.statements {
		if tx.shape == fzSavepoint && i == len(tx.statements)/2 {
			b.WriteString("SAVEPOINT s;\n")
		}
		switch {
		case tx.shape == fzExtended || tx.shape == fzBatch:
			fmt.Fprintf(&b, "%s; -- %q\n", st.params, st.args)
		case tx.shape == fzCopy && st.copy != "":
			fmt.Fprintf(&b, "%s;\n%s\\.\n", st.copy, st.copyData)
		default:
			b.WriteString(st.text + ";\n")
		}
	}
	return b.String()
}

// transactions makes a case's history: a few parents first, then random
// transactions.
func (fc *fzCase) transactions(n int) []fzTx {
	r := rand.New(rand.NewPCG(fc.seed, 42))
	seedRows := fzTx{shape: fzAutocommit}
	for id := 1; id <= 3; id++ {
		seedRows.statements = append(seedRows.statements, fzStatement{text: fmt.Sprintf("INSERT INTO p (id, a, n, lim) VALUES (%d, %d, %d.50, 900)", id, id, id*10)})
	}
	out := []fzTx{seedRows}
	for range n {
		tx := fzTx{shape: fzShape(r.IntN(int(fzShapes))), release: r.IntN(2) == 0, control: r.IntN(len(fzControls))}
		for range 1 + r.IntN(4) {
			tx.statements = append(tx.statements, fc.statement(r))
		}
		tx.at = r.IntN(len(tx.statements))
		out = append(out, tx)
	}
	return out
}

// fzOutcome is what a statement gave: its error's SQLSTATE, or its tag and
// RETURNING rows (sorted: their order is not defined).
type fzOutcome struct {
	code string
	tag  string
	rows []string
	// msg is the error's message, shown in a difference, not compared.
	msg string
}

func (o fzOutcome) String() string {
	if o.code != "" {
		return "ERROR " + o.code
	}
	return o.tag + " " + strings.Join(o.rows, " ")
}

// fzShow renders outcomes with their error messages.
func fzShow(outs []fzOutcome) string {
	parts := make([]string, len(outs))
	for i, o := range outs {
		parts[i] = o.String()
		if o.msg != "" {
			parts[i] += " (" + o.msg + ")"
		}
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// fzFailed is the outcome of a statement that failed with err, or false
// when err is not the server's.
func fzFailed(err error) (fzOutcome, bool) {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return fzOutcome{}, false
	}
	return fzOutcome{code: pe.Code, msg: pe.Message}, true
}

// fzSide is one of the two databases.
type fzSide struct {
	conn *pgconn.PgConn
	// twin is set on the database of the triggers: its RETURNING rows of
	// an INSERT or UPDATE are read again after the statement, when the
	// triggers have settled them (a RETURNING list comes before AFTER
	// STATEMENT triggers; pgrules returns the derived values).
	twin bool
}

// run plays a history on a fresh pair of databases and compares them after
// each transaction.
// The error is a *fzDiff when the databases differ.
func (fc *fzCase) run(t *testing.T, p *testProxy, history []fzTx) (txs, statements, failed int, err error) {
	t.Helper()
	sc := &fzScope{t: t}
	defer sc.close()
	ruled, twin := fc.databases(sc, p)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i, tx := range history {
		got, gerr := tx.play(ctx, ruled)
		want, werr := tx.play(ctx, twin)
		if gerr != nil || werr != nil {
			return txs, statements, failed, fmt.Errorf("transaction %d: pgrules: %v; triggers: %v", i, gerr, werr)
		}
		txs++
		statements += len(tx.statements)
		if !slices.EqualFunc(got, want, func(a, b fzOutcome) bool { return a.String() == b.String() }) {
			return txs, statements, failed, &fzDiff{i, fmt.Sprintf("transaction %d (%s) answered differently:\n  pgrules:  %s\n  triggers: %s", i, fzShapeNames[tx.shape], fzShow(got), fzShow(want))}
		}
		for _, o := range got {
			if o.code != "" {
				failed++
			}
		}
		gs, err1 := fzDump(ctx, ruled.conn)
		ws, err2 := fzDump(ctx, twin.conn)
		if err := errors.Join(err1, err2); err != nil {
			return txs, statements, failed, err
		}
		if gs != ws {
			return txs, statements, failed, &fzDiff{i, fmt.Sprintf("after transaction %d (%s) the data differ:\n  pgrules:  %s\n  triggers: %s", i, fzShapeNames[tx.shape], gs, ws)}
		}
		drift, err := fzRows(ctx, ruled.conn, "SELECT rule || ' ' || table_name || ' ' || key || ': ' || stored || ' <> ' || computed FROM pgrules.verify()")
		if err != nil {
			return txs, statements, failed, err
		}
		if len(drift) > 0 {
			return txs, statements, failed, &fzDiff{i, fmt.Sprintf("after transaction %d verify() reports drift: %s", i, strings.Join(drift, "; "))}
		}
	}
	return txs, statements, failed, nil
}

// fzDiff is a difference between the two databases, after transaction at.
type fzDiff struct {
	at  int
	msg string
}

func (d *fzDiff) Error() string { return d.msg }

// fzScope holds the databases and connections of one run of a history,
// dropped and closed when the run ends: a case is played many times over
// while its reproduction is reduced.
type fzScope struct {
	t     *testing.T
	conns []*pgconn.PgConn
	dbs   []string
}

func (sc *fzScope) db() string {
	db := shared.newDB(sc.t)
	sc.dbs = append(sc.dbs, db)
	return db
}

func (sc *fzScope) connect(url string) *pgconn.PgConn {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, url)
	if err != nil {
		sc.t.Fatalf("connect: %v", err)
	}
	sc.conns = append(sc.conns, c)
	return c
}

func (sc *fzScope) close() {
	for _, c := range sc.conns {
		c.Close(context.Background())
	}
	for _, db := range sc.dbs {
		shared.exec(context.Background(), "postgres", fmt.Sprintf("DROP DATABASE IF EXISTS %q WITH (FORCE)", db))
	}
}

// databases makes the case's two databases: its rules defined through the
// proxy on one, its triggers on the other.
func (fc *fzCase) databases(sc *fzScope, p *testProxy) (ruled, twin fzSide) {
	t := sc.t
	t.Helper()
	rdb, tdb := sc.db(), sc.db()
	scalar(t, sc.connect(shared.url("", "", rdb)), fc.schema)
	ruled = fzSide{conn: sc.connect(p.url("", "", rdb))}
	for _, r := range fc.rules {
		if e := pgError(t, ruled.conn, r); e != nil {
			t.Fatalf("%s: %v\nschema:\n%s", r, e, fc.schema)
		}
	}
	twin = fzSide{conn: sc.connect(shared.url("", "", tdb)), twin: true}
	scalar(t, twin.conn, fc.schema)
	scalar(t, twin.conn, fc.oracle)
	return ruled, twin
}

// play runs a transaction on one side and returns each statement's
// outcome; an error is returned only when the connection itself failed.
// Statements sent together (one Query, one batch) are compared by their
// tags: the triggers' RETURNING rows come before their AFTER STATEMENT
// triggers have settled the derived values, and cannot be read again in
// between.
func (tx fzTx) play(ctx context.Context, s fzSide) ([]fzOutcome, error) {
	var out []fzOutcome
	switch tx.shape {
	case fzOneQuery, fzControlQuery:
		sts := tx.statements
		if tx.shape == fzControlQuery {
			sts = tx.texts()
		}
		texts := make([]string, len(sts))
		for i, st := range sts {
			texts[i] = st.text
		}
		res, err := s.conn.Exec(ctx, strings.Join(texts, ";\n")).ReadAll()
		return s.together(ctx, res, err)
	case fzBatch, fzControlBatch:
		sts := tx.statements
		if tx.shape == fzControlBatch {
			sts = tx.texts()
		}
		b := &pgconn.Batch{}
		for _, st := range sts {
			b.ExecParams(st.params, fzArgs(st.args), nil, nil, nil)
		}
		res, err := s.conn.ExecBatch(ctx, b).ReadAll()
		return s.together(ctx, res, err)
	}
	explicit := tx.shape != fzAutocommit
	if explicit {
		if _, err := s.conn.Exec(ctx, "BEGIN").ReadAll(); err != nil {
			return nil, err
		}
	}
	failed, saved := false, false
	for i, st := range tx.statements {
		if tx.shape == fzSavepoint && i == len(tx.statements)/2 {
			if _, err := s.conn.Exec(ctx, "SAVEPOINT s").ReadAll(); err != nil {
				return nil, err
			}
			saved = true
		}
		var o fzOutcome
		var err error
		switch {
		case tx.shape == fzPortal:
			o, err = s.portal(st)
		case tx.shape == fzCopy && st.copy != "":
			o, err = s.copyIn(ctx, st)
		default:
			o, err = s.statement(ctx, st, tx.shape == fzExtended)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, o)
		if o.code == "" || !explicit {
			continue
		}
		if !saved {
			failed = true
			break
		}
		// A failure after the savepoint is rolled back to it, and the
		// transaction goes on without it.
		if _, err := s.conn.Exec(ctx, "ROLLBACK TO SAVEPOINT s").ReadAll(); err != nil {
			return nil, err
		}
		saved = false
	}
	end := "COMMIT"
	switch {
	case tx.shape == fzRollback || failed:
		end = "ROLLBACK"
	case saved && tx.release:
		end = "RELEASE SAVEPOINT s; COMMIT"
	case saved:
		end = "ROLLBACK TO SAVEPOINT s; COMMIT"
	}
	if explicit {
		res, err := s.conn.Exec(ctx, end).ReadAll()
		if o, ok := fzFailed(err); ok {
			out = append(out, o)
		} else if err != nil {
			return nil, err
		} else {
			out = append(out, fzOutcome{tag: res[len(res)-1].CommandTag.String()})
		}
	}
	return out, nil
}

// together is the outcome of statements sent together: their tags, then
// the error that stopped them.
func (s fzSide) together(ctx context.Context, res []*pgconn.Result, err error) ([]fzOutcome, error) {
	var out []fzOutcome
	for _, r := range res {
		out = append(out, fzOutcome{tag: r.CommandTag.String()})
	}
	if o, ok := fzFailed(err); ok {
		out = append(out, o)
	} else if err != nil {
		return nil, err
	}
	return out, s.settle(ctx)
}

// settle rolls back a transaction that a Query or batch left open (one
// that began with BEGIN and did not end), so that the next starts afresh.
func (s fzSide) settle(ctx context.Context) error {
	if s.conn.TxStatus() == 'I' {
		return nil
	}
	_, err := s.conn.Exec(ctx, "ROLLBACK").ReadAll()
	return err
}

// statement runs one statement on its own, with the simple protocol or
// with its values as parameters.
func (s fzSide) statement(ctx context.Context, st fzStatement, extended bool) (fzOutcome, error) {
	var res *pgconn.Result
	if extended {
		res = s.conn.ExecParams(ctx, st.params, fzArgs(st.args), nil, nil, nil).Read()
	} else {
		all, err := s.conn.Exec(ctx, st.text).ReadAll()
		switch {
		case len(all) == 0:
			res = &pgconn.Result{Err: err}
		case all[0].Err == nil && err != nil:
			// The statement completed and its implicit commit failed
			// (a commit constraint, a deferred trigger).
			res = &pgconn.Result{Err: err}
		default:
			res = all[0]
		}
	}
	if o, ok := fzFailed(res.Err); ok {
		return o, nil
	} else if res.Err != nil {
		return fzOutcome{}, res.Err
	}
	rows := res.Rows
	tag := res.CommandTag.String()
	if s.twin && len(rows) > 0 && !strings.HasPrefix(tag, "DELETE") {
		settled, err := s.settled(ctx, st.text, rows)
		if err != nil {
			return fzOutcome{}, err
		}
		rows = settled
	}
	return fzOutcomeOf(tag, rows), nil
}

// copyIn sends an INSERT's rows as a COPY FROM STDIN.
func (s fzSide) copyIn(ctx context.Context, st fzStatement) (fzOutcome, error) {
	tag, err := s.conn.CopyFrom(ctx, strings.NewReader(st.copyData), st.copy)
	if o, ok := fzFailed(err); ok {
		return o, nil
	} else if err != nil {
		return fzOutcome{}, err
	}
	return fzOutcomeOf(tag.String(), nil), nil
}

// portal runs a statement as JDBC does with a fetch size: its portal,
// bound in the open transaction, executed a row at a time with a Sync
// after each Execute, until it completes. The statement returns its rows'
// keys (the triggers' RETURNING lists come before their AFTER STATEMENT
// triggers settle the rest).
func (s fzSide) portal(st fzStatement) (fzOutcome, error) {
	sql, _, _ := strings.Cut(st.params, " RETURNING")
	fe := s.conn.Frontend()
	fe.Send(&pgproto3.Parse{Query: sql + " RETURNING id"})
	fe.Send(&pgproto3.Bind{DestinationPortal: "fz", Parameters: fzArgs(st.args)})
	var o fzOutcome
	for done := false; !done; {
		fe.Send(&pgproto3.Execute{Portal: "fz", MaxRows: 1})
		fe.Send(&pgproto3.Sync{})
		if err := fe.Flush(); err != nil {
			return o, err
		}
		for ready := false; !ready; {
			msg, err := fe.Receive()
			if err != nil {
				return o, err
			}
			switch m := msg.(type) {
			case *pgproto3.DataRow:
				o.rows = append(o.rows, string(m.Values[0]))
			case *pgproto3.CommandComplete:
				o.tag, done = string(m.CommandTag), true
			case *pgproto3.ErrorResponse:
				o, done = fzOutcome{code: m.Code, msg: m.Message}, true
			case *pgproto3.ReadyForQuery:
				ready = true
			}
		}
	}
	slices.Sort(o.rows)
	return o, nil
}

// settled reads again the rows an INSERT or UPDATE returned, by key, as the
// triggers left them.
func (s fzSide) settled(ctx context.Context, sql string, rows [][][]byte) ([][][]byte, error) {
	table := fzTableOf(sql)
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = string(r[0])
	}
	res, err := s.conn.Exec(ctx, fmt.Sprintf("SELECT * FROM %s WHERE id IN (%s)", table, strings.Join(ids, ", "))).ReadAll()
	if err != nil {
		return nil, err
	}
	return res[0].Rows, nil
}

// fzTableOf is the table a generated INSERT or UPDATE writes.
func fzTableOf(sql string) string {
	f := strings.Fields(sql)
	if f[0] == "INSERT" {
		return f[2]
	}
	return f[1]
}

func fzOutcomeOf(tag string, rows [][][]byte) fzOutcome {
	o := fzOutcome{tag: tag}
	for _, r := range rows {
		vals := make([]string, len(r))
		for i, v := range r {
			if v == nil {
				vals[i] = "NULL"
			} else {
				vals[i] = string(v)
			}
		}
		o.rows = append(o.rows, "("+strings.Join(vals, ",")+")")
	}
	slices.Sort(o.rows)
	return o
}

func fzArgs(args []string) [][]byte {
	out := make([][]byte, len(args))
	for i, a := range args {
		out[i] = []byte(a)
	}
	return out
}

// fzDump is the data of the three tables, in key order.
func fzDump(ctx context.Context, c *pgconn.PgConn) (string, error) {
	rows, err := fzRows(ctx, c, "SELECT 'p' || p::text FROM p UNION ALL SELECT 'c' || c::text FROM c UNION ALL SELECT 'g' || g::text FROM g")
	if err != nil {
		return "", err
	}
	slices.Sort(rows)
	return strings.Join(rows, " "), nil
}

func fzRows(ctx context.Context, c *pgconn.PgConn, sql string) ([]string, error) {
	res, err := c.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range res[0].Rows {
		out = append(out, string(r[0]))
	}
	return out, nil
}

// reproduce reduces a failing history to the transactions the difference
// needs (dropping one at a time while it stays) and prints it with the
// schema, the rules and the triggers.
func (fc *fzCase) reproduce(t *testing.T, p *testProxy, history []fzTx) string {
	t.Helper()
	fails := func(h []fzTx) bool {
		_, _, _, err := fc.run(t, p, h)
		var d *fzDiff
		return errors.As(err, &d)
	}
	_, _, _, err := fc.run(t, p, history)
	var d *fzDiff
	if !errors.As(err, &d) {
		return "(no difference when played again)"
	}
	history = history[:d.at+1]
	const budget = 20
	tries := 0
	for i := len(history) - 2; i >= 0 && tries < budget; i-- {
		shorter := slices.Delete(slices.Clone(history), i, i+1)
		tries++
		if fails(shorter) {
			history = shorter
		}
	}
	_, _, _, err = fc.run(t, p, history)
	var b strings.Builder
	fmt.Fprintf(&b, "-- reproduction (seed %d, %d transactions after reduction): %v\n-- schema\n%s\n-- rules, through pgrules\n%s;\n",
		fc.seed, len(history), err, fc.schema, strings.Join(fc.rules, ";\n"))
	for i, tx := range history {
		fmt.Fprintf(&b, "-- transaction %d\n%s", i, tx)
	}
	if os.Getenv("PGRULES_FUZZ_ORACLE") != "" {
		b.WriteString("-- the triggers of the twin\n" + fc.oracle)
	}
	return b.String()
}

// fzSessions and fzSessionTxs size the concurrent phase of a case.
const fzSessions, fzSessionTxs = 4, 8

// concurrently runs random autocommit and explicit transactions from
// several sessions at once through pgrules; the interleaving is the
// server's, so there is no twin to compare with, but afterwards verify()
// must find nothing and every constraint must hold. A statement may fail
// as it would on PostgreSQL (a deadlock, a serialization failure, a
// constraint), never leave the data against the rules.
func (fc *fzCase) concurrently(t *testing.T, p *testProxy, codes map[string]int) (int, error) {
	t.Helper()
	sc := &fzScope{t: t}
	defer sc.close()
	db := sc.db()
	admin := sc.connect(shared.url("", "", db))
	scalar(t, admin, fc.schema)
	setup := sc.connect(p.url("", "", db))
	for _, r := range fc.rules {
		if e := pgError(t, setup, r); e != nil {
			return 0, fmt.Errorf("%s: %v", r, e)
		}
	}
	for id := 1; id <= fzKeys; id++ {
		scalar(t, setup, fmt.Sprintf("INSERT INTO p (id, a, n, lim) VALUES (%d, %d, %d.25, 100000)", id, id, id))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	errs := make(chan error, fzSessions)
	var mu sync.Mutex
	for i := range fzSessions {
		conn := sc.connect(p.url("", "", db))
		r := rand.New(rand.NewPCG(fc.seed, uint64(1000+i)))
		go func() {
			for range fzSessionTxs {
				tx := fzTx{shape: pick(r, fzAutocommit, fzCommit, fzExtended, fzOneQuery, fzBatch)}
				for range 1 + r.IntN(3) {
					tx.statements = append(tx.statements, fc.statement(r))
				}
				out, err := tx.play(ctx, fzSide{conn: conn})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for _, o := range out {
					if o.code != "" {
						codes[o.code]++
					}
				}
				mu.Unlock()
			}
			errs <- nil
		}()
	}
	var err error
	for range fzSessions {
		err = errors.Join(err, <-errs)
	}
	if err != nil {
		return 0, err
	}
	drift, err := fzRows(ctx, setup, "SELECT rule || ' ' || table_name || ' ' || key || ': ' || stored || ' <> ' || computed FROM pgrules.verify()")
	if err != nil {
		return 0, err
	}
	if len(drift) > 0 {
		return 0, fmt.Errorf("verify() reports drift: %s", strings.Join(drift, "; "))
	}
	for _, c := range fc.checks {
		rows, err := fzRows(ctx, admin, fmt.Sprintf("SELECT t.id::text FROM %s t WHERE NOT (%s)", c.table, c.sql))
		if err != nil {
			return 0, err
		}
		if len(rows) > 0 {
			return 0, fmt.Errorf("constraint %s is false on %s %v", c.name, c.table, rows)
		}
	}
	return fzSessions * fzSessionTxs, nil
}
