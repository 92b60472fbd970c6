package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"
)

// Differential transparency: with no rule in play a client must not be able
// to tell pgrules from PostgreSQL. Every test here does the same work twice,
// once connected directly and once through the proxy, each time in a fresh
// database of the same server, records everything the client sees, and
// requires the two records to be identical. The records are also checked
// against what the corpus says it must produce (SQLSTATEs, command tags,
// rows), so that a runner that silently does nothing cannot pass.
//
// The only things normalised away are those that differ between any two
// sessions or databases, each in one documented place:
//   - object identifiers of things the corpus creates (tpTranscript.oid),
//   - the backend PID in psql's notification lines (tpPsqlNotifyPID) and in
//     NotificationResponse (rendered as "this session"/"another session").

const tpCorpusDir = "testdata/transparency"

// tpRequiredScripts are the scripts the issue asks for; losing one must
// fail the suite rather than shrink it.
var tpRequiredScripts = []string{
	"copy.sql", "ddl.sql", "dml.sql", "errors.sql", "multi.sql",
	"notify.sql", "prepared.sql", "transactions.sql", "types.sql",
}

// ---------------------------------------------------------------------------
// The corpus

// A corpus script is a psql script with a few conventions, because the
// same file also runs statement by statement and paragraph by paragraph:
//   - "-- expect-sqlstate: CODE ..." lists SQLSTATEs of errors or notices
//     the script must produce; "-- expect-tag: TAG" a command tag psql
//     prints (commands that return rows show rows instead of their tag);
//   - a blank line ends a paragraph, which batch and pipeline modes send up
//     to one Sync; a statement that fails inside a transaction block ends
//     its paragraph, so that the block is left as psql leaves it;
//   - psql meta-commands stand on lines of their own, except \; and the
//     \g family; COPY FROM STDIN data follows its command up to \.
type tpScript struct {
	name      string // file name, e.g. "types.sql"
	path      string // relative to the package directory, as psql prints it
	stmts     []tpStmt
	wantCodes []string // "-- expect-sqlstate:" lines
	wantTags  []string // "-- expect-tag:" lines
}

type tpStmt struct {
	line  int    // where the statement starts in its file
	group int    // paragraph: statements not separated by an empty line
	sql   string // without the final semicolon
	// multi: joined with psql's \; so psql sends them as one simple Query.
	multi bool
	// copyIn is the inline data of COPY ... FROM STDIN, nil for any other
	// statement.
	copyIn  []byte
	copyOut bool // COPY ... TO STDOUT
}

var (
	tpExpectCodesRE = regexp.MustCompile(`(?m)^-- expect-sqlstate:(.*)$`)
	tpExpectTagRE   = regexp.MustCompile(`(?m)^-- expect-tag: *(.+?) *$`)
	tpCopyInRE      = regexp.MustCompile(`(?is)^copy\b.*\bfrom\s+stdin\b`)
	tpCopyOutRE     = regexp.MustCompile(`(?is)^copy\b.*\bto\s+stdout\b`)
	tpDollarTagRE   = regexp.MustCompile(`^\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$`)
)

func tpLoadCorpus(t *testing.T) []tpScript {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(tpCorpusDir, "*.sql"))
	if err != nil {
		t.Fatal(err)
	}
	var out []tpScript
	for _, p := range paths {
		src, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		stmts, err := tpSplitPsql(string(src))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		s := tpScript{name: filepath.Base(p), path: p, stmts: stmts}
		for _, m := range tpExpectCodesRE.FindAllStringSubmatch(string(src), -1) {
			s.wantCodes = append(s.wantCodes, strings.Fields(m[1])...)
		}
		for _, m := range tpExpectTagRE.FindAllStringSubmatch(string(src), -1) {
			s.wantTags = append(s.wantTags, m[1])
		}
		if len(stmts) < 5 || len(s.wantCodes)+len(s.wantTags) == 0 {
			t.Fatalf("%s: %d statements, %d expectations: a corpus script needs at least 5 and 1", p, len(stmts), len(s.wantCodes)+len(s.wantTags))
		}
		out = append(out, s)
	}
	for _, name := range tpRequiredScripts {
		if !slices.ContainsFunc(out, func(s tpScript) bool { return s.name == name }) {
			t.Fatalf("corpus script %s is missing from %s", name, tpCorpusDir)
		}
	}
	return out
}

