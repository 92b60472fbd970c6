package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Differential transparency: the corpus in testdata/transparency runs once
// directly and once through the proxy, each time on a fresh database, and
// everything a client can see must be the same.

func corpus(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/transparency/*.sql")
	if err != nil || len(files) < 5 {
		t.Fatalf("corpus missing: %v %v", files, err)
	}
	return files
}

// notifyPID is the one thing that differs between two sessions: the
// process ID of the notifying backend.
var notifyPID = regexp.MustCompile(`server process with PID \d+`)

func TestTransparencyPsql(t *testing.T) {
	p := startProxy(t, shared)
	for _, file := range corpus(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			direct := runPsqlFile(t, shared.url("", "", shared.newDB(t)), file)
			proxied := runPsqlFile(t, p.url("", "", shared.newDB(t)), file)
			if direct != proxied {
				t.Fatalf("psql output differs\n--- direct\n%s\n--- through pgrules\n%s", direct, proxied)
			}
			if strings.Count(direct, "\n") < 5 {
				t.Fatalf("suspiciously little output:\n%s", direct)
			}
		})
	}
}

func runPsqlFile(t *testing.T, url, file string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// -a echoes each statement, VERBOSITY=verbose prints SQLSTATEs and
	// every error field.
	cmd := exec.CommandContext(ctx, "psql", "-X", "-a", "-v", "VERBOSITY=verbose", "-v", "ON_ERROR_STOP=0", "-d", url, "-f", file)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	return notifyPID.ReplaceAllString(string(out), "server process with PID N")
}

// splitStatements splits a script at top-level semicolons, respecting
// quotes and dollar quotes; COPY data blocks are not supported.
func splitStatements(script string) []string {
	var out []string
	var b strings.Builder
	inQuote, dollar := false, ""
	for i := 0; i < len(script); i++ {
		c := script[i]
		switch {
		case dollar != "":
			if strings.HasPrefix(script[i:], dollar) {
				b.WriteString(dollar)
				i += len(dollar) - 1
				dollar = ""
				continue
			}
		case inQuote:
			if c == '\'' {
				inQuote = false
			}
		case c == '\'':
			inQuote = true
		case c == '$':
			if m := regexp.MustCompile(`^\$[a-zA-Z_]*\$`).FindString(script[i:]); m != "" {
				dollar = m
				b.WriteString(m)
				i += len(m) - 1
				continue
			}
		case c == ';':
			if s := strings.TrimSpace(b.String()); s != "" {
				out = append(out, s)
			}
			b.Reset()
			continue
		}
		b.WriteByte(c)
	}
	if s := strings.TrimSpace(b.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// describe renders everything a driver sees of one result.
func describe(r *pgconn.Result, err error, tx byte) string {
	var b strings.Builder
	if r != nil {
		for _, f := range r.FieldDescriptions {
			// Types the corpus creates get new OIDs in each database, so
			// only built-in type OIDs can be compared.
			oid := fmt.Sprint(f.DataTypeOID)
			if f.DataTypeOID >= 16384 {
				oid = "user-defined"
			}
			fmt.Fprintf(&b, "field %s oid=%s fmt=%d size=%d mod=%d\n", f.Name, oid, f.Format, f.DataTypeSize, f.TypeModifier)
		}
		for _, row := range r.Rows {
			b.WriteString("row")
			for _, v := range row {
				if v == nil {
					b.WriteString(" NULL")
				} else {
					fmt.Fprintf(&b, " %q", v)
				}
			}
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "tag %q\n", r.CommandTag.String())
		if err == nil {
			err = r.Err
		}
	}
	if pe, ok := err.(*pgconn.PgError); ok {
		fmt.Fprintf(&b, "error %s %s %q detail=%q hint=%q pos=%d schema=%q table=%q column=%q constraint=%q\n",
			pe.Severity, pe.Code, pe.Message, pe.Detail, pe.Hint, pe.Position, pe.SchemaName, pe.TableName, pe.ColumnName, pe.ConstraintName)
	} else if err != nil {
		fmt.Fprintf(&b, "error %v\n", err)
	}
	fmt.Fprintf(&b, "tx %c\n", tx)
	return b.String()
}

// extendedTranscript runs each statement with the extended protocol and
// records what the driver saw.
func extendedTranscript(t *testing.T, url string, stmts []string) []string {
	c := connect(t, url)
	ctx := context.Background()
	var out []string
	for _, s := range stmts {
		r := c.ExecParams(ctx, s, nil, nil, nil, nil).Read()
		out = append(out, s+"\n"+describe(r, nil, c.TxStatus()))
	}
	// Parameters in text and binary, and a named prepared statement.
	sd, err := c.Prepare(ctx, "typed", "SELECT $1::numeric + $2::int AS sum, $3::bytea AS b, $4::text IS NULL AS isnull", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, formats := range [][]int16{{0}, {1}} {
		r := c.ExecPrepared(ctx, "typed", [][]byte{[]byte("0.1"), []byte("2"), []byte("\\x00ff"), nil}, nil, formats).Read()
		out = append(out, fmt.Sprintf("prepared formats=%v params=%v\n%s", formats, sd.ParamOIDs, describe(r, nil, c.TxStatus())))
	}
	return out
}

func pipelineTranscript(t *testing.T, url string, stmts []string) []string {
	c := connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pl := c.StartPipeline(ctx)
	for _, s := range stmts {
		pl.SendQueryParams(s, nil, nil, nil, nil)
	}
	if err := pl.Sync(); err != nil {
		t.Fatal(err)
	}
	var out []string
	for {
		res, err := pl.GetResults()
		if err != nil {
			out = append(out, describe(nil, err, '-'))
			continue
		}
		switch r := res.(type) {
		case *pgconn.ResultReader:
			out = append(out, describe(r.Read(), nil, '-'))
		case *pgconn.PipelineSync:
			if err := pl.Close(); err != nil {
				out = append(out, "close: "+err.Error())
			}
			return append(out, fmt.Sprintf("tx %c", c.TxStatus()))
		case nil:
			t.Fatal("pipeline ended without its Sync")
		}
	}
}

func TestTransparencyExtended(t *testing.T) {
	p := startProxy(t, shared)
	for _, file := range corpus(t) {
		name := filepath.Base(file)
		if name == "copy.sql" {
			continue // COPY FROM STDIN data is psql's; TestTransparencyCopy covers COPY.
		}
		script, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		stmts := splitStatements(string(script))
		for mode, run := range map[string]func(*testing.T, string, []string) []string{
			"extended": extendedTranscript,
			"pipeline": pipelineTranscript,
		} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				direct := run(t, shared.url("", "", shared.newDB(t)), stmts)
				proxied := run(t, p.url("", "", shared.newDB(t)), stmts)
				if len(direct) < 2 || len(direct) != len(proxied) {
					t.Fatalf("%d results directly, %d through pgrules", len(direct), len(proxied))
				}
				for i := range direct {
					if direct[i] != proxied[i] {
						t.Fatalf("result %d differs\n--- direct\n%s--- through pgrules\n%s", i, direct[i], proxied[i])
					}
				}
			})
		}
	}
}

func TestTransparencyCopy(t *testing.T) {
	p := startProxy(t, shared)
	var data strings.Builder
	for i := 0; i < 100000; i++ {
		fmt.Fprintf(&data, "%d\tname %d with some padding to make it longer\t%d.%02d\n", i, i, i, i%100)
	}
	run := func(url string) (string, string) {
		c := connect(t, url)
		ctx := context.Background()
		mustQuery(t, c, "CREATE TABLE c (id int, name text, amount numeric)")
		tag, err := c.CopyFrom(ctx, strings.NewReader(data.String()), "COPY c FROM STDIN")
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		tag2, err := c.CopyTo(ctx, &out, "COPY (SELECT * FROM c ORDER BY id) TO STDOUT")
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.CopyFrom(ctx, strings.NewReader("not\ta\tnumber\n"), "COPY c FROM STDIN")
		return out.String(), tag.String() + "|" + tag2.String() + "|" + sqlState(err)
	}
	directData, directTags := run(shared.url("", "", shared.newDB(t)))
	proxiedData, proxiedTags := run(p.url("", "", shared.newDB(t)))
	if directTags != "COPY 100000|COPY 100000|22P02" || proxiedTags != directTags {
		t.Fatalf("tags: direct %s, through pgrules %s", directTags, proxiedTags)
	}
	if proxiedData != directData || len(directData) < 4<<20 {
		t.Fatalf("COPY TO output differs (%d vs %d bytes)", len(directData), len(proxiedData))
	}
}

// TestTransparencyNotify: a listener through the proxy hears notifications
// from a direct session and from a proxied one, with channel, payload and
// the sender's PID intact.
func TestTransparencyNotify(t *testing.T) {
	db := shared.newDB(t)
	p := startProxy(t, shared)
	heard := make(chan *pgconn.Notification, 4)
	cfg, err := pgconn.ParseConfig(p.url("", "", db))
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) { heard <- n }
	listener, err := pgconn.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(context.Background())
	mustQuery(t, listener, "LISTEN news")
	for _, url := range []string{shared.url("", "", db), p.url("", "", db)} {
		sender := connect(t, url)
		payload := fmt.Sprint("hello from ", sender.PID())
		mustQuery(t, sender, "NOTIFY news, '"+payload+"'")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := listener.WaitForNotification(ctx)
		cancel()
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		n := <-heard
		if n.Channel != "news" || n.Payload != payload || n.PID != sender.PID() {
			t.Fatalf("notification %+v, want payload %q from %d", n, payload, sender.PID())
		}
	}
}
