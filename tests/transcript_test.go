package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

var update = flag.Bool("update", false, "rewrite the golden protocol transcripts in testdata/transcripts")

// Golden protocol transcripts. Each script is a scripted exchange driven
// message by message; the transcript is every backend message, as JSON, one
// a line. Every script runs twice, directly against PostgreSQL and through
// pgrules, each in a fresh database. The two transcripts must be equal: that
// is what makes the golden file a statement about PostgreSQL's protocol and
// not just about whatever the proxy happened to send. The proxied transcript
// must also equal testdata/transcripts/<script>.golden; `go test ./tests/
// -run Transcript -update` rewrites those.
//
// The golden files are for the clusters the tests start (PostgreSQL 15 with
// the settings internal/tempdb gives them). Another server version reports
// other ParameterStatus values and error positions: regenerate with -update
// after reading the diff.

// trStep sends some messages and then reads backend messages until the n-th
// message of type until. The zero until means ReadyForQuery, and the zero n
// then means one for every Query, Sync and FunctionCall sent.
type trStep struct {
	send  []pgproto3.FrontendMessage
	side  string // SQL another session runs after send, before reading
	until string
	n     int
}

type trScript struct {
	name    string
	version uint32            // of the startup message; 0 means 3.0
	params  map[string]string // startup parameters besides user and database
	// startup records the startup exchange too; for the other scripts it
	// is left out, so that each golden file is about one thing.
	startup bool
	steps   []trStep
}

func q(sql string) trStep {
	return trStep{send: []pgproto3.FrontendMessage{&pgproto3.Query{String: sql}}}
}

func msgs(m ...pgproto3.FrontendMessage) trStep { return trStep{send: m} }

func be32(v int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }

// int4pl is the OID of int4pl(int4, int4) in pg_proc.dat: built-in OIDs are
// fixed. The function script looks it up as well, so a change would show in
// the transcript.
const int4pl = 177