func tpIdentByte(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// tpSplitPsql cuts a psql script into the statements psql would send,
// for the drivers that run the corpus statement by statement. It knows
// quotes, E'...' strings, quoted identifiers, dollar quotes, nested comments,
// psql's \; (several statements in one Query), \g-family terminators,
// COPY ... FROM STDIN data up to \. and meta-commands on lines of their own
// (which only psql runs). Anything else psql-specific is refused, so that
// the drivers never run something different from what psql ran.
func tpSplitPsql(src string) ([]tpStmt, error) {
	var (
		out       []tpStmt
		buf       strings.Builder
		line      = 1
		first     int
		group     int
		inGroup   bool
		multi     bool
		blankLine = true
	)
	blank := func() bool { return strings.TrimSpace(buf.String()) == "" }
	i := 0
	emit := func() error {
		sql := strings.TrimSpace(buf.String())
		buf.Reset()
		m := multi
		multi = false
		if sql == "" {
			return nil // psql sends nothing for an empty statement
		}
		st := tpStmt{line: first, group: group, sql: sql, multi: m, copyOut: tpCopyOutRE.MatchString(sql)}
		inGroup = true
		if tpCopyInRE.MatchString(sql) {
			// psql reads the data from the lines after the command.
			nl := strings.IndexByte(src[i:], '\n')
			if nl < 0 || strings.TrimSpace(src[i:i+nl]) != "" {
				return fmt.Errorf("line %d: COPY FROM STDIN must end its line", line)
			}
			i += nl + 1
			line++
			data := []byte{}
			for {
				if i >= len(src) {
					return fmt.Errorf("line %d: COPY data without \\.", st.line)
				}
				end := strings.IndexByte(src[i:], '\n')
				if end < 0 {
					end = len(src) - i
				}
				l := src[i : i+end]
				i += end
				if i < len(src) {
					i++ // the newline
				}
				line++
				if l == `\.` {
					break
				}
				data = append(data, l...)
				data = append(data, '\n')
			}
			st.copyIn = data
			blankLine = true
		}
		out = append(out, st)
		return nil
	}
	for i < len(src) {
		c := src[i]
		if c != '\n' && c != ' ' && c != '\t' && c != '\r' {
			blankLine = false
			if blank() && c != ';' && c != '\\' && !strings.HasPrefix(src[i:], "--") && !strings.HasPrefix(src[i:], "/*") {
				first = line
			}
		}
		switch {
		case c == '\n':
			if blankLine && blank() && inGroup {
				group++
				inGroup = false
			}
			buf.WriteByte(c)
			line++
			blankLine = true
			i++
		case strings.HasPrefix(src[i:], "--"):
			end := strings.IndexByte(src[i:], '\n')
			if end < 0 {
				end = len(src) - i
			}
			i += end
		case strings.HasPrefix(src[i:], "/*"):
			depth, j := 1, i+2
			for depth > 0 {
				switch {
				case j >= len(src):
					return nil, fmt.Errorf("line %d: unterminated comment", line)
				case strings.HasPrefix(src[j:], "/*"):
					depth++
					j += 2
				case strings.HasPrefix(src[j:], "*/"):
					depth--
					j += 2
				default:
					if src[j] == '\n' {
						line++
					}
					j++
				}
			}
			buf.WriteByte(' ')
			i = j
		case c == '\'' || c == '"':
			escapes := c == '\'' && i > 0 && (src[i-1] == 'E' || src[i-1] == 'e') && (i < 2 || !tpIdentByte(src[i-2]))
			j := i + 1
			for {
				if j >= len(src) {
					return nil, fmt.Errorf("line %d: unterminated %c", line, c)
				}
				if escapes && src[j] == '\\' {
					j += 2
					continue
				}
				if src[j] == c {
					if j+1 < len(src) && src[j+1] == c {
						j += 2
						continue
					}
					j++
					break
				}
				j++
			}
			line += strings.Count(src[i:j], "\n")
			buf.WriteString(src[i:j])
			i = j
		case c == '$' && (i == 0 || !tpIdentByte(src[i-1])) && tpDollarTagRE.MatchString(src[i:]):
			tag := tpDollarTagRE.FindString(src[i:])
			end := strings.Index(src[i+len(tag):], tag)
			if end < 0 {
				return nil, fmt.Errorf("line %d: unterminated %s quote", line, tag)
			}
			j := i + len(tag) + end + len(tag)
			line += strings.Count(src[i:j], "\n")
			buf.WriteString(src[i:j])
			i = j
		case c == '\\' && strings.HasPrefix(src[i:], `\;`):
			buf.WriteString(";")
			multi = true
			i += 2
		case c == '\\':
			end := strings.IndexByte(src[i:], '\n')
			if end < 0 {
				end = len(src) - i
			}
			cmd := strings.Fields(src[i : i+end])[0]
			i += end
			switch {
			case blank():
				// A meta-command of psql's own.
			case cmd == `\gdesc`:
				buf.Reset() // psql only describes the statement
				multi = false
			case strings.HasPrefix(cmd, `\g`) && cmd != `\gexec`:
				if err := emit(); err != nil {
					return nil, err
				}
			default:
				return nil, fmt.Errorf("line %d: meta-command %s inside a statement", line, cmd)
			}
		case c == ';':
			i++
			if err := emit(); err != nil {
				return nil, err
			}
		default:
			buf.WriteByte(c)
			i++
		}
	}
	if !blank() {
		return nil, fmt.Errorf("line %d: statement without a terminating semicolon", first)
	}
	return out, nil
}

func TestTransparencyCorpusSplitter(t *testing.T) {
	src := "-- c\nSELECT 'a;b', E'x\\'; y', \"q;\"\"\" FROM t; /* ; /* ; */ */\n" +
		"SELECT $f$ ; $$ $f$, $1 \\; SELECT 2;\n\n" +
		"COPY t FROM STDIN;\n1\tx\n\\.\n\\echo hi\nSELECT 3 \\gdesc\nSELECT 4 \\gset\n"
	got, err := tpSplitPsql(src)
	if err != nil {
		t.Fatal(err)
	}
	want := []tpStmt{
		{line: 2, group: 0, sql: "SELECT 'a;b', E'x\\'; y', \"q;\"\"\" FROM t"},
		{line: 3, group: 0, sql: "SELECT $f$ ; $$ $f$, $1 ; SELECT 2", multi: true},
		{line: 5, group: 1, sql: "COPY t FROM STDIN", copyIn: []byte("1\tx\n")},
		{line: 10, group: 1, sql: "SELECT 4"},
	}
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Fatalf("split\n got %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{"SELECT 1", "SELECT 'x;", "SELECT 1 \\x\n;", "COPY t FROM STDIN;\n1\n"} {
		if _, err := tpSplitPsql(bad); err == nil {
			t.Errorf("splitPsqlScript(%q) accepted it", bad)
		}
	}
}

// ---------------------------------------------------------------------------
// psql: simple protocol, byte-identical output

// tpPsqlNotifyPID: the PID of the notifying backend differs between the two
// runs (it is another backend), so it is the one thing psql prints that is
// normalised.
var tpPsqlNotifyPID = regexp.MustCompile(`(received from server process with PID )\d+`)

var tpPsqlStateRE = regexp.MustCompile(`(?m)(?:ERROR|WARNING|NOTICE|INFO|FATAL):  ([0-9A-Z]{5}): `)

func TestTransparencyPsql(t *testing.T) {
	p := startProxy(t, shared)
	for _, s := range tpLoadCorpus(t) {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			direct := tpRunPsql(t, shared.url("", "", shared.newDB(t)), s.path)
			proxied := tpRunPsql(t, p.url("", "", shared.newDB(t)), s.path)
			if direct != proxied {
				t.Errorf("psql output differs (- direct, + through pgrules):\n%s", tpLineDiff(direct, proxied))
			}
			codes := map[string]bool{}
			for _, m := range tpPsqlStateRE.FindAllStringSubmatch(direct, -1) {
				codes[m[1]] = true
			}
			for _, c := range s.wantCodes {
				if !codes[c] {
					t.Errorf("psql output has no %s error or notice; it has %v", c, tpSortedKeys(codes))
				}
			}
			for _, tag := range s.wantTags {
				if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(tag) + `$`).MatchString(direct) {
					t.Errorf("psql output has no command tag %q", tag)
				}
			}
			for _, bad := range []string{"FATAL:", "connection to server", "server closed the connection"} {
				if strings.Contains(direct, bad) {
					t.Errorf("psql output says %q: the session broke", bad)
				}
			}
		})
	}
}

func tpRunPsql(t *testing.T, url, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// --echo-all interleaves the script with its results; VERBOSITY verbose
	// prints SQLSTATEs and every error field psql knows; SHOW_CONTEXT always
	// adds CONTEXT to notices too.
	cmd := exec.CommandContext(ctx, "psql", "-X", "--echo-all", "--no-password",
		"-v", "ON_ERROR_STOP=0", "-v", "VERBOSITY=verbose", "-v", "SHOW_CONTEXT=always",
		"-P", "pager=off", "-d", url, "-f", path)
	cmd.Env = tpPsqlEnvironment()
	// One buffer for stdout and stderr: exec then gives psql a single pipe,
	// so errors stay where they happened among the results.
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("psql %s: %v\n%s", path, err, out.String())
	}
	if out.Len() == 0 {
		t.Fatalf("psql %s printed nothing", path)
	}
	return tpPsqlNotifyPID.ReplaceAllString(out.String(), "${1}<pid>")
}

// tpPsqlEnvironment is the caller's environment without what would change
// psql's output from one machine to another: libpq settings, locale
// (translated messages), terminal width.
func tpPsqlEnvironment() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || strings.HasPrefix(k, "PSQL") || strings.HasPrefix(k, "LC_") ||
			k == "LANG" || k == "LANGUAGE" || k == "COLUMNS" || k == "PAGER" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "PGCLIENTENCODING=UTF8", "PGCONNECT_TIMEOUT=10")
}

// ---------------------------------------------------------------------------
// Transcripts: everything a driver sees, rendered as text

// tpParams are the run-time parameters the server reports (ParameterStatus);
// a change is part of what a client sees.
var tpParams = []string{
	"application_name", "client_encoding", "DateStyle", "default_transaction_read_only",
	"in_hot_standby", "integer_datetimes", "IntervalStyle", "is_superuser", "server_encoding",
	"server_version", "session_authorization", "standard_conforming_strings", "TimeZone",
}

type tpTranscript struct {
	b      strings.Builder
	oids   map[uint32]string
	codes  map[string]bool // SQLSTATEs of errors and notices
	tags   map[string]bool
	rows   int
	params map[string]string
	events *tpEvents
}

func tpNewTranscript() *tpTranscript {
	return &tpTranscript{
		oids: map[uint32]string{}, codes: map[string]bool{}, tags: map[string]bool{},
		params: map[string]string{}, events: &tpEvents{},
	}
}

func (w *tpTranscript) printf(format string, args ...any) { fmt.Fprintf(&w.b, format, args...) }

func (w *tpTranscript) String() string { return w.b.String() }

// oid renders an object identifier. Objects the corpus creates get new OIDs
// in every database, so those (>= FirstNormalObjectId) are renamed by order
// of first appearance; built-in ones are compared as they are.
func (w *tpTranscript) oid(o uint32) string {
	if o < 16384 {
		return strconv.FormatUint(uint64(o), 10)
	}
	name, ok := w.oids[o]
	if !ok {
		name = fmt.Sprintf("user#%d", len(w.oids)+1)
		w.oids[o] = name
	}
	return name
}

func (w *tpTranscript) header(file string, st tpStmt) {
	w.printf("\n== %s:%d %s\n", file, st.line, tpShort(st.sql, 100))
}

func (w *tpTranscript) fields(fds []pgconn.FieldDescription) {
	for _, f := range fds {
		w.printf("field %q table=%s attnum=%d type=%s size=%d typmod=%d format=%d\n",
			f.Name, w.oid(f.TableOID), f.TableAttributeNumber, w.oid(f.DataTypeOID), f.DataTypeSize, f.TypeModifier, f.Format)
	}
}

func (w *tpTranscript) row(values [][]byte, fds []pgconn.FieldDescription) {
	w.rows++
	w.b.WriteString("row")
	for i, v := range values {
		var format int16
		if i < len(fds) {
			format = fds[i].Format
		}
		w.b.WriteString(" " + tpValue(v, format))
	}
	w.b.WriteString("\n")
}

