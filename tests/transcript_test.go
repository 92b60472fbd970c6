package tests

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

var update = flag.Bool("update", false, "rewrite the golden protocol transcripts in testdata/transcripts")

// A transcript is every backend message of a scripted exchange, one JSON
// object a line. Each script runs directly and through the proxy; the two
// must be equal, and the proxied one must equal the golden file.
var transcripts = []struct {
	name string
	send []pgproto3.FrontendMessage
}{
	{"simple", []pgproto3.FrontendMessage{
		&pgproto3.Query{String: "CREATE TEMP TABLE t (id int, v text); INSERT INTO t VALUES (1, 'a'), (2, NULL); SELECT count(v), count(*) FROM t; SELECT * FROM (VALUES (1, 'a'), (2, NULL)) AS v(id, v)"},
		&pgproto3.Query{String: "SELECT 1; SELECT 1/0; SELECT 3"},
		&pgproto3.Query{String: ""},
		&pgproto3.Query{String: "COPY (SELECT 1 AS x UNION ALL SELECT 2) TO STDOUT"},
	}},
	{"extended", []pgproto3.FrontendMessage{
		&pgproto3.Parse{Name: "s1", Query: "SELECT $1::int + 1 AS n, $2::text AS t"},
		&pgproto3.Describe{ObjectType: 'S', Name: "s1"},
		&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "s1", Parameters: [][]byte{[]byte("41"), nil}},
		&pgproto3.Describe{ObjectType: 'P', Name: "p1"},
		&pgproto3.Execute{Portal: "p1"},
		&pgproto3.Bind{PreparedStatement: "s1", Parameters: [][]byte{[]byte("1"), []byte("x")}, ResultFormatCodes: []int16{1}},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
		&pgproto3.Parse{Query: "SELECT generate_series(1, 5)"},
		&pgproto3.Bind{},
		&pgproto3.Execute{MaxRows: 2},
		&pgproto3.Execute{MaxRows: 2},
		&pgproto3.Flush{},
		&pgproto3.Execute{},
		&pgproto3.Parse{Query: "SELECT 1/0"},
		&pgproto3.Bind{},
		&pgproto3.Execute{},
		&pgproto3.Parse{Query: "SELECT 'skipped'"},
		&pgproto3.Sync{},
		&pgproto3.Close{ObjectType: 'S', Name: "s1"},
		&pgproto3.Sync{},
	}},
}

func TestTranscripts(t *testing.T) {
	p := startProxy(t, shared)
	db := shared.newDB(t)
	for _, tc := range transcripts {
		t.Run(tc.name, func(t *testing.T) {
			direct := transcript(t, strings.Split(shared.url("", "", db), "@")[1], db, tc.send)
			proxied := transcript(t, p.Addr, db, tc.send)
			if direct != proxied {
				t.Fatalf("transcripts differ\n--- direct\n%s--- through pgrules\n%s", direct, proxied)
			}
			golden := filepath.Join("testdata", "transcripts", tc.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(proxied), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if string(want) != proxied {
				t.Fatalf("transcript differs from %s\n--- golden\n%s--- got\n%s", golden, want, proxied)
			}
		})
	}
}

// transcript logs in at hostport (host:port/... is cut at the slash), sends
// the script and records the backend's messages until the last
// ReadyForQuery.
func transcript(t *testing.T, hostport, db string, send []pgproto3.FrontendMessage) string {
	t.Helper()
	hostport, _, _ = strings.Cut(hostport, "/")
	c := dialRaw(t, hostport)
	c.startup(t, db)
	syncs := 0
	for _, m := range send {
		c.fe.Send(m)
		switch m.(type) {
		case *pgproto3.Query, *pgproto3.Sync:
			syncs++
		}
	}
	if err := c.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for syncs > 0 {
		msg, err := c.fe.Receive()
		if err != nil {
			t.Fatalf("after:\n%s%v", b.String(), err)
		}
		switch m := msg.(type) {
		case *pgproto3.ReadyForQuery:
			syncs--
		case *pgproto3.ErrorResponse:
			// Where in PostgreSQL's source the error was raised is not
			// part of the protocol and changes between builds.
			m.File, m.Line, m.Routine = "", 0, ""
		}
		line, err := json.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}