var trScripts = []trScript{
	{name: "startup", startup: true, params: map[string]string{"application_name": "pgrules-transcript", "DateStyle": "ISO, DMY"}, steps: []trStep{
		q("SELECT current_setting('application_name'), current_setting('DateStyle')"),
	}},
	{name: "negotiate", startup: true, version: pgproto3.ProtocolVersion32, params: map[string]string{"_pq_.pgrules_option": "on"}, steps: []trStep{
		q("SELECT 1"),
	}},
	{name: "simple", steps: []trStep{
		q("SELECT 1 AS one, 'two'::text AS two, NULL::int AS three, 1.50::numeric(4,2) AS four, true AS five, '2024-02-29'::date AS six"),
		q("CREATE TABLE s (id int PRIMARY KEY, v text); INSERT INTO s VALUES (1, 'a'), (2, NULL); SELECT * FROM s ORDER BY id"),
		// Statements after an error in one Query message are skipped,
		// and the implicit transaction rolls back.
		q("INSERT INTO s VALUES (3, 'c'); INSERT INTO s VALUES (1, 'dup'); SELECT 'not reached'"),
		q("SELECT count(*) FROM s"),
		q(""),
		q(" ; "),
		q("DO $$BEGIN RAISE NOTICE 'hello %', 42; END$$"),
		q("BEGIN"),
		q("SELECT 1/0"),
		q("SELECT 1"),
		q("ROLLBACK"),
		// Larger than the proxy's 16 KiB buffers in both directions.
		q("SELECT repeat('ab', 30000) AS big, length('" + strings.Repeat("q", 40000) + "') AS len"),
		q("SELECT v FROM s WHERE false"),
	}},
	{name: "extended", steps: []trStep{
		msgs(
			&pgproto3.Parse{Name: "s1", Query: "SELECT g, $1::int + g AS n, $2::text AS t FROM generate_series(1, 3) g", ParameterOIDs: []uint32{23}},
			&pgproto3.Describe{ObjectType: 'S', Name: "s1"},
			&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "s1", Parameters: [][]byte{[]byte("40"), nil}},
			&pgproto3.Describe{ObjectType: 'P', Name: "p1"},
			&pgproto3.Execute{Portal: "p1", MaxRows: 2},
			&pgproto3.Execute{Portal: "p1"},
			&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{be32(1), []byte("x")}, ParameterFormatCodes: []int16{1, 0}, ResultFormatCodes: []int16{1}},
			&pgproto3.Execute{},
			&pgproto3.Sync{},
		),
		// Flush asks for what is ready without ending the batch.
		trStep{send: []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "SELECT generate_series(1, 3)"},
			&pgproto3.Bind{},
			&pgproto3.Execute{MaxRows: 2},
			&pgproto3.Flush{},
		}, until: "PortalSuspended", n: 1},
		msgs(&pgproto3.Execute{}, &pgproto3.Sync{}),
		// An error skips the rest of the batch up to its Sync.
		msgs(
			&pgproto3.Parse{Query: "SELECT 1/0"},
			&pgproto3.Bind{},
			&pgproto3.Execute{},
			&pgproto3.Parse{Name: "skipped", Query: "SELECT 'skipped'"},
			&pgproto3.Bind{PreparedStatement: "skipped"},
			&pgproto3.Execute{},
			&pgproto3.Sync{},
		),
		msgs(&pgproto3.Describe{ObjectType: 'S', Name: "skipped"}, &pgproto3.Sync{}),
		msgs(
			&pgproto3.Parse{Name: "ins", Query: "CREATE TEMP TABLE e (v int)"},
			&pgproto3.Bind{PreparedStatement: "ins"},
			&pgproto3.Describe{ObjectType: 'P'},
			&pgproto3.Execute{},
			&pgproto3.Close{ObjectType: 'S', Name: "s1"},
			&pgproto3.Close{ObjectType: 'P', Name: "p1"},
			&pgproto3.Close{ObjectType: 'S', Name: "never-prepared"},
			&pgproto3.Sync{},
		),
		msgs(&pgproto3.Bind{DestinationPortal: "x", PreparedStatement: "s1"}, &pgproto3.Sync{}),
		msgs(&pgproto3.Parse{Query: "SELECT $1"}, &pgproto3.Bind{}, &pgproto3.Sync{}),
	}},
	{name: "copy", steps: []trStep{
		q("CREATE TABLE c (id int, v text)"),
		trStep{send: []pgproto3.FrontendMessage{&pgproto3.Query{String: "COPY c FROM STDIN"}}, until: "CopyInResponse", n: 1},
		msgs(
			&pgproto3.CopyData{Data: []byte("1\ta\n2\t\\N\n")},
			&pgproto3.CopyData{Data: []byte("3\t" + strings.Repeat("big", 20000) + "\n")},
			&pgproto3.CopyDone{},
		),
		trStep{send: []pgproto3.FrontendMessage{&pgproto3.Query{String: "COPY c FROM STDIN"}}, until: "CopyInResponse", n: 1},
		msgs(&pgproto3.CopyData{Data: []byte("4\tlost\n")}, &pgproto3.CopyFail{Message: "the client gave up"}),
		trStep{send: []pgproto3.FrontendMessage{&pgproto3.Query{String: "COPY c FROM STDIN"}}, until: "CopyInResponse", n: 1},
		msgs(&pgproto3.CopyData{Data: []byte("not a number\tx\n")}, &pgproto3.CopyDone{}),
		// COPY in the extended protocol: Sync comes after CopyDone.
		trStep{send: []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "COPY c FROM STDIN WITH (FORMAT csv)"},
			&pgproto3.Bind{},
			&pgproto3.Execute{},
		}, until: "CopyInResponse", n: 1},
		msgs(&pgproto3.CopyData{Data: []byte("5,csv\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{}),
		q("COPY (SELECT id, v IS NULL, length(v) FROM c ORDER BY id) TO STDOUT"),
		q("COPY (SELECT id FROM c ORDER BY id) TO STDOUT WITH (FORMAT binary)"),
		q("COPY (SELECT * FROM c WHERE id <> 3 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER); SELECT 'after copy'"),
	}},
	{name: "notify", steps: []trStep{
		q("LISTEN pgrules_ch"),
		// Delivered while the session idles, without a query of its own.
		trStep{side: "NOTIFY pgrules_ch, 'from another session'", until: "NotificationResponse", n: 1},
		q("NOTIFY pgrules_ch, 'from myself'"),
		q("BEGIN; NOTIFY pgrules_ch, 'at commit'; SELECT 'in transaction'"),
		q("COMMIT"),
		q("UNLISTEN *; NOTIFY pgrules_ch, 'nobody listens'"),
	}},
	{name: "function", steps: []trStep{
		q("SELECT 'int4pl'::regproc::oid"),
		msgs(&pgproto3.FunctionCall{Function: int4pl, ArgFormatCodes: []uint16{1}, Arguments: [][]byte{be32(40), be32(2)}, ResultFormatCode: 1}),
		msgs(&pgproto3.FunctionCall{Function: int4pl, ArgFormatCodes: []uint16{0}, Arguments: [][]byte{[]byte("-1"), []byte("1")}}),
		msgs(&pgproto3.FunctionCall{Function: int4pl, Arguments: [][]byte{nil, []byte("1")}}),
		msgs(&pgproto3.FunctionCall{Function: 4294967295, Arguments: nil}),
	}},
}