func (w *tpTranscript) tag(tag pgconn.CommandTag) {
	w.tags[tag.String()] = true
	w.printf("tag %q\n", tag.String())
}

func (w *tpTranscript) err(err error) {
	if err == nil {
		return
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		w.codes[pe.Code] = true
		w.printf("error %s\n", tpPgError(pe))
		if msg := err.Error(); msg != pe.Error() {
			// A driver's wrapping is part of what the application sees.
			w.printf("  as %q\n", msg)
		}
		return
	}
	w.printf("client error %q\n", err.Error())
}

func (w *tpTranscript) result(r *pgconn.Result) {
	w.fields(r.FieldDescriptions)
	for _, row := range r.Rows {
		w.row(row, r.FieldDescriptions)
	}
	w.tag(r.CommandTag)
	w.err(r.Err)
	w.flushEvents()
}

func (w *tpTranscript) description(sd *pgconn.StatementDescription) {
	var params []string
	for _, o := range sd.ParamOIDs {
		params = append(params, w.oid(o))
	}
	w.printf("statement %q params=%v\n", sd.Name, params)
	w.fields(sd.Fields)
}

func (w *tpTranscript) copyData(b []byte) {
	w.printf("copy data %s\n", tpValue(b, 0))
}

func (w *tpTranscript) flushEvents() {
	for _, e := range w.events.take() {
		if e.code != "" {
			w.codes[e.code] = true
		}
		w.printf("%s\n", e.text)
	}
}

// state records what the client knows about its session after a request:
// pending notices and notifications, changed parameters and the
// transaction status of the last ReadyForQuery.
func (w *tpTranscript) state(c *pgconn.PgConn) {
	w.flushEvents()
	for _, k := range tpParams {
		if v := c.ParameterStatus(k); w.params[k] != v {
			w.params[k] = v
			w.printf("parameter %s=%q\n", k, v)
		}
	}
	w.printf("tx %c\n", c.TxStatus())
}

// tpValue renders a column value: text as a Go string, binary in hex, NULL
// apart from empty; long values by prefix, length and hash.
func tpValue(v []byte, format int16) string {
	if v == nil {
		return "NULL"
	}
	var s string
	if format == 1 {
		s = `\x` + hex.EncodeToString(v)
	} else {
		s = strconv.Quote(string(v))
	}
	if len(s) > 240 {
		sum := sha256.Sum256(v)
		s = fmt.Sprintf("%s...[%d bytes, sha256 %x]", s[:100], len(v), sum[:12])
	}
	return s
}

func tpShort(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

func tpPgError(e *pgconn.PgError) string {
	return fmt.Sprintf("%s/%s %s %q detail=%q hint=%q position=%d internal=%d %q where=%q schema=%q table=%q column=%q datatype=%q constraint=%q at %s:%d %s",
		e.Severity, e.SeverityUnlocalized, e.Code, e.Message, e.Detail, e.Hint, e.Position,
		e.InternalPosition, e.InternalQuery, e.Where, e.SchemaName, e.TableName, e.ColumnName,
		e.DataTypeName, e.ConstraintName, e.File, e.Line, e.Routine)
}

// tpEvents collects what arrives between results: notices and
// notifications, in order.
type tpEvents struct {
	mu   sync.Mutex
	list []tpEvent
}

type tpEvent struct{ text, code string }

func (s *tpEvents) add(e tpEvent) {
	s.mu.Lock()
	s.list = append(s.list, e)
	s.mu.Unlock()
}

func (s *tpEvents) take() []tpEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.list
	s.list = nil
	return l
}

func (s *tpEvents) hook(cfg *pgconn.Config) {
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		s.add(tpEvent{text: "notice " + tpPgError((*pgconn.PgError)(n)), code: n.Code})
	}
	cfg.OnNotification = func(c *pgconn.PgConn, n *pgconn.Notification) {
		// Which backend sent it differs between runs; whether it was this
		// session's own does not.
		from := "another session"
		if n.PID == c.PID() {
			from = "this session"
		}
		s.add(tpEvent{text: fmt.Sprintf("notification channel=%q payload=%s from %s", n.Channel, tpValue([]byte(n.Payload), 0), from)})
	}
}

func tpConnect(t *testing.T, url string, w *tpTranscript) *pgconn.PgConn {
	t.Helper()
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	w.events.hook(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	w.printf("connected secret key of %d bytes\n", len(c.SecretKey()))
	w.state(c)
	return c
}

func tpConnectPgx(t *testing.T, url string, mode pgx.QueryExecMode, w *tpTranscript) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	w.events.hook(&cfg.Config)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	w.printf("connected (pgx, %v)\n", mode)
	w.state(c.PgConn())
	return c
}

// tpCompare fails the test if the direct and proxied transcripts
// differ, or if there is hardly anything to compare.
func tpCompare(t *testing.T, direct, proxied *tpTranscript) {
	t.Helper()
	d, p := direct.String(), proxied.String()
	// To see what a comparison compares when it passes:
	// PGRULES_TRANSPARENCY_DUMP=dir writes both transcripts there.
	if dir := os.Getenv("PGRULES_TRANSPARENCY_DUMP"); dir != "" {
		os.WriteFile(filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".direct"), []byte(d), 0o644)
		os.WriteFile(filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".proxied"), []byte(p), 0o644)
	}
	if d != p {
		t.Errorf("transcripts differ (- direct, + through pgrules):\n%s", tpLineDiff(d, p))
	}
	if strings.Count(d, "\n") < 10 {
		t.Errorf("transcript is suspiciously short:\n%s", d)
	}
}

func tpCheckExpectations(t *testing.T, s tpScript, w *tpTranscript) {
	t.Helper()
	for _, c := range s.wantCodes {
		if !w.codes[c] {
			t.Errorf("no %s error or notice; saw %v", c, tpSortedKeys(w.codes))
		}
	}
	for _, tag := range s.wantTags {
		if !w.tags[tag] {
			t.Errorf("no command tag %q; saw %v", tag, tpSortedKeys(w.tags))
		}
	}
	if w.rows == 0 {
		t.Errorf("no rows at all")
	}
}

func tpSortedKeys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// ---------------------------------------------------------------------------
// The corpus through pgconn and pgx: extended protocol, batches, pipelines

type tpCorpusMode struct {
	name string
	run  func(ctx context.Context, t *testing.T, url string, s tpScript, w *tpTranscript)
}

var tpCorpusModes = []tpCorpusMode{
	{"ExecParams-text", tpRunExecParams},
	{"Prepare-ExecPrepared-binary", tpRunPreparedBinary},
	{"pgx-Query", tpRunPgxQuery},
	{"pgx-Batch", tpRunPgxBatch},
	{"Pipeline", tpRunPipeline},
}

func TestTransparencyCorpus(t *testing.T) {
	p := startProxy(t, shared)
	for _, s := range tpLoadCorpus(t) {
		for _, m := range tpCorpusModes {
			t.Run(s.name+"/"+m.name, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				direct, proxied := tpNewTranscript(), tpNewTranscript()
				m.run(ctx, t, shared.url("", "", shared.newDB(t)), s, direct)
				m.run(ctx, t, p.url("", "", shared.newDB(t)), s, proxied)
				tpCompare(t, direct, proxied)
				tpCheckExpectations(t, s, direct)
			})
		}
	}
}

// tpRunSpecial runs what no extended-protocol call can carry: COPY with its
// data, and several statements in one simple Query. It reports whether st
// was one of those.
func tpRunSpecial(ctx context.Context, c *pgconn.PgConn, st tpStmt, w *tpTranscript) bool {
	switch {
	case st.copyIn != nil:
		tag, err := c.CopyFrom(ctx, bytes.NewReader(st.copyIn), st.sql)
		w.tag(tag)
		w.err(err)
	case st.copyOut:
		var out bytes.Buffer
		tag, err := c.CopyTo(ctx, &out, st.sql)
		w.copyData(out.Bytes())
		w.tag(tag)
		w.err(err)
	case st.multi:
		results, err := c.Exec(ctx, st.sql).ReadAll()
		for _, r := range results {
			w.result(r)
		}
		w.err(err)
	default:
		return false
	}
	w.state(c)
	return true
}

