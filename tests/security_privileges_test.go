package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgrules/pgrules/internal/tempdb"
)

// Who may do what (rules-api.md §11), attacked as the roles of SECURITY.md
// would: clients with only a login role, and rule authors who own a table.
// Every role logs in with SCRAM, through a real proxy or directly.
//
//   - priv_alice writes priv_ruler's table ledger, and nothing else;
//   - priv_ruler owns ledger and defines its rules;
//   - priv_mallory may write pgrules.rule (as the definition functions
//     need) but owns no table of the others;
//   - priv_dispatch is the login role the dispatcher runs entries as:
//     NOINHERIT, no rights of its own, granted priv_alice and priv_ruler.

const privPass = "priv secret"

var privRoles = []string{"priv_alice", "priv_ruler", "priv_mallory", "priv_dispatch"}

// privEnv is a private cluster with the roles above and a database where
// priv_ruler owns ledger (and ledger_log, which alice may insert into).
type privEnv struct {
	s     *server
	db    string
	admin *pgconn.PgConn // a superuser, directly
}

func newPrivEnv(t *testing.T) *privEnv {
	t.Helper()
	c, err := tempdb.Start(tempdb.Options{HBA: []string{"host all " + strings.Join(privRoles, ",") + " 127.0.0.1/32 scram-sha-256"}})
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() { c.Destroy() })
	s := &server{admin: c.URL(tempdb.SuperUser, "postgres"), cluster: c}
	roles := "SET password_encryption = 'scram-sha-256';"
	for _, r := range privRoles {
		roles += fmt.Sprintf(" CREATE ROLE %s LOGIN PASSWORD '%s';", r, privPass)
	}
	roles += " ALTER ROLE priv_dispatch NOINHERIT; GRANT priv_alice, priv_ruler TO priv_dispatch;"
	if err := s.exec(context.Background(), "postgres", roles); err != nil {
		t.Fatal(err)
	}
	db := s.newDB(t)
	admin := connect(t, s.url("", "", db))
	scalar(t, admin, `SET ROLE priv_ruler;
		CREATE TABLE ledger (id int PRIMARY KEY, amount int NOT NULL DEFAULT 0);
		CREATE TABLE ledger_log (id int, who name);
		GRANT SELECT, INSERT, UPDATE ON ledger TO priv_alice;
		GRANT INSERT ON ledger_log TO priv_alice;
		RESET ROLE`)
	return &privEnv{s: s, db: db, admin: admin}
}

// proxy starts a proxy whose dispatchers run entries as runAs ("": as the
// proxy's own role, a superuser: the worst case), with the pgrules schema
// installed and the rule authors granted what the definition functions
// write.
func (e *privEnv) proxy(t *testing.T, deliver bool, runAs string) *testProxy {
	t.Helper()
	var p *testProxy
	if !deliver {
		p = startProxy(t, e.s)
	} else {
		var connectRun func(context.Context, string) (*pgx.Conn, error)
		if runAs != "" {
			connectRun = func(ctx context.Context, database string) (*pgx.Conn, error) {
				return pgx.Connect(ctx, e.s.url(runAs, privPass, database))
			}
		}
		p = startProxy(t, e.s, withOutboxRunAs(t, e.s, fastOutbox, nil, connectRun))
	}
	scalar(t, connect(t, p.url("", "", e.db)), "SELECT 1") // installs the schema
	scalar(t, e.admin, "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON pgrules.rule TO priv_ruler, priv_mallory")
	return p
}

// as connects as role through p, or directly when p is nil.
func (e *privEnv) as(t *testing.T, p *testProxy, role string) *pgconn.PgConn {
	t.Helper()
	if p == nil {
		return connect(t, e.s.url(role, privPass, e.db))
	}
	return connect(t, p.url(role, privPass, e.db))
}