func TestTranscripts(t *testing.T) {
	p := startProxy(t, shared)
	direct := ftDirectAddr(t)
	for _, sc := range trScripts {
		t.Run(sc.name, func(t *testing.T) {
			d := trRecord(t, sc, direct, shared.url, shared.newDB(t))
			px := trRecord(t, sc, p.Addr, p.url, shared.newDB(t))
			if dt, pt := trJoin(d, trConnVolatile), trJoin(px, trConnVolatile); dt != pt {
				t.Fatalf("the transcript through pgrules differs from the direct one\n%s", trDiff("directly", dt, "through pgrules", pt))
			}
			got := trJoin(px, trConnVolatile, trBuildVolatile)
			golden := filepath.Join("testdata", "transcripts", sc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if string(want) != got {
				t.Fatalf("transcript differs from %s (run with -update to accept)\n%s", golden, trDiff("golden", string(want), "now", got))
			}
		})
	}
}

// trRecord runs sc against addr and returns the backend's messages, copied
// (pgproto3 reuses them) and still raw. url is how a side session reaches
// the same server the same way.
func trRecord(t *testing.T, sc trScript, addr string, url func(user, password, db string) string, db string) []trMsg {
	t.Helper()
	c := ftDial(t, addr)
	var out []trMsg
	rec := func(m pgproto3.BackendMessage, own uint32) {
		out = append(out, trCopy(m, own))
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\nafter:\n%s", fmt.Sprintf(format, args...), trJoin(out))
	}

	params := map[string]string{"user": ftUser(), "database": db}
	for k, v := range sc.params {
		params[k] = v
	}
	version := sc.version
	if version == 0 {
		version = pgproto3.ProtocolVersion30
	}
	c.send(&pgproto3.StartupMessage{ProtocolVersion: version, Parameters: params})
	var own uint32 // the session's backend pid, as BackendKeyData gives it
	for {
		m, err := c.fe.Receive()
		if err != nil {
			fail("startup: %v", err)
		}
		if k, ok := m.(*pgproto3.BackendKeyData); ok {
			own = k.ProcessID
		}
		if sc.startup {
			rec(m, own)
		}
		if _, ok := m.(*pgproto3.ErrorResponse); ok {
			fail("startup refused")
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}

	for i, st := range sc.steps {
		if len(st.send) > 0 {
			c.send(st.send...)
		}
		if st.side != "" {
			trSide(t, url("", "", db), st.side)
		}
		until, n := st.until, st.n
		if until == "" {
			until = "ReadyForQuery"
		}
		if n == 0 {
			for _, m := range st.send {
				switch m.(type) {
				case *pgproto3.Query, *pgproto3.Sync, *pgproto3.FunctionCall:
					n++
				}
			}
		}
		for n > 0 {
			m, err := c.fe.Receive()
			if err != nil {
				fail("step %d: %v", i, err)
			}
			rec(m, own)
			if trType(m) == until {
				n--
			}
		}
	}

	// Terminate: the server closes the connection without a word. The
	// recorder notes the close as a pseudo-message of its own.
	c.send(&pgproto3.Terminate{})
	for {
		m, err := c.fe.Receive()
		if err != nil {
			if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET) {
				fail("after Terminate: %v", err)
			}
			out = append(out, trMsg{typ: "(connection closed)"})
			return out
		}
		rec(m, own)
	}
}

// trSide runs sql on a session of its own, through the same path.
func trSide(t *testing.T, url, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ftTimeout)
	defer cancel()
	c, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatalf("side session: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql).ReadAll(); err != nil {
		t.Fatalf("side session: %s: %v", sql, err)
	}
}

// trMsg is a recorded backend message with the pid of the session that
// received it, which normalisation needs.
type trMsg struct {
	typ string
	msg pgproto3.BackendMessage
	own uint32
}