// tpRunExecParams: each statement as one Parse/Bind/Describe/Execute/Sync,
// results in text.
func tpRunExecParams(ctx context.Context, t *testing.T, url string, s tpScript, w *tpTranscript) {
	c := tpConnect(t, url, w)
	for _, st := range s.stmts {
		w.header(s.name, st)
		if tpRunSpecial(ctx, c, st, w) {
			continue
		}
		w.result(c.ExecParams(ctx, st.sql, nil, nil, nil, nil).Read())
		w.state(c)
	}
}

// tpBinarySafe: binary results for every built-in type except those whose
// binary form carries an OID that differs between two databases (records
// name their column types, reg* types and oid are OIDs).
func tpBinarySafe(oid uint32) bool {
	if oid >= 16384 {
		return false
	}
	switch oid {
	case 26, 1028, // oid
		2249, 2287, // record
		24, 2202, 2203, 2204, 2205, 2206, 3734, 3769, 4089, 4096, 4191, // reg*
		1008, 2207, 2208, 2209, 2210, 2211, 3735, 3770, 4090, 4097, 4192: // reg*[]
		return false
	}
	return true
}

// tpRunPreparedBinary: each statement prepared as the unnamed statement
// (Parse/Describe/Sync), then bound with binary result formats wherever the
// description allows and executed (Bind/Describe/Execute/Sync).
func tpRunPreparedBinary(ctx context.Context, t *testing.T, url string, s tpScript, w *tpTranscript) {
	c := tpConnect(t, url, w)
	for _, st := range s.stmts {
		w.header(s.name, st)
		if tpRunSpecial(ctx, c, st, w) {
			continue
		}
		sd, err := c.Prepare(ctx, "", st.sql, nil)
		if err != nil {
			w.err(err)
			w.state(c)
			continue
		}
		w.description(sd)
		formats := make([]int16, len(sd.Fields))
		for i, f := range sd.Fields {
			if tpBinarySafe(f.DataTypeOID) {
				formats[i] = 1
			}
		}
		w.result(c.ExecPrepared(ctx, "", nil, nil, formats).Read())
		w.state(c)
	}
}

// tpRunPgxQuery: pgx's default mode, a named prepared statement per distinct
// text (cached), binary results for the types pgx knows.
func tpRunPgxQuery(ctx context.Context, t *testing.T, url string, s tpScript, w *tpTranscript) {
	c := tpConnectPgx(t, url, pgx.QueryExecModeCacheStatement, w)
	for _, st := range s.stmts {
		w.header(s.name, st)
		if tpRunSpecial(ctx, c.PgConn(), st, w) {
			continue
		}
		w.pgxRows(c.Query(ctx, st.sql))
		w.state(c.PgConn())
	}
}

func (w *tpTranscript) pgxRows(rows pgx.Rows, err error) {
	if err != nil {
		w.err(err)
		return
	}
	fds := rows.FieldDescriptions()
	w.fields(fds)
	for rows.Next() {
		w.row(rows.RawValues(), fds)
	}
	rows.Close()
	w.tag(rows.CommandTag())
	w.err(rows.Err())
	w.flushEvents()
}

// tpRuns cuts a script into what batch and pipeline modes send together:
// the statements of one paragraph, except that COPY and multi-statement
// lines run on their own.
func tpRuns(stmts []tpStmt) [][]tpStmt {
	var runs [][]tpStmt
	for _, st := range stmts {
		n := len(runs)
		if n > 0 && !tpIsSpecial(st) {
			last := runs[n-1]
			prev := last[len(last)-1]
			if prev.group == st.group && !tpIsSpecial(prev) {
				runs[n-1] = append(last, st)
				continue
			}
		}
		runs = append(runs, []tpStmt{st})
	}
	return runs
}

func tpIsSpecial(st tpStmt) bool { return st.copyIn != nil || st.copyOut || st.multi }

// tpRunPgxBatch: each paragraph as one pgx.Batch in exec mode: all statements
// pipelined (Parse/Bind/Describe/Execute each) up to a single Sync, so an
// error skips the rest of the paragraph.
func tpRunPgxBatch(ctx context.Context, t *testing.T, url string, s tpScript, w *tpTranscript) {
	c := tpConnectPgx(t, url, pgx.QueryExecModeExec, w)
	for _, run := range tpRuns(s.stmts) {
		if tpIsSpecial(run[0]) {
			w.header(s.name, run[0])
			tpRunSpecial(ctx, c.PgConn(), run[0], w)
			continue
		}
		b := &pgx.Batch{}
		for _, st := range run {
			b.Queue(st.sql)
		}
		br := c.SendBatch(ctx, b)
		for _, st := range run {
			w.header(s.name, st)
			w.pgxRows(br.Query())
		}
		w.printf("batch closed\n")
		w.err(br.Close())
		w.state(c.PgConn())
	}
}

// tpRunPipeline: each paragraph through pgconn's pipeline API up to one Sync;
// every other statement goes as a named statement (SendPrepare,
// SendQueryPrepared, SendDeallocate) instead of SendQueryParams.
func tpRunPipeline(ctx context.Context, t *testing.T, url string, s tpScript, w *tpTranscript) {
	c := tpConnect(t, url, w)
	for _, run := range tpRuns(s.stmts) {
		if tpIsSpecial(run[0]) {
			w.header(s.name, run[0])
			tpRunSpecial(ctx, c, run[0], w)
			continue
		}
		pl := c.StartPipeline(ctx)
		for k, st := range run {
			w.header(s.name, st)
			if k%2 == 1 {
				name := fmt.Sprintf("tp_%d", st.line)
				pl.SendPrepare(name, st.sql, nil)
				pl.SendQueryPrepared(name, nil, nil, nil)
				pl.SendDeallocate(name)
			} else {
				pl.SendQueryParams(st.sql, nil, nil, nil, nil)
			}
		}
		if err := pl.Sync(); err != nil {
			t.Fatalf("pipeline sync: %v", err)
		}
		tpReadPipeline(t, pl, w)
		w.printf("pipeline closed\n")
		w.err(pl.Close())
		w.state(c)
	}
}

// tpReadPipeline records a pipeline's results up to its next Sync.
func tpReadPipeline(t *testing.T, pl *pgconn.Pipeline, w *tpTranscript) {
	t.Helper()
	for range 10000 {
		res, err := pl.GetResults()
		if err != nil {
			w.err(err)
			w.flushEvents()
			continue
		}
		switch r := res.(type) {
		case *pgconn.StatementDescription:
			w.description(r)
		case *pgconn.ResultReader:
			w.result(r.Read())
		case *pgconn.CloseComplete:
			w.printf("close complete\n")
		case *pgconn.PipelineSync:
			w.printf("sync\n")
			return
		case nil:
			t.Fatal("pipeline ran out of results before its Sync")
		default:
			t.Fatalf("unexpected pipeline result %T", r)
		}
	}
	t.Fatal("pipeline never reached its Sync")
}

// ---------------------------------------------------------------------------
// Parameters, named statements, portals, pipelines: a table of steps

type tpParamStep struct {
	name string
	run  func(ctx context.Context, e *tpParamEnv)
}

type tpParamEnv struct {
	t   *testing.T
	w   *tpTranscript
	c   *pgconn.PgConn
	url string
}

var tpTypes = pgtype.NewMap()

// tpEncode encodes a Go value the way a driver would send it for a parameter of
// type oid in format (0 text, 1 binary).
func tpEncode(t *testing.T, oid uint32, format int16, v any) []byte {
	t.Helper()
	b, err := tpTypes.Encode(oid, format, v, nil)
	if err != nil {
		t.Fatalf("encode %v as %d/%d: %v", v, oid, format, err)
	}
	return b
}

func (e *tpParamEnv) execParams(ctx context.Context, label, sql string, values [][]byte, oids []uint32, pf, rf []int16) {
	e.w.printf("\n== %s: %s\n", label, tpShort(sql, 100))
	e.w.result(e.c.ExecParams(ctx, sql, values, oids, pf, rf).Read())
	e.w.state(e.c)
}