// roleFlags are the attributes an escalation would grant.
func (e *privEnv) roleFlags(t *testing.T) string {
	t.Helper()
	return scalar(t, e.admin, `SELECT string_agg(rolname || ':' || rolsuper || rolcreaterole || rolcreatedb || rolbypassrls, ' ' ORDER BY rolname)
		FROM pg_roles WHERE rolname LIKE 'priv\_%'`)
}

const privFlagsBefore = "priv_alice:falsefalsefalsefalse priv_dispatch:falsefalsefalsefalse priv_mallory:falsefalsefalsefalse priv_ruler:falsefalsefalsefalse"

// wantErr fails unless running sql on c fails with code and a message that
// holds each of words.
func wantErr(t *testing.T, c *pgconn.PgConn, sql, code string, words ...string) {
	t.Helper()
	e := pgError(t, c, sql)
	if e == nil || e.Code != code {
		t.Fatalf("%s: %+v, want %s", sql, e, code)
	}
	for _, w := range words {
		if !strings.Contains(e.Message, w) {
			t.Fatalf("%s: message %q, want it to say %q", sql, e.Message, w)
		}
	}
}

// TestSecurityPrivOutboxWrittenOnlyByEngine: a client cannot insert an
// outbox entry, directly, through the proxy (the schema name quoted), by
// calling the engine's function or through a function of its own; yet it
// needs no privilege on the outbox for the after_commit events of its
// writes, whose entries run as its role.
func TestSecurityPrivOutboxWrittenOnlyByEngine(t *testing.T) {
	e := newPrivEnv(t)
	p := e.proxy(t, true, "priv_dispatch")
	ruler := e.as(t, p, "priv_ruler")
	scalar(t, ruler, `SELECT pgrules.event('ledger', 'after_commit', 'sql("INSERT INTO ledger_log (id, who) VALUES ($1, current_user)", row.id)', name => 'ledger_log')`)

	forged := fmt.Sprintf(`INSERT INTO "pgrules".outbox (rule, timing, key, kind, target, role, rule_digest)
		VALUES ('ledger_log', 'after_commit', 'public.ledger:1', 'sql', 'ALTER ROLE priv_alice CREATEROLE', 'postgres', '%s')`,
		scalar(t, e.admin, "SELECT pgrules._rule_digest('ledger_log', 'after_commit')"))
	add := `SELECT pgrules._outbox_add('{ledger_log}', '{after_commit}', '{public.ledger:1}', '{sql}',
		'{"ALTER ROLE priv_alice CREATEROLE"}', '{NULL}', '{"{}"}', 'postgres')`
	for _, via := range []struct {
		name string
		p    *testProxy
	}{{"through the proxy", p}, {"directly", nil}} {
		t.Run(via.name, func(t *testing.T) {
			alice := e.as(t, via.p, "priv_alice")
			wantErr(t, alice, forged, "42501", "permission denied")
			wantErr(t, alice, `UPDATE "pgrules".outbox SET role = 'postgres'`, "42501", "permission denied")
			wantErr(t, alice, `DELETE FROM "pgrules".outbox`, "42501", "permission denied")
			wantErr(t, alice, add, "42501", "only pgrules records them")
			scalar(t, e.as(t, nil, "priv_alice"), "CREATE OR REPLACE FUNCTION public.sneak() RETURNS void LANGUAGE sql AS $f$ "+add+" $f$")
			wantErr(t, alice, "SELECT public.sneak()", "42501", "only pgrules records them")
		})
	}
	// The header of the engine's statement, with a key guessed: refused
	// by the proxy, and by the function on a direct connection.
	header := "/*pgrules 00000000000000000000000000000000 outbox */\n"
	wantErr(t, e.as(t, p, "priv_alice"), header+add, "42501")
	wantErr(t, e.as(t, nil, "priv_alice"), header+add, "42501", "only pgrules records them")
	if got := scalar(t, e.admin, "SELECT count(*) FROM pgrules.outbox"); got != "0" {
		t.Fatalf("%s entries recorded by the attacks", got)
	}

	// The writer's own entry, with no privilege on the outbox, runs as the
	// writer, through the dispatcher's NOINHERIT login role.
	alice := e.as(t, p, "priv_alice")
	scalar(t, alice, "INSERT INTO ledger (id, amount) VALUES (1, 10)")
	waitFor(t, "the entry delivered", func() bool {
		return scalar(t, e.admin, "SELECT state FROM pgrules.outbox") == "done"
	})
	if got := scalar(t, e.admin, "SELECT who || ' ' || (SELECT role || ' ' || state FROM pgrules.outbox) FROM ledger_log"); got != "priv_alice priv_alice done" {
		t.Fatalf("ledger_log and the entry: %s", got)
	}
	if got := e.roleFlags(t); got != privFlagsBefore {
		t.Fatalf("roles after the attacks: %s", got)
	}
}

