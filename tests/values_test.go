package tests

import (
	"testing"
)

// TestExactValues holds two results of the engine's arithmetic to what
// PostgreSQL computes: an integer formula past 64 bits is refused as out of
// the column's range (it once wrapped round and stored 5), and text joined
// with + from columns, a parent's included, is computed for the rows already
// there when the rule is defined (its SQL once said text + text).
func TestExactValues(t *testing.T) {
	schema := `CREATE TABLE p (id int PRIMARY KEY, name text);
        CREATE TABLE c (id int PRIMARY KEY, p_id int REFERENCES p, code text, label text, big int)`
	c, admin, _, _ := rulesDB(t, schema, []string{
		// Divided by 1, so that the engine computes it (not one trip).
		"SELECT pgrules.formula('c.big', '(row.id * 9223372036854775807 + row.id * 9223372036854775807 + 7) / 1', name => 'big')",
	})
	scalar(t, admin, "INSERT INTO p VALUES (1, 'Alice'), (2, 'Bob')")
	if e := pgError(t, c, "INSERT INTO c (id, p_id, code) VALUES (1, 1, 'a')"); e == nil || e.Code != "22003" {
		t.Fatalf("a formula past 64 bits into an integer: %v, want 22003", e)
	}
	scalar(t, c, "SELECT pgrules.drop_rule('big')")
	scalar(t, c, "INSERT INTO c (id, p_id, code) VALUES (1, 1, 'a'), (2, 2, 'b')")
	scalar(t, c, "SELECT pgrules.formula('c.label', 'row.p.name + \": \" + row.code')")
	if got := scalar(t, admin, "SELECT string_agg(label, ' | ' ORDER BY id) FROM c"); got != "Alice: a | Bob: b" {
		t.Fatalf("labels of the rows there: %q", got)
	}
}