var tpParamSteps = []tpParamStep{
	{"setup", func(ctx context.Context, e *tpParamEnv) {
		e.execParams(ctx, "setup", `SET TimeZone = 'UTC'`, nil, nil, nil, nil)
		e.execParams(ctx, "setup", `CREATE TABLE p (id int PRIMARY KEY, name text, amount numeric(20,4), at timestamptz,
			tags text[], data bytea, flag bool, u uuid, f float8, big int8, j jsonb)`, nil, nil, nil, nil)
	}},
	{"text parameters, types inferred", func(ctx context.Context, e *tpParamEnv) {
		e.execParams(ctx, "insert text", `INSERT INTO p VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *`,
			[][]byte{[]byte("1"), []byte("ünï ✓"), []byte("12345678.9012"), []byte("2026-11-22 10:00:00.123456+02"),
				[]byte(`{a,"b c",NULL}`), []byte(`\x00ff10`), []byte("t"), []byte("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
				[]byte("NaN"), []byte("-9223372036854775808"), []byte(`{"k": [1, null]}`)},
			nil, nil, nil)
		e.execParams(ctx, "insert NULLs", `INSERT INTO p VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *`,
			[][]byte{[]byte("2"), nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}, nil, nil, nil)
	}},
	{"binary parameters, explicit types, binary results", func(ctx context.Context, e *tpParamEnv) {
		t := e.t
		oids := []uint32{pgtype.Int4OID, pgtype.TextOID, pgtype.NumericOID, pgtype.TimestamptzOID, pgtype.TextArrayOID,
			pgtype.ByteaOID, pgtype.BoolOID, pgtype.UUIDOID, pgtype.Float8OID, pgtype.Int8OID, pgtype.JSONBOID}
		var amount pgtype.Numeric
		if err := amount.Scan("-0.0001"); err != nil {
			t.Fatal(err)
		}
		vals := []any{int32(3), "binary ✓", amount, time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC), []string{"x", "y"},
			[]byte{0, 1, 2, 255}, false, [16]byte{15: 0xff}, -1.5e300, int64(1) << 62, map[string]any{"b": 1}}
		var values [][]byte
		for i, v := range vals {
			values = append(values, tpEncode(t, oids[i], 1, v))
		}
		e.execParams(ctx, "insert binary", `INSERT INTO p VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *`,
			values, oids, []int16{1}, []int16{1})
	}},
	{"mixed formats per column", func(ctx context.Context, e *tpParamEnv) {
		t := e.t
		e.execParams(ctx, "mixed", `SELECT id, name, amount, at, tags, data, $1::int4 AS p1, $2::text AS p2, $3::float8 AS p3 FROM p WHERE id <= $4 ORDER BY id`,
			[][]byte{tpEncode(t, pgtype.Int4OID, 1, int32(7)), []byte("seven"), tpEncode(t, pgtype.Float8OID, 1, 7.25), []byte("3")},
			[]uint32{pgtype.Int4OID, 0, pgtype.Float8OID, 0}, []int16{1, 0, 1, 0}, []int16{0, 1, 0, 1, 0, 1, 1, 0, 1})
		e.execParams(ctx, "untyped", `SELECT $1 AS a, $2::int + 1 AS b, $3 IS NULL AS c, coalesce($4, 'dflt') AS d`,
			[][]byte{[]byte("x"), []byte("41"), nil, nil}, nil, nil, nil)
	}},
	{"parameter errors", func(ctx context.Context, e *tpParamEnv) {
		e.execParams(ctx, "too few", `SELECT $1::int, $2::int`, [][]byte{[]byte("1")}, nil, nil, nil)
		e.execParams(ctx, "short binary int4", `SELECT $1::int4`, [][]byte{{0, 0, 1}}, []uint32{pgtype.Int4OID}, []int16{1}, nil)
		e.execParams(ctx, "long binary int4", `SELECT $1::int4`, [][]byte{{0, 0, 0, 1, 2}}, []uint32{pgtype.Int4OID}, []int16{1}, nil)
		e.execParams(ctx, "bad text int", `SELECT $1::int4`, [][]byte{[]byte("4x")}, nil, nil, nil)
		e.execParams(ctx, "two commands", `SELECT 1; SELECT 2`, nil, nil, nil, nil)
		e.execParams(ctx, "unknown parameter type", `SELECT $1 = $2`, [][]byte{[]byte("a"), []byte("a")}, nil, nil, nil)
		e.execParams(ctx, "binary result of a type without send", `SELECT acldefault('r', 10)`, nil, nil, nil, []int16{1})
		e.execParams(ctx, "bad format code", `SELECT 1`, nil, nil, nil, []int16{2})
		e.execParams(ctx, "after errors", `SELECT count(*) FROM p`, nil, nil, nil, nil)
	}},
	{"named prepared statements", func(ctx context.Context, e *tpParamEnv) {
		w, c := e.w, e.c
		w.printf("\n== prepare ins\n")
		sd, err := c.Prepare(ctx, "ins", `INSERT INTO p (id, name, amount) VALUES ($1, $2, $3) RETURNING id, name, amount, amount * 2 AS twice`, nil)
		if err == nil {
			w.description(sd)
		}
		w.err(err)
		w.state(c)
		for i, f := range [][]int16{nil, {1}, {0, 1, 0}} {
			w.printf("\n== execute ins formats %v\n", f)
			values := [][]byte{[]byte(strconv.Itoa(10 + i)), []byte(fmt.Sprint("prepared ", i)), []byte("1.5")}
			pf := []int16(nil)
			if i == 1 {
				values[0] = tpEncode(e.t, pgtype.Int4OID, 1, int32(10+i))
				pf = []int16{1, 0, 0}
			}
			w.result(c.ExecPrepared(ctx, "ins", values, pf, f).Read())
			w.state(c)
		}
		w.printf("\n== execute ins duplicate key\n")
		w.result(c.ExecPrepared(ctx, "ins", [][]byte{[]byte("10"), nil, nil}, nil, nil).Read())
		w.state(c)
		w.printf("\n== prepare ins again\n")
		_, err = c.Prepare(ctx, "ins", `SELECT 1`, nil)
		w.err(err)
		w.state(c)
		w.printf("\n== prepare with explicit parameter types\n")
		sd, err = c.Prepare(ctx, "typed", `SELECT $1 AS a, $2 AS b, $3 AS c`, []uint32{pgtype.Int8OID, pgtype.NumericOID, 0})
		if err == nil {
			w.description(sd)
		}
		w.err(err)
		w.result(c.ExecPrepared(ctx, "typed", [][]byte{tpEncode(e.t, pgtype.Int8OID, 1, int64(-1)), []byte("1e-20"), []byte("text")}, []int16{1, 0, 0}, []int16{1}).Read())
		w.state(c)
		w.printf("\n== prepare a syntax error\n")
		_, err = c.Prepare(ctx, "broken", `SELEC $1`, nil)
		w.err(err)
		w.state(c)
		w.printf("\n== execute a statement that does not exist\n")
		w.result(c.ExecPrepared(ctx, "nope", nil, nil, nil).Read())
		w.state(c)
		w.printf("\n== deallocate ins and use it\n")
		w.err(c.Deallocate(ctx, "ins"))
		w.result(c.ExecPrepared(ctx, "ins", [][]byte{[]byte("99"), nil, nil}, nil, nil).Read())
		w.state(c)
		e.execParams(ctx, "pg_prepared_statements", `SELECT name, statement, parameter_types::text, from_sql FROM pg_prepared_statements ORDER BY name`, nil, nil, nil, nil)
	}},
	{"large messages both ways", func(ctx context.Context, e *tpParamEnv) {
		big := strings.Repeat("0123456789abcdef", 1<<17) // 2 MiB parameter
		e.execParams(ctx, "2 MiB parameter", `SELECT length($1), md5($1)`, [][]byte{[]byte(big)}, nil, nil, nil)
		lit := strings.Repeat("z", 300_000) // a 300 kB statement text
		e.execParams(ctx, "300 kB statement", `SELECT length('`+lit+`') AS n, '`+lit[:10]+`' AS head`, nil, nil, nil, nil)
		e.execParams(ctx, "5 MB value", `SELECT repeat('y', 5000000) AS big, 1 AS after`, nil, nil, nil, nil)
		e.execParams(ctx, "many rows", `SELECT g, md5(g::text) FROM generate_series(1, 20000) AS g`, nil, nil, nil, []int16{1, 0})
	}},
	{"pid and cancel key", func(ctx context.Context, e *tpParamEnv) {
		r := e.c.ExecParams(ctx, `SELECT pg_backend_pid()`, nil, nil, nil, nil).Read()
		// The PID itself differs between the two runs; whether
		// BackendKeyData announced the PID of the backend does not.
		same := r.Err == nil && len(r.Rows) == 1 && string(r.Rows[0][0]) == strconv.FormatUint(uint64(e.c.PID()), 10)
		e.w.printf("\n== pg_backend_pid() is the PID from BackendKeyData: %v\n", same)
		e.w.err(r.Err)
	}},
	{"cancel request", func(ctx context.Context, e *tpParamEnv) {
		done := make(chan error, 1)
		go func() {
			time.Sleep(300 * time.Millisecond)
			done <- e.c.CancelRequest(ctx)
		}()
		e.execParams(ctx, "cancelled", `SELECT pg_sleep(10)`, nil, nil, nil, nil)
		if err := <-done; err != nil {
			e.w.printf("cancel request failed: %v\n", err)
		}
		e.execParams(ctx, "after cancel", `SELECT 'still connected'`, nil, nil, nil, nil)
	}},
	{"portals with row limits and other raw messages", func(ctx context.Context, e *tpParamEnv) {
		tpRawExchange(ctx, e, []pgproto3.FrontendMessage{
			&pgproto3.Query{String: "BEGIN"},
		})
		tpRawExchange(ctx, e, []pgproto3.FrontendMessage{
			&pgproto3.Parse{Name: "gen", Query: "SELECT g, 'row ' || g AS label FROM generate_series(1, $1::int) AS g"},
			&pgproto3.Describe{ObjectType: 'S', Name: "gen"},
			&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "gen", Parameters: [][]byte{[]byte("7")}, ResultFormatCodes: []int16{1, 0}},
			&pgproto3.Describe{ObjectType: 'P', Name: "p1"},
			&pgproto3.Execute{Portal: "p1", MaxRows: 3},
			&pgproto3.Execute{Portal: "p1", MaxRows: 3},
			&pgproto3.Flush{},
			&pgproto3.Execute{Portal: "p1", MaxRows: 3},
			&pgproto3.Execute{Portal: "p1", MaxRows: 3},
			&pgproto3.Bind{DestinationPortal: "p2", PreparedStatement: "gen", Parameters: [][]byte{[]byte("3")}},
			&pgproto3.Execute{Portal: "p2", MaxRows: 1},
			&pgproto3.Close{ObjectType: 'P', Name: "p1"},
			&pgproto3.Sync{},
		})
		tpRawExchange(ctx, e, []pgproto3.FrontendMessage{
			// A named portal outlives Sync inside a transaction block.
			&pgproto3.Execute{Portal: "p2", MaxRows: 0},
			&pgproto3.Execute{Portal: "p1"},
			&pgproto3.Sync{},
		})
		tpRawExchange(ctx, e, []pgproto3.FrontendMessage{
			&pgproto3.Query{String: "ROLLBACK"},
			&pgproto3.Query{String: ""},
			&pgproto3.Query{String: "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM p ORDER BY id; FETCH 2 FROM c; FETCH ALL FROM c; CLOSE c"},
		})
		tpRawExchange(ctx, e, []pgproto3.FrontendMessage{
			// int4pl(40, 2) over the fast-path function call protocol.
			&pgproto3.FunctionCall{Function: 177, ArgFormatCodes: []uint16{1}, Arguments: [][]byte{{0, 0, 0, 40}, {0, 0, 0, 2}}, ResultFormatCode: 1},
			&pgproto3.FunctionCall{Function: 177, ArgFormatCodes: []uint16{0}, Arguments: [][]byte{[]byte("2147483647"), []byte("1")}, ResultFormatCode: 0},
		})
		tpRawExchange(ctx, e, []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "SELECT $1::text"},
			&pgproto3.Parse{Name: "gen", Query: "SELECT 1"},
			&pgproto3.Bind{},
			&pgproto3.Execute{},
			&pgproto3.Sync{},
			&pgproto3.Describe{ObjectType: 'S', Name: "gen"},
			&pgproto3.Close{ObjectType: 'S', Name: "gen"},
			&pgproto3.Close{ObjectType: 'S', Name: "gen"},
			&pgproto3.Describe{ObjectType: 'S', Name: "gen"},
			&pgproto3.Sync{},
		})
	}},
	{"pipeline with an error in the middle", func(ctx context.Context, e *tpParamEnv) {
		w, c := e.w, e.c
		w.printf("\n== pipeline\n")
		pl := c.StartPipeline(ctx)
		pl.SendQueryParams(`INSERT INTO p (id, name) VALUES ($1, 'pipelined') RETURNING id`, [][]byte{[]byte("100")}, nil, nil, nil)
		pl.SendPrepare("pp", `SELECT $1::int * 2 AS doubled`, nil)
		pl.SendQueryPrepared("pp", [][]byte{tpEncode(e.t, pgtype.Int4OID, 1, int32(21))}, []int16{1}, []int16{1})
		pl.SendQueryParams(`SELECT 1 / $1::int`, [][]byte{[]byte("0")}, nil, nil, nil)
		pl.SendQueryParams(`INSERT INTO p (id, name) VALUES (101, 'skipped')`, nil, nil, nil, nil)
		pl.SendQueryPrepared("pp", [][]byte{[]byte("1")}, nil, nil)
		pl.SendPipelineSync()
		pl.SendQueryParams(`SELECT count(*) AS after_sync FROM p WHERE id >= 100`, nil, nil, nil, nil)
		pl.SendQueryPrepared("pp", [][]byte{[]byte("5")}, nil, nil)
		pl.SendDeallocate("pp")
		pl.SendQueryPrepared("pp", [][]byte{[]byte("6")}, nil, nil)
		if err := pl.Sync(); err != nil {
			e.t.Fatal(err)
		}
		tpReadPipeline(e.t, pl, w)
		tpReadPipeline(e.t, pl, w)
		w.err(pl.Close())
		w.state(c)
	}},
	{"pgx with Go arguments in every query exec mode", func(ctx context.Context, e *tpParamEnv) {
		for _, mode := range []pgx.QueryExecMode{
			pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec,
			pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol,
		} {
			conn := tpConnectPgx(e.t, e.url, mode, e.w)
			args := []any{int64(7), "O'Reilly \\ ✓", pgtype.Numeric{}, time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), []byte{1, 2, 3}, []int32{1, 2, 3}, nil, true, 2.5}
			sql := `SELECT $1::int8 AS i, $2::text AS s, $3::numeric AS n, $4::timestamptz AS ts, $5::bytea AS b, $6::int4[] AS a, $7::text AS null_text, $8::bool AS ok, $9::float8 AS f`
			e.w.printf("\n== pgx %v query with arguments\n", mode)
			e.w.pgxRows(conn.Query(ctx, sql, args...))
			for _, id := range []int{1, 3} {
				e.w.printf("\n== pgx %v select id %d\n", mode, id)
				e.w.pgxRows(conn.Query(ctx, `SELECT * FROM p WHERE id = $1`, id))
			}
			e.w.printf("\n== pgx %v error\n", mode)
			e.w.pgxRows(conn.Query(ctx, `SELECT $1::int / 0`, 1))
			e.w.printf("\n== pgx %v batch with an error in the middle\n", mode)
			b := &pgx.Batch{}
			b.Queue(`SELECT $1::text || '!' AS shout`, "hey")
			b.Queue(`INSERT INTO p (id, name) VALUES ($1, $2) RETURNING id, name`, 200, "batched")
			b.Queue(`INSERT INTO p (id, name) VALUES ($1, $2)`, 200, "duplicate")
			b.Queue(`SELECT 'skipped after the error'`)
			br := conn.SendBatch(ctx, b)
			for range b.QueuedQueries {
				e.w.pgxRows(br.Query())
			}
			e.w.err(br.Close())
			e.w.state(conn.PgConn())
			e.w.printf("\n== pgx %v transaction\n", mode)
			tx, err := conn.Begin(ctx)
			e.w.err(err)
			if err == nil {
				_, err = tx.Exec(ctx, `INSERT INTO p (id, name) VALUES ($1, $2)`, 300, "in tx")
				e.w.err(err)
				e.w.state(conn.PgConn())
				e.w.err(tx.Rollback(ctx))
			}
			e.w.state(conn.PgConn())
			conn.Close(ctx)
		}
	}},
}