// TestSecurityPrivOutboxCannotRaiseRole: an after_commit action that tries
// to leave the writer's role — RESET ROLE, SET ROLE, set_config('role'),
// SET SESSION AUTHORIZATION, from a DO block or a function — is refused
// even when the dispatcher runs entries as a superuser, and nothing of it
// runs: no role gains an attribute.
func TestSecurityPrivOutboxCannotRaiseRole(t *testing.T) {
	e := newPrivEnv(t)
	p := e.proxy(t, true, "")
	ruler := e.as(t, p, "priv_ruler")
	scalar(t, ruler, "CREATE FUNCTION public.escape() RETURNS void LANGUAGE plpgsql AS $f$BEGIN RESET ROLE; ALTER ROLE priv_ruler BYPASSRLS; END$f$")
	attacks := map[string]string{
		"reset":    `DO $d$BEGIN RESET ROLE; EXECUTE 'ALTER ROLE priv_ruler SUPERUSER'; END$d$`,
		"setrole":  `DO $d$BEGIN SET ROLE postgres; EXECUTE 'ALTER ROLE priv_alice CREATEROLE'; END$d$`,
		"config":   `DO $d$BEGIN PERFORM set_config('role', 'postgres', true); EXECUTE 'ALTER ROLE priv_alice CREATEDB'; END$d$`,
		"session":  `DO $d$BEGIN SET SESSION AUTHORIZATION postgres; EXECUTE 'ALTER ROLE priv_ruler CREATEDB'; END$d$`,
		"function": `SELECT public.escape()`,
	}
	for name, q := range attacks {
		scalar(t, ruler, fmt.Sprintf(`SELECT pgrules.event('ledger', 'after_commit', $a$sql("%s")$a$, name => 'escape_%s')`, q, name))
	}
	// The writer's entries (run as priv_alice) and the author's own (as
	// priv_ruler).
	scalar(t, e.as(t, p, "priv_alice"), "INSERT INTO ledger (id) VALUES (1)")
	scalar(t, ruler, "INSERT INTO ledger (id) VALUES (2)")
	waitFor(t, "every entry tried", func() bool {
		return scalar(t, e.admin, "SELECT count(*) FROM pgrules.outbox WHERE state = 'pending'") == "0"
	})
	if got := e.roleFlags(t); got != privFlagsBefore {
		t.Fatalf("roles after the attacks: %s", got)
	}
	rows, err := e.admin.Exec(context.Background(), "SELECT rule, role, last_error FROM pgrules.outbox ORDER BY id").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows[0].Rows {
		if !strings.Contains(string(r[2]), "within security-definer function") {
			t.Errorf("%s as %s: last_error %q, want the role change refused", r[0], r[1], r[2])
		}
	}
	if n := len(rows[0].Rows); n != 2*len(attacks) {
		t.Fatalf("%d entries, want %d", n, 2*len(attacks))
	}
}