func trType(m pgproto3.BackendMessage) string {
	return strings.TrimPrefix(fmt.Sprintf("%T", m), "*pgproto3.")
}

// trCopy deep-copies m by a round trip through its wire encoding, since
// Receive reuses its messages and their byte slices.
func trCopy(m pgproto3.BackendMessage, own uint32) trMsg {
	buf, err := m.Encode(nil)
	if err != nil {
		panic(err)
	}
	cp, err := pgproto3.NewFrontend(bytes.NewReader(buf), io.Discard).Receive()
	if err != nil {
		panic(err)
	}
	return trMsg{typ: trType(m), msg: cp, own: own}
}

// trConnVolatile normalises what differs from one connection to the next,
// even to the same server: the backend's pid and cancel secret (the proxy
// gives out a secret of its own, of the same length); the pid in a
// NotificationResponse, which becomes 0 for the session's own backend and
// 1 for any other, keeping the one fact that matters; and the OIDs of the
// tables a script creates, which come from the cluster-wide OID counter
// (each run has its own database) and become 1: "a table's column".
func trConnVolatile(r trMsg) {
	switch m := r.msg.(type) {
	case *pgproto3.RowDescription:
		for i := range m.Fields {
			if m.Fields[i].TableOID != 0 {
				m.Fields[i].TableOID = 1
			}
		}
	case *pgproto3.BackendKeyData:
		m.ProcessID = 0
		m.SecretKey = make([]byte, len(m.SecretKey))
	case *pgproto3.NotificationResponse:
		if m.PID == r.own {
			m.PID = 0
		} else {
			m.PID = 1
		}
	}
}

// trBuildVolatile normalises what depends on the server build and the
// machine, not on the protocol: the exact server version, the time zone
// initdb took from the environment, and where in PostgreSQL's C source an
// error was raised. Large values in rows become their length and digest, to
// keep the golden files readable; the direct comparison has the bytes.
func trBuildVolatile(r trMsg) {
	switch m := r.msg.(type) {
	case *pgproto3.ParameterStatus:
		switch m.Name {
		case "server_version", "TimeZone":
			m.Value = "(" + m.Name + ")"
		}
	case *pgproto3.ErrorResponse:
		m.File, m.Line, m.Routine = "", 0, ""
	case *pgproto3.NoticeResponse:
		m.File, m.Line, m.Routine = "", 0, ""
	case *pgproto3.DataRow:
		for i, v := range m.Values {
			m.Values[i] = trDigest(v)
		}
	}
}

func trDigest(v []byte) []byte {
	if len(v) <= 256 {
		return v
	}
	return fmt.Appendf(nil, "(%d bytes, sha256 %x)", len(v), sha256.Sum256(v))
}

// trJoin applies the normalisations to copies of the messages and renders
// them one JSON object a line.
func trJoin(msgs []trMsg, norm ...func(trMsg)) string {
	var b strings.Builder
	for _, r := range msgs {
		if r.msg == nil {
			fmt.Fprintf(&b, "{\"Type\":%q}\n", r.typ)
			continue
		}
		c := trCopy(r.msg, r.own)
		for _, n := range norm {
			n(c)
		}
		var line []byte
		var err error
		if nr, ok := c.msg.(*pgproto3.NoticeResponse); ok {
			// NoticeResponse has no JSON form of its own; it is an
			// ErrorResponse by another name.
			line, err = json.Marshal((*pgproto3.ErrorResponse)(nr))
			line = bytes.Replace(line, []byte(`"Type":"ErrorResponse"`), []byte(`"Type":"NoticeResponse"`), 1)
		} else {
			line, err = json.Marshal(c.msg)
		}
		if err != nil {
			panic(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// trDiff shows where two transcripts part, with the lines before it.
func trDiff(aName, a, bName, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	i := 0
	for i < len(al) && i < len(bl) && al[i] == bl[i] {
		i++
	}
	line := func(l []string, i int) string {
		if i >= len(l) {
			return "(end)"
		}
		if s := l[i]; len(s) > 400 {
			return s[:400] + "..."
		}
		return l[i]
	}
	var b2 strings.Builder
	for j := max(0, i-5); j < i; j++ {
		fmt.Fprintf(&b2, "  %4d  %s\n", j+1, line(al, j))
	}
	fmt.Fprintf(&b2, "- %4d  %s: %s\n+ %4d  %s: %s\n", i+1, aName, line(al, i), i+1, bName, line(bl, i))
	return b2.String()
}