func TestTransparencyParams(t *testing.T) {
	p := startProxy(t, shared)
	run := func(t *testing.T, url string) *tpTranscript {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		w := tpNewTranscript()
		e := &tpParamEnv{t: t, w: w, url: url, c: tpConnect(t, url, w)}
		for _, step := range tpParamSteps {
			w.printf("\n### %s\n", step.name)
			step.run(ctx, e)
		}
		return w
	}
	direct := run(t, shared.url("", "", shared.newDB(t)))
	proxied := run(t, p.url("", "", shared.newDB(t)))
	tpCompare(t, direct, proxied)
	for _, code := range []string{"08P01", "22P03", "22P02", "42601", "42P05", "26000", "23505", "22012", "57014", "22003", "42883"} {
		if !direct.codes[code] {
			t.Errorf("no %s error; saw %v", code, tpSortedKeys(direct.codes))
		}
	}
	d := direct.String()
	for _, want := range []string{
		`"PortalSuspended"`, `"EmptyQueryResponse"`, `"FunctionCallResponse"`, `"ParameterDescription"`,
		`[5000000 bytes`, "pg_backend_pid() is the PID from BackendKeyData: true", `row "2097152" "`,
		`row "still connected"`, `"after_sync"`, `tag "INSERT 0 1"`,
	} {
		if !strings.Contains(d, want) {
			t.Errorf("transcript lacks %s", want)
		}
	}
	// In the pipeline, the statements between the error and the Sync were
	// skipped, and the INSERT before the error was rolled back with them.
	if !tpPipelineSkipRE.MatchString(d) {
		t.Errorf("the pipeline did not skip to its Sync after the error:\n%s", d[strings.Index(d, "### pipeline"):])
	}
	if direct.rows < 20000 {
		t.Errorf("only %d rows", direct.rows)
	}
}