// TestSecurityPrivOutboxRuleChanged: an entry runs what its rule says when
// it was recorded, and not at all once the rule changed or was dropped.
func TestSecurityPrivOutboxRuleChanged(t *testing.T) {
	e := newPrivEnv(t)
	p := e.proxy(t, false, "")
	ruler := e.as(t, p, "priv_ruler")
	scalar(t, ruler, `SELECT pgrules.event('ledger', 'after_commit', 'sql("INSERT INTO ledger_log (id, who) VALUES ($1, current_user)", row.id)', name => 'changed')`)
	scalar(t, ruler, `SELECT pgrules.event('ledger', 'after_commit', 'sql("INSERT INTO ledger_log (id, who) VALUES ($1, ''dropped'')", row.id)', name => 'dropped')`)
	scalar(t, ruler, `SELECT pgrules.event('ledger', 'after_commit', 'sql("INSERT INTO ledger_log (id, who) VALUES ($1, ''kept'')", row.id)', name => 'kept')`)
	scalar(t, e.as(t, p, "priv_alice"), "INSERT INTO ledger (id) VALUES (7)")
	scalar(t, ruler, `SELECT pgrules.event('ledger', 'after_commit', 'nil', name => 'changed')`)
	scalar(t, ruler, `SELECT pgrules.drop_rule('dropped')`)

	e.proxy(t, true, "priv_dispatch")
	waitFor(t, "the entries tried", func() bool {
		return scalar(t, e.admin, "SELECT count(*) FROM pgrules.outbox WHERE state <> 'pending'") == "3"
	})
	if got := scalar(t, e.admin, "SELECT string_agg(rule || ' ' || state || ' ' || coalesce(last_error, ''), '; ' ORDER BY id) FROM pgrules.outbox"); got !=
		`changed dead not run: rule "changed" was dropped or changed since the entry was recorded (SELECT pgrules.retry(id) runs it with the rule as it is now); `+
			`dropped dead not run: rule "dropped" was dropped or changed since the entry was recorded (SELECT pgrules.retry(id) runs it with the rule as it is now); `+
			`kept done ` {
		t.Fatalf("entries: %s", got)
	}
	if got := scalar(t, e.admin, "SELECT string_agg(who, ' ') FROM ledger_log"); got != "kept" {
		t.Fatalf("ledger_log: %s", got)
	}
}

// TestSecurityPrivRuleAuthors: only a table's owner or a member of
// pgrules_admin may define, drop, enable or disable its rules, whichever
// way it is tried; pgrules.rules lists only the rules of tables the role
// may read.
func TestSecurityPrivRuleAuthors(t *testing.T) {
	e := newPrivEnv(t)
	p := e.proxy(t, false, "")
	ruler := e.as(t, p, "priv_ruler")
	scalar(t, ruler, `SELECT pgrules.constraint('ledger', 'row.amount >= 0', 'no negative amounts', name => 'positive')`)
	scalar(t, e.admin, "SET ROLE priv_mallory; CREATE TABLE scratch (id int PRIMARY KEY, total int); RESET ROLE")

	const denied = "only by its owner or a member of pgrules_admin"
	for _, via := range []struct {
		name string
		p    *testProxy
	}{{"through the proxy", p}, {"directly", nil}} {
		t.Run(via.name, func(t *testing.T) {
			m := e.as(t, via.p, "priv_mallory")
			wantErr(t, m, `SELECT pgrules.disable_rule('positive')`, "42501", "disable", "public.ledger", denied)
			wantErr(t, m, `SELECT pgrules.drop_rule('positive')`, "42501", "drop", denied)
			wantErr(t, m, `SELECT pgrules.enable_rule('positive')`, "42501", "enable", denied)
			wantErr(t, m, `SELECT pgrules.event('ledger', 'row', 'reject("no")', name => 'mallory')`, "42501", "define", denied)
			// Replacing the owner's rule by its name, with one on a table
			// mallory owns.
			wantErr(t, m, `SELECT pgrules.constraint('scratch', 'true', 'x', name => 'positive')`, "42501", "replace", denied)
			// A derivation of mallory's table reading what mallory may not.
			wantErr(t, m, `SELECT pgrules.sum('scratch.total', 'ledger.amount')`, "42501", "may not read")
			scalar(t, m, `CREATE OR REPLACE FUNCTION public.sneak() RETURNS text LANGUAGE sql AS $f$ SELECT pgrules.disable_rule('positive') $f$`)
			wantErr(t, m, `SELECT public.sneak()`, "42501", denied)
			if got := scalar(t, m, "SELECT count(*) FROM pgrules.rules"); got != "0" {
				t.Fatalf("mallory lists %s rules of a table it may not read", got)
			}
		})
	}
	// Written directly, pgrules.rule refuses the same (mallory may write
	// it, as the definition functions need).
	m := e.as(t, nil, "priv_mallory")
	wantErr(t, m, "UPDATE pgrules.rule SET enabled = false WHERE name = 'positive'", "42501", denied)
	wantErr(t, m, "DELETE FROM pgrules.rule WHERE name = 'positive'", "42501", denied)
	wantErr(t, m, "UPDATE pgrules.rule SET table_name = 'scratch' WHERE name = 'positive'", "42501", denied)
	wantErr(t, m, `INSERT INTO pgrules.rule (name, table_schema, table_name, kind, expression, message)
		VALUES ('planted', 'public', 'ledger', 'constraint', 'false', 'no writes')`, "42501", denied)
	wantErr(t, m, "TRUNCATE pgrules.rule", "42501", "pgrules_admin")
	if got := scalar(t, e.admin, "SELECT string_agg(name || ' ' || table_name || ' ' || enabled, ', ') FROM pgrules.rule"); got != "positive ledger true" {
		t.Fatalf("rules after mallory's attempts: %s", got)
	}

	// What mallory may do: its own table's rules; with SELECT on ledger,
	// list its rules; as a member of pgrules_admin, switch them.
	scalar(t, e.as(t, p, "priv_mallory"), `SELECT pgrules.constraint('scratch', 'row.total >= 0', 'no negative totals', name => 'scratch_positive')`)
	scalar(t, e.admin, "GRANT SELECT ON ledger TO priv_mallory")
	if got := scalar(t, e.as(t, p, "priv_mallory"), "SELECT string_agg(name, ' ' ORDER BY name) FROM pgrules.rules"); got != "positive scratch_positive" {
		t.Fatalf("mallory lists %q", got)
	}
	if got := scalar(t, ruler, "SELECT string_agg(name, ' ' ORDER BY name) FROM pgrules.rules"); got != "positive" {
		t.Fatalf("the owner of ledger lists %q", got)
	}
	// A writer of ledger, with no privilege on pgrules.rule, lists its
	// rules through the proxy.
	if got := scalar(t, e.as(t, p, "priv_alice"), "SELECT string_agg(name, ' ' ORDER BY name) FROM pgrules.rules"); got != "positive" {
		t.Fatalf("a writer of ledger lists %q", got)
	}
	scalar(t, e.admin, "GRANT pgrules_admin TO priv_mallory")
	scalar(t, e.as(t, p, "priv_mallory"), `SELECT pgrules.disable_rule('positive')`)
	scalar(t, ruler, `SELECT pgrules.enable_rule('positive')`)
}