var tpPipelineSkipRE = regexp.MustCompile(`(?s)### pipeline with an error.*?row \\x0000002a\n[^\n]*\nerror ERROR/ERROR 22012 [^\n]*\nsync\nfield "after_sync"[^\n]*\nrow "0"\n`)

// tpRawExchange sends protocol messages as they are and records every message
// the server answers with, up to the ReadyForQuery of the last Sync, Query
// or FunctionCall.
func tpRawExchange(ctx context.Context, e *tpParamEnv, msgs []pgproto3.FrontendMessage) {
	w, c := e.w, e.c
	want := 0
	var names []string
	for _, m := range msgs {
		switch m.(type) {
		case *pgproto3.Sync, *pgproto3.Query, *pgproto3.FunctionCall:
			want++
		}
		names = append(names, strings.TrimPrefix(fmt.Sprintf("%T", m), "*pgproto3."))
		c.Frontend().Send(m)
	}
	w.printf("\n== raw %s\n", strings.Join(names, " "))
	if err := c.Frontend().Flush(); err != nil {
		e.t.Fatal(err)
	}
	for want > 0 {
		msg, err := c.ReceiveMessage(ctx)
		if err != nil {
			e.t.Fatalf("receive: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.ReadyForQuery:
			want--
		case *pgproto3.RowDescription:
			// Through the OID normalisation, like every other field list.
			fds := make([]pgconn.FieldDescription, len(m.Fields))
			for i, f := range m.Fields {
				fds[i] = pgconn.FieldDescription{Name: string(f.Name), TableOID: f.TableOID, TableAttributeNumber: f.TableAttributeNumber,
					DataTypeOID: f.DataTypeOID, DataTypeSize: f.DataTypeSize, TypeModifier: f.TypeModifier, Format: f.Format}
			}
			w.printf("RowDescription\n")
			w.fields(fds)
			continue
		case *pgproto3.ErrorResponse:
			w.codes[m.Code] = true
		}
		js, err := json.Marshal(msg)
		if err != nil {
			e.t.Fatal(err)
		}
		w.printf("%s\n", js)
	}
	w.state(c)
}

// ---------------------------------------------------------------------------
// COPY with megabytes of data through pgconn's CopyFrom and CopyTo

func TestTransparencyCopy(t *testing.T) {
	p := startProxy(t, shared)
	var text bytes.Buffer
	const nrows = 40000
	for i := 1; i <= nrows; i++ {
		fmt.Fprintf(&text, "%d\tname %d \\\\ tab\\there ✓\t%d.%02d\t2026-01-%02d 12:%02d:%02d+00\t{%d,\"x y\",NULL}\t\\\\x%08x\n",
			i, i, i*7, i%100, i%28+1, i%60, i%60, i, uint32(i)*2654435761)
	}
	if text.Len() < 3<<20 {
		t.Fatalf("test data is only %d bytes", text.Len())
	}
	run := func(url string) *tpTranscript {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		w := tpNewTranscript()
		c := tpConnect(t, url, w)
		step := func(label string, f func()) {
			w.printf("\n== %s\n", label)
			f()
			w.state(c)
		}
		exec := func(sql string) { w.result(c.ExecParams(ctx, sql, nil, nil, nil, nil).Read()) }
		copyFrom := func(r io.Reader, sql string) {
			tag, err := c.CopyFrom(ctx, r, sql)
			w.tag(tag)
			w.err(err)
		}
		copyTo := func(sql string) []byte {
			var out bytes.Buffer
			tag, err := c.CopyTo(ctx, &out, sql)
			w.copyData(out.Bytes())
			w.tag(tag)
			w.err(err)
			return out.Bytes()
		}
		step("setup", func() {
			exec(`SET TimeZone = 'UTC'`)
			exec(`CREATE TABLE big (id int PRIMARY KEY, name text, amount numeric(12,2), at timestamptz, tags text[], data bytea)`)
			exec(`CREATE TABLE big2 (LIKE big)`)
		})
		step("copy from, text", func() { copyFrom(bytes.NewReader(text.Bytes()), `COPY big FROM STDIN`) })
		var back []byte
		step("copy to, text", func() { back = copyTo(`COPY (SELECT * FROM big ORDER BY id) TO STDOUT`) })
		w.printf("text round trip exact: %v\n", bytes.Equal(back, text.Bytes()))
		step("copy to, csv", func() { copyTo(`COPY big TO STDOUT WITH (FORMAT csv, HEADER true, FORCE_QUOTE *)`) })
		var bin []byte
		step("copy to, binary", func() { bin = copyTo(`COPY (SELECT * FROM big ORDER BY id) TO STDOUT WITH (FORMAT binary)`) })
		step("copy from, binary", func() { copyFrom(bytes.NewReader(bin), `COPY big2 FROM STDIN WITH (FORMAT binary)`) })
		step("binary round trip", func() {
			exec(`SELECT count(*), md5(string_agg(b::text, '|' ORDER BY id)) FROM big2 b`)
			exec(`SELECT count(*) FROM (SELECT * FROM big EXCEPT SELECT * FROM big2) AS d`)
		})
		step("copy from, bad row near the end", func() {
			cut := bytes.LastIndexByte(text.Bytes()[:text.Len()-200], '\n') + 1
			bad := append(bytes.Clone(text.Bytes()[:cut]), "not-a-number\tx\t1\t2026-01-01\t{}\t\\\\x00\n"...)
			exec(`TRUNCATE big2`)
			copyFrom(bytes.NewReader(bad), `COPY big2 FROM STDIN`)
		})
		step("copy from, client gives up midway", func() {
			r := io.MultiReader(bytes.NewReader(text.Bytes()[:1<<20]), tpFailingReader{})
			copyFrom(r, `COPY big2 FROM STDIN`)
		})
		step("copy from inside a transaction, rolled back", func() {
			exec(`BEGIN`)
			copyFrom(bytes.NewReader(text.Bytes()), `COPY big2 FROM STDIN`)
			exec(`SELECT count(*) FROM big2`)
			exec(`ROLLBACK`)
			exec(`SELECT count(*) FROM big2`)
		})
		step("copy to, error midway", func() {
			copyTo(`COPY (SELECT id, name, 1 / (id - 30000) FROM big ORDER BY id) TO STDOUT`)
		})
		step("copy from, wrong table", func() { copyFrom(bytes.NewReader(text.Bytes()[:100]), `COPY nowhere FROM STDIN`) })
		step("after all that", func() { exec(`SELECT count(*), sum(amount) FROM big`) })
		return w
	}
	direct := run(shared.url("", "", shared.newDB(t)))
	proxied := run(p.url("", "", shared.newDB(t)))
	tpCompare(t, direct, proxied)
	d := direct.String()
	for _, want := range []string{
		fmt.Sprintf(`tag "COPY %d"`, nrows), "text round trip exact: true", `row "40000"`, `row "0"`,
	} {
		if !strings.Contains(d, want) {
			t.Errorf("transcript lacks %s", want)
		}
	}
	for _, code := range []string{"22P02", "57014", "22012", "42P01"} {
		if !direct.codes[code] {
			t.Errorf("no %s error; saw %v", code, tpSortedKeys(direct.codes))
		}
	}
}

type tpFailingReader struct{}

func (tpFailingReader) Read([]byte) (int, error) { return 0, errors.New("the client ran out of data") }

// ---------------------------------------------------------------------------
// NOTIFY between sessions

// TestTransparencyNotify: a listener through the proxy and one connected
// directly hear the same notifications, in the same order, from senders
// connected either way, with channel, payload and sender PID intact; an
// idle listener hears them without sending anything.
func TestTransparencyNotify(t *testing.T) {
	db := shared.newDB(t)
	p := startProxy(t, shared)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	type heard struct {
		mu   sync.Mutex
		list []*pgconn.Notification
	}
	listen := func(url string) (*pgconn.PgConn, *heard) {
		h := &heard{}
		cfg, err := pgconn.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) {
			h.mu.Lock()
			h.list = append(h.list, n)
			h.mu.Unlock()
		}
		c, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		if _, err := c.Exec(ctx, `LISTEN news; LISTEN "Other Channel"`).ReadAll(); err != nil {
			t.Fatal(err)
		}
		return c, h
	}
	proxiedListener, viaProxy := listen(p.url("", "", db))
	directListener, direct := listen(shared.url("", "", db))

	senders := map[string]*pgconn.PgConn{
		"direct":  connect(t, shared.url("", "", db)),
		"proxied": connect(t, p.url("", "", db)),
	}
	senderOf := map[uint32]string{}
	for name, s := range senders {
		senderOf[s.PID()] = name
		// BackendKeyData through the proxy carries the backend's own PID.
		res, err := s.Exec(ctx, `SELECT pg_backend_pid()`).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if got := string(res[0].Rows[0][0]); got != strconv.FormatUint(uint64(s.PID()), 10) {
			t.Errorf("%s sender: pg_backend_pid() = %s, PID from BackendKeyData = %d", name, got, s.PID())
		}
	}
	long := strings.Repeat("ü", 3990) // 7980 bytes, just under the limit
	var want []string
	for _, name := range []string{"direct", "proxied"} {
		s := senders[name]
		script := fmt.Sprintf(`NOTIFY news, 'from %[1]s ✓';
			SELECT pg_notify('Other Channel', '%[2]s');
			NOTIFY news;
			BEGIN; NOTIFY news, 'rolled back'; ROLLBACK;
			BEGIN; NOTIFY news, 'at commit 1 %[1]s'; NOTIFY news, 'at commit 1 %[1]s'; NOTIFY news, 'at commit 2 %[1]s'; COMMIT;
			NOTIFY unheard, 'nobody listens';
			NOTIFY news, 'done %[1]s'`, name, long)
		// One Query per statement: in a single multi-statement Query the
		// ROLLBACK would take the earlier NOTIFYs with it.
		for _, stmt := range strings.Split(script, ";") {
			if _, err := s.Exec(ctx, stmt).ReadAll(); err != nil {
				t.Fatalf("%s sender: %s: %v", name, stmt, err)
			}
		}
		want = append(want,
			fmt.Sprintf("news %q from %s", "from "+name+" ✓", name),
			fmt.Sprintf("Other Channel %q from %s", long, name),
			fmt.Sprintf("news %q from %s", "", name),
			fmt.Sprintf("news %q from %s", "at commit 1 "+name, name),
			fmt.Sprintf("news %q from %s", "at commit 2 "+name, name),
			fmt.Sprintf("news %q from %s", "done "+name, name))
	}
	// The listeners are idle: what they hear arrives unasked, and
	// WaitForNotification reads it.
	collect := func(c *pgconn.PgConn, h *heard) []string {
		for {
			h.mu.Lock()
			n := len(h.list)
			h.mu.Unlock()
			if n >= len(want) {
				break
			}
			wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
			err := c.WaitForNotification(wctx)
			wcancel()
			if err != nil {
				t.Fatalf("waiting for notification %d of %d: %v", n+1, len(want), err)
			}
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		var got []string
		for _, n := range h.list {
			from, ok := senderOf[n.PID]
			if !ok {
				from = fmt.Sprintf("unknown PID %d", n.PID)
			}
			got = append(got, fmt.Sprintf("%s %q from %s", n.Channel, n.Payload, from))
		}
		return got
	}
	gotProxy := collect(proxiedListener, viaProxy)
	gotDirect := collect(directListener, direct)
	if strings.Join(gotDirect, "\n") != strings.Join(want, "\n") {
		t.Errorf("direct listener heard:\n%s\nwant:\n%s", strings.Join(gotDirect, "\n"), strings.Join(want, "\n"))
	}
	if strings.Join(gotProxy, "\n") != strings.Join(gotDirect, "\n") {
		t.Errorf("listener through pgrules heard (- direct, + through pgrules):\n%s", tpLineDiff(strings.Join(gotDirect, "\n"), strings.Join(gotProxy, "\n")))
	}

	// A notification that arrives while a listener is busy with a query
	// comes with that query's results.
	listeners := []struct {
		name string
		c    *pgconn.PgConn
		h    *heard
	}{{"through pgrules", proxiedListener, viaProxy}, {"direct", directListener, direct}}
	var wg sync.WaitGroup
	errs := make(chan error, len(listeners))
	for _, l := range listeners {
		l.h.mu.Lock()
		l.h.list = nil
		l.h.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.c.Exec(ctx, `SELECT pg_sleep(0.5)`).ReadAll()
			errs <- err
		}()
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := senders["proxied"].Exec(ctx, `NOTIFY news, 'during a query'`).ReadAll(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range listeners {
		l.h.mu.Lock()
		if len(l.h.list) != 1 || l.h.list[0].Payload != "during a query" || l.h.list[0].PID != senders["proxied"].PID() {
			t.Errorf("%s listener heard during a query: %+v", l.name, l.h.list)
		}
		l.h.mu.Unlock()
	}
}

// ---------------------------------------------------------------------------
// A readable diff

// tpLineDiff shows where two texts differ, as a unified-style diff of lines
// with some context; enough to read a failure, not a general diff tool.
func tpLineDiff(a, b string) string {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	pre := 0
	for pre < len(x) && pre < len(y) && x[pre] == y[pre] {
		pre++
	}
	suf := 0
	for suf < len(x)-pre && suf < len(y)-pre && x[len(x)-1-suf] == y[len(y)-1-suf] {
		suf++
	}
	xm, ym := x[pre:len(x)-suf], y[pre:len(y)-suf]
	var out []string
	const context = 4
	for i := max(0, pre-context); i < pre; i++ {
		out = append(out, "  "+x[i])
	}
	if len(xm)*len(ym) > 4_000_000 {
		for _, l := range xm[:min(len(xm), 40)] {
			out = append(out, "- "+l)
		}
		for _, l := range ym[:min(len(ym), 40)] {
			out = append(out, "+ "+l)
		}
	} else {
		// Longest common subsequence of the differing middle.
		lcs := make([][]int32, len(xm)+1)
		for i := range lcs {
			lcs[i] = make([]int32, len(ym)+1)
		}
		for i := len(xm) - 1; i >= 0; i-- {
			for j := len(ym) - 1; j >= 0; j-- {
				if xm[i] == ym[j] {
					lcs[i][j] = lcs[i+1][j+1] + 1
				} else {
					lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
				}
			}
		}
		i, j := 0, 0
		for i < len(xm) || j < len(ym) {
			switch {
			case i < len(xm) && j < len(ym) && xm[i] == ym[j]:
				out = append(out, "  "+xm[i])
				i++
				j++
			case j < len(ym) && (i == len(xm) || lcs[i][j+1] >= lcs[i+1][j]):
				out = append(out, "+ "+ym[j])
				j++
			default:
				out = append(out, "- "+xm[i])
				i++
			}
		}
	}
	for i := len(x) - suf; i < min(len(x), len(x)-suf+context); i++ {
		out = append(out, "  "+x[i])
	}
	if len(out) > 300 {
		out = append(out[:300], fmt.Sprintf("... %d more lines", len(out)-300))
	}
	for i, l := range out {
		if len(l) > 400 {
			out[i] = l[:400] + "..."
		}
	}
	return fmt.Sprintf("@@ line %d @@\n%s", pre+1, strings.Join(out, "\n"))
}