// TestSecurityPrivRebuildStandardConformingStrings: with
// standard_conforming_strings off, a formula's string literal holding a
// backslash and a quote cannot make rebuild() or verify() run SQL of its
// own.
func TestSecurityPrivRebuildStandardConformingStrings(t *testing.T) {
	e := newPrivEnv(t)
	p := e.proxy(t, false, "")
	scalar(t, e.admin, `SET ROLE priv_ruler;
		CREATE SEQUENCE probe_seq;
		CREATE FUNCTION public.probe() RETURNS text LANGUAGE sql AS $f$ SELECT nextval('probe_seq')::text $f$;
		CREATE TABLE labels (id int PRIMARY KEY, label text);
		INSERT INTO labels SELECT i, 'x' FROM generate_series(1, 3) i;
		RESET ROLE`)
	ruler := e.as(t, p, "priv_ruler")
	// The value: \' || public.probe()) --
	const value = `\' || public.probe()) --`
	scalar(t, ruler, `SELECT pgrules.formula('labels.label', $f$"\\' || public.probe()) --"$f$)`)
	scalar(t, e.admin, "BEGIN; SET LOCAL pgrules.guard = off; UPDATE labels SET label = 'stale'; COMMIT")
	scalar(t, ruler, "SET standard_conforming_strings = off")
	if got := scalar(t, ruler, "SELECT count(*) FROM pgrules.verify('labels') WHERE rule = 'labels.label'"); got != "3" {
		t.Fatalf("verify: %s rows, want 3", got)
	}
	corrected := scalar(t, ruler, "SELECT rows_corrected FROM pgrules.rebuild('labels')")
	if got := scalar(t, e.admin, "SELECT is_called FROM probe_seq"); got != "f" {
		t.Fatal("the formula's literal ran probe()")
	}
	if corrected != "3" {
		t.Fatalf("rebuild: %s rows, want 3", corrected)
	}
	if got := scalar(t, e.admin, "SELECT string_agg(DISTINCT label, ' ') FROM labels"); got != value {
		t.Fatalf("labels: %q, want %q", got, value)
	}
}

// TestSecurityPrivOutboxEngineWrite: an entry that writes a table with
// rules runs through the engine, statement by statement, under SET LOCAL
// ROLE; a trigger of that table (its owner's code) that resets the role is
// caught at the end of the transaction, which rolls back, and one that
// sets it back meanwhile finds, with the setup of SECURITY.md, the
// dispatcher's login role, which has no rights of its own.
func TestSecurityPrivOutboxEngineWrite(t *testing.T) {
	for _, tt := range []struct {
		name, runAs, trigger, lastError string
	}{
		{"dispatcher as the proxy's superuser", "", "RESET ROLE; ALTER ROLE priv_ruler SUPERUSER;",
			"the outbox entry of role priv_alice changed its role to postgres: rolled back"},
		{"dispatcher as a NOINHERIT role", "priv_dispatch", "RESET ROLE; ALTER ROLE priv_ruler SUPERUSER; SET ROLE priv_alice;",
			"must be superuser to alter superuser roles"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newPrivEnv(t)
			p := e.proxy(t, true, tt.runAs)
			ruler := e.as(t, p, "priv_ruler")
			scalar(t, e.admin, `SET ROLE priv_ruler;
				CREATE TABLE ruled (id int PRIMARY KEY, n int NOT NULL DEFAULT 1);
				GRANT SELECT, INSERT ON ruled TO priv_alice;
				CREATE FUNCTION public.escape() RETURNS trigger LANGUAGE plpgsql AS $f$BEGIN `+tt.trigger+` RETURN NEW; END$f$;
				CREATE TRIGGER escape BEFORE INSERT ON ruled FOR EACH ROW EXECUTE FUNCTION public.escape();
				RESET ROLE`)
			scalar(t, ruler, `SELECT pgrules.constraint('ruled', 'row.n > 0', 'n must be positive', name => 'ruled_positive')`)
			scalar(t, ruler, `SELECT pgrules.event('ledger', 'after_commit', 'insert("ruled", {id: row.id})', name => 'to_ruled')`)
			scalar(t, e.as(t, p, "priv_alice"), "INSERT INTO ledger (id) VALUES (1)")
			waitFor(t, "the entry tried", func() bool {
				return scalar(t, e.admin, "SELECT attempts > 0 FROM pgrules.outbox") == "t"
			})
			if got := e.roleFlags(t); got != privFlagsBefore {
				t.Fatalf("roles after the attack: %s", got)
			}
			if got := scalar(t, e.admin, "SELECT last_error FROM pgrules.outbox"); !strings.Contains(got, tt.lastError) {
				t.Fatalf("last_error %q, want it to say %q", got, tt.lastError)
			}
			if got := scalar(t, e.admin, "SELECT count(*) FROM ruled"); got != "0" {
				t.Fatalf("%s rows written by the refused entry", got)
			}
		})
	}
}
