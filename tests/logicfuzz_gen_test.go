package tests

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
)

// The differential logic fuzzer's generator: a random schema of a parent,
// a child and a grandchild (with a second foreign key from the child to the
// parent, NULLable keys, integers and decimals of several scales, a stored
// generated column, grandchildren in a tree of their own), a random set of rules from rules-api.md §2 over it,
// the same logic as PL/pgSQL triggers (the oracle), and random statements.
//
// The oracle recomputes every derived column from its definition after each
// statement, to a fixed point, and checks every constraint: correct rules
// kept by adjustment must always agree with it. Copies are history, so the
// oracle takes them as pgrules does, in a BEFORE ROW trigger on insert and
// when the foreign key changes.

// fzCase is one generated schema and rule set.
type fzCase struct {
	seed    uint64
	schema  string
	rules   []string // pgrules definitions, in order
	oracle  string   // the triggers of the twin database
	derived []fzDerivation
	checks  []fzCheck
	// twoKeys is set when the child has a second foreign key to the parent.
	twoKeys bool
	// accumulates: c.acc is an accumulating formula; commitCheck: c has a
	// commit constraint.
	accumulates, commitCheck bool
	// onDelete is the action of the child's foreign key to the parent.
	onDelete string
	// tree is set when g references itself (up_id): g.sub sums its
	// children, maybe through a formula reading the parent row.
	tree bool
	// cols are the columns a statement may write, by table.
	cols map[string][]fzColumn
}

// fzDerivation is a derived column: its pgrules definition and its value as
// SQL over the row t of its table.
type fzDerivation struct {
	table, column, typ string
	define             string
	sql                string
}

// fzCheck is a constraint: its table and its condition as SQL over t. A
// comparison with NULL is false in rules (not NULL as in SQL), so a
// constraint comparing a NULL fails: the SQL says so with coalesce.
type fzCheck struct {
	table, name, sql string
}

// fzColumn is a column statements write, with how to make its values.
type fzColumn struct {
	name  string
	value func(r *rand.Rand) string
	// insertOnly: an accumulating formula's column, which a client may
	// give on insert only.
	insertOnly bool
}

// Value makers. Each may give NULL where the column allows it.
func fzInt(lo, hi int, nulls bool) func(*rand.Rand) string {
	return func(r *rand.Rand) string {
		if nulls && r.IntN(8) == 0 {
			return "NULL"
		}
		return strconv.Itoa(lo + r.IntN(hi-lo+1))
	}
}

func fzDecimal(max, scale int, nulls bool) func(*rand.Rand) string {
	return func(r *rand.Rand) string {
		if nulls && r.IntN(8) == 0 {
			return "NULL"
		}
		unit := 1
		for range scale {
			unit *= 10
		}
		v := r.IntN(max*unit + 1)
		if r.IntN(6) == 0 {
			v = -v
		}
		s := fmt.Sprintf("%d.%0*d", v/unit, scale, abs(v%unit))
		if v < 0 && v/unit == 0 {
			s = "-" + s
		}
		return s
	}
}

// fzOneOf gives one of the literals.
func fzOneOf(literals ...string) func(*rand.Rand) string {
	return func(r *rand.Rand) string { return pick(r, literals...) }
}

func fzBool(r *rand.Rand) string {
	switch r.IntN(5) {
	case 0:
		return "NULL"
	case 1, 2:
		return "true"
	}
	return "false"
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// pick returns one of the options.
func pick[T any](r *rand.Rand, options ...T) T { return options[r.IntN(len(options))] }

// fzGenerate makes a case from a seed.
func fzGenerate(seed uint64) *fzCase {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	fc := &fzCase{seed: seed, twoKeys: r.IntN(3) == 0, onDelete: pick(r, "CASCADE", "SET NULL", "NO ACTION"), tree: r.IntN(3) == 0}
	generated := r.IntN(2) == 0
	var b strings.Builder
	b.WriteString(`CREATE TABLE p (id int PRIMARY KEY, a int, n numeric(12,2), lim numeric(12,2) NOT NULL DEFAULT 500,
  d_sum numeric(14,2), d_cnt int, d_ext numeric(12,3), d_deep numeric(16,2), d_two int, e numeric(16,2));
`)
	fmt.Fprintf(&b, `CREATE TABLE c (id int PRIMARY KEY, p_id int REFERENCES p ON DELETE %s, %s
  q int, price numeric(10,2), x numeric(12,3), flag boolean, w int,
  cp numeric(12,2), f1 numeric(14,2), f2 numeric(16,4), f3 int, s numeric(14,2), k int, acc int DEFAULT 100,
  tag varchar(3), bits bit(4)%s);
`, fc.onDelete, map[bool]string{true: "p2_id int REFERENCES p ON DELETE SET NULL,", false: ""}[fc.twoKeys],
		map[bool]string{true: ", gen int GENERATED ALWAYS AS (coalesce(q, 0) * 2) STORED", false: ""}[generated])
	b.WriteString("CREATE TABLE g (id int PRIMARY KEY, c_id int REFERENCES c ON DELETE CASCADE, v numeric(10,2), w int")
	if fc.tree {
		fmt.Fprintf(&b, ",\n  up_id int REFERENCES g ON DELETE %s, gf numeric(14,2), sub numeric(14,2)", pick(r, "CASCADE", "SET NULL"))
	}
	b.WriteString(");\n")
	fc.schema = b.String()
	fc.cols = map[string][]fzColumn{
		"p": {{"a", fzInt(-3, 9, true), false}, {"n", fzDecimal(50, 2, true), false}, {"lim", fzDecimal(900, 2, false), false}},
		"c": {{"q", fzInt(-2, 12, true), false}, {"price", fzDecimal(40, 2, true), false}, {"x", fzDecimal(9, 3, true), false},
			{"flag", fzBool, false}, {"w", fzInt(0, 5, true), false},
			// Values of types with a length, cast without it on their way
			// (sqltext.ValueType). Only values that fit: one that does not
			// is refused by both, but PostgreSQL refuses a constant when it
			// plans the statement, before a duplicate key of an earlier
			// row and even when an UPDATE finds no row, and pgrules for
			// the rows it writes (docs/writes.md); TestLengthTypes holds
			// the refusals.
			{"tag", fzOneOf("'ab'", "'abc'", "''", "'a'"), false},
			{"bits", fzOneOf("B'0101'", "B'1100'", "X'A'", "NULL"), false}},
		"g": {{"v", fzDecimal(30, 2, true), false}, {"w", fzInt(0, 5, true), false}},
	}
	parentOf := func(col string) string {
		return fmt.Sprintf("(SELECT pp.%s FROM p pp WHERE pp.id = t.p_id)", col)
	}
	// What the child's rules read of the row: plain columns, and the
	// generated one.
	plain := []string{"q", "price", "x"}
	if generated {
		plain = append(plain, "gen")
	}
	add := func(d fzDerivation) { fc.derived = append(fc.derived, d) }
	hasCopy := r.IntN(2) == 0
	if hasCopy {
		fc.rules = append(fc.rules, "SELECT pgrules.copy('c.cp', 'p.n', via => 'c_p_id_fkey')")
	}
	// Aggregates of the grandchild into the child.
	gFilter, gFilterSQL := "", "true"
	if r.IntN(2) == 0 {
		gFilter, gFilterSQL = ", 'row.w > 2'", "ch.w > 2"
	}
	hasS := r.IntN(3) > 0
	if hasS {
		add(fzDerivation{"c", "s", "numeric(14,2)", "SELECT pgrules.sum('c.s', 'g.v'" + gFilter + ")",
			fmt.Sprintf("(SELECT coalesce(sum(ch.v), 0) FROM g ch WHERE ch.c_id = t.id AND %s)", gFilterSQL)})
		plain = append(plain, "s")
	}
	if r.IntN(2) == 0 {
		agg := pick(r, "count", "max")
		if agg == "count" {
			add(fzDerivation{"c", "k", "int", "SELECT pgrules.count('c.k', 'g'" + gFilter + ")",
				fmt.Sprintf("(SELECT count(*) FROM g ch WHERE ch.c_id = t.id AND %s)", gFilterSQL)})
		} else {
			add(fzDerivation{"c", "k", "int", "SELECT pgrules.max('c.k', 'g.w')",
				"(SELECT max(ch.w) FROM g ch WHERE ch.c_id = t.id)"})
		}
	}
	// Formulas of the child: f1 from the row (and maybe the parent, the
	// copy), f2 from f1, f3 an integer.
	f1 := pick(r,
		[2]string{"row.q * row.price", "t.q * t.price"},
		[2]string{"row.q * row.x", "t.q * t.x"},
		[2]string{"row.price + row.x * 2", "t.price + t.x * 2"},
		[2]string{"(row.price ?? 0) - row.q", "coalesce(t.price, 0) - t.q"},
		[2]string{"row.price * (row.p?.a ?? 1)", "t.price * coalesce(" + parentOf("a") + ", 1)"},
		[2]string{"row.x / 4 + row.q", "t.x / 4 + t.q"},
	)
	if hasCopy && r.IntN(2) == 0 {
		f1 = [2]string{"row.q * row.cp", "t.q * t.cp"}
	}
	if hasS && r.IntN(3) == 0 {
		f1 = [2]string{"row.s + (row.price ?? 0)", "t.s + coalesce(t.price, 0)"}
	}
	if generated && r.IntN(3) == 0 {
		f1 = [2]string{"row.gen * row.price", "t.gen * t.price"}
	}
	hasF1 := r.IntN(4) > 0
	if hasF1 {
		add(fzDerivation{"c", "f1", "numeric(14,2)", fmt.Sprintf("SELECT pgrules.formula('c.f1', '%s')", f1[0]), f1[1]})
		plain = append(plain, "f1")
		if r.IntN(2) == 0 {
			f2 := pick(r, [2]string{"row.f1 * 3", "t.f1 * 3"}, [2]string{"row.f1 / 8", "t.f1 / 8"}, [2]string{"row.f1 - row.x", "t.f1 - t.x"})
			add(fzDerivation{"c", "f2", "numeric(16,4)", fmt.Sprintf("SELECT pgrules.formula('c.f2', '%s')", f2[0]), f2[1]})
			plain = append(plain, "f2")
		}
	}
	if r.IntN(2) == 0 {
		add(fzDerivation{"c", "f3", "int", "SELECT pgrules.formula('c.f3', 'row.q * 3 - (row.w ?? 0)')", "t.q * 3 - coalesce(t.w, 0)"})
	}
	// Aggregates of the child into the parent: sums only of columns of
	// scale 2, which the parent's numeric(14,2) holds without loss.
	numeric := slices.DeleteFunc(slices.Clone(plain), func(c string) bool { return c != "price" && c != "s" && c != "f1" })
	cFilter, cFilterSQL := "", "true"
	switch r.IntN(3) {
	case 0:
		cFilter, cFilterSQL = ", 'not row.flag'", "NOT ch.flag"
	case 1:
		cFilter, cFilterSQL = ", 'row.q > 3'", "ch.q > 3"
	}
	if len(numeric) > 0 && r.IntN(4) > 0 {
		col := pick(r, numeric...)
		add(fzDerivation{"p", "d_sum", "numeric(14,2)", fmt.Sprintf("SELECT pgrules.sum('p.d_sum', 'c.%s'%s, via => 'c_p_id_fkey')", col, cFilter),
			fmt.Sprintf("(SELECT coalesce(sum(ch.%s), 0) FROM c ch WHERE ch.p_id = t.id AND %s)", col, cFilterSQL)})
		if r.IntN(2) == 0 {
			fc.checks = append(fc.checks, fzCheck{"p", "p_limit", "coalesce(t.d_sum <= t.lim, false)"})
			fc.rules = append(fc.rules, "SELECT pgrules.constraint('p', 'row.d_sum <= row.lim', 'p {row.id}: {row.d_sum} over {row.lim}', name => 'p_limit')")
		}
	}
	if r.IntN(2) == 0 {
		add(fzDerivation{"p", "d_cnt", "int", fmt.Sprintf("SELECT pgrules.count('p.d_cnt', 'c'%s, via => 'c_p_id_fkey')", cFilter),
			fmt.Sprintf("(SELECT count(*) FROM c ch WHERE ch.p_id = t.id AND %s)", cFilterSQL)})
	}
	if r.IntN(2) == 0 {
		agg, col := pick(r, "min", "max"), pick(r, "x", "price")
		add(fzDerivation{"p", "d_ext", "numeric(12,3)", fmt.Sprintf("SELECT pgrules.%s('p.d_ext', 'c.%s', via => 'c_p_id_fkey')", agg, col),
			fmt.Sprintf("(SELECT %s(ch.%s) FROM c ch WHERE ch.p_id = t.id)", agg, col)})
	}
	if hasS && r.IntN(2) == 0 {
		add(fzDerivation{"p", "d_deep", "numeric(16,2)", "SELECT pgrules.sum('p.d_deep', 'c.s', via => 'c_p_id_fkey')",
			"(SELECT coalesce(sum(ch.s), 0) FROM c ch WHERE ch.p_id = t.id)"})
	}
	if fc.twoKeys && r.IntN(3) > 0 {
		add(fzDerivation{"p", "d_two", "int", "SELECT pgrules.count('p.d_two', 'c', via => 'c_p2_id_fkey')",
			"(SELECT count(*) FROM c ch WHERE ch.p2_id = t.id)"})
	}
	if r.IntN(3) == 0 {
		add(fzDerivation{"p", "e", "numeric(16,2)", "SELECT pgrules.formula('p.e', '(row.d_sum ?? 0) + (row.n ?? 0) * 2')",
			"coalesce(t.d_sum, 0) + coalesce(t.n, 0) * 2"})
	}
	if fc.tree {
		// A row of the tree may be the parent of rows the same statement
		// writes, and its sum may follow a child's formula reading it.
		summed := "v"
		if r.IntN(2) == 0 {
			summed = "gf"
			add(fzDerivation{"g", "gf", "numeric(14,2)", "SELECT pgrules.formula('g.gf', 'row.v * (row.up?.w ?? 1)')",
				"t.v * coalesce((SELECT pp.w FROM g pp WHERE pp.id = t.up_id), 1)"})
		}
		add(fzDerivation{"g", "sub", "numeric(14,2)", fmt.Sprintf("SELECT pgrules.sum('g.sub', 'g.%s', via => 'g_up_id_fkey')", summed),
			fmt.Sprintf("(SELECT coalesce(sum(ch.%s), 0) FROM g ch WHERE ch.up_id = t.id)", summed)})
	}
	if r.IntN(3) == 0 {
		// Stock kept by what ships (rules-api.md §8): the client gives it
		// on insert, every change of q takes from it.
		fc.accumulates = true
		fc.cols["c"] = append(fc.cols["c"], fzColumn{"acc", fzInt(0, 50, false), true})
		fc.rules = append(fc.rules, "SELECT pgrules.formula('c.acc', 'old == nil ? row.acc : row.acc - ((row.q ?? 0) - (old.q ?? 0))')")
	}
	if r.IntN(4) == 0 {
		// Checked at commit, of the rows the transaction touched; q is
		// only ever set by the client, so every row holds it.
		fc.commitCheck = true
		fc.rules = append(fc.rules, "SELECT pgrules.commit_constraint('c', 'row.q != 7', 'q is 7', name => 'c_not_seven')")
	}
	if r.IntN(3) == 0 {
		fc.checks = append(fc.checks, fzCheck{"c", "c_small", "coalesce(t.q < 11, false)"})
		fc.rules = append(fc.rules, "SELECT pgrules.constraint('c', 'row.q < 11', 'q {row.q} too big', name => 'c_small')")
	}
	for _, d := range fc.derived {
		fc.rules = append(fc.rules, d.define)
	}
	// Derivations of columns that no rule derives keep their NULLs: the
	// oracle recomputes only the derived ones.
	fc.oracle = fc.oracleSQL(hasCopy)
	return fc
}

// oracleSQL is the rule set as PL/pgSQL triggers: a copy on insert and on a
// change of the foreign key; after each statement of any of the tables,
// every derivation recomputed until nothing changes, then every constraint
// checked (23514, named as the rule).
func (fc *fzCase) oracleSQL(hasCopy bool) string {
	var b strings.Builder
	if fc.accumulates {
		b.WriteString(`CREATE FUNCTION fz_acc() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.acc := OLD.acc - (coalesce(NEW.q, 0) - coalesce(OLD.q, 0));
  RETURN NEW;
END $$;
CREATE TRIGGER fz_acc BEFORE UPDATE ON c FOR EACH ROW EXECUTE FUNCTION fz_acc();
`)
	}
	if fc.commitCheck {
		b.WriteString(`CREATE FUNCTION fz_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM c WHERE id = NEW.id AND q IS NOT DISTINCT FROM 7) THEN
    RAISE EXCEPTION USING ERRCODE = '23514', CONSTRAINT = 'c_not_seven', MESSAGE = 'q is 7';
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER fz_commit AFTER INSERT OR UPDATE ON c DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION fz_commit();
`)
	}
	if hasCopy {
		b.WriteString(`CREATE FUNCTION fz_copy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' OR NEW.p_id IS DISTINCT FROM OLD.p_id THEN
    NEW.cp := (SELECT n FROM p WHERE id = NEW.p_id);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER fz_copy BEFORE INSERT OR UPDATE ON c FOR EACH ROW EXECUTE FUNCTION fz_copy();
`)
	}
	b.WriteString("CREATE FUNCTION fz_settle() RETURNS trigger LANGUAGE plpgsql AS $$\nDECLARE\n  changed boolean := true;\n  n int;\nBEGIN\n")
	b.WriteString("  IF pg_trigger_depth() > 1 THEN RETURN NULL; END IF;\n  WHILE changed LOOP\n    changed := false;\n")
	for _, d := range fc.derived {
		v := fmt.Sprintf("(%s)::%s", d.sql, d.typ)
		fmt.Fprintf(&b, "    UPDATE %s t SET %s = %s WHERE t.%s IS DISTINCT FROM %s;\n    GET DIAGNOSTICS n = ROW_COUNT;\n    changed := changed OR n > 0;\n",
			d.table, d.column, v, d.column, v)
	}
	b.WriteString("  END LOOP;\n")
	for _, c := range fc.checks {
		fmt.Fprintf(&b, "  IF EXISTS (SELECT 1 FROM %s t WHERE NOT (%s)) THEN\n    RAISE EXCEPTION USING ERRCODE = '23514', CONSTRAINT = '%s', MESSAGE = '%s';\n  END IF;\n",
			c.table, c.sql, c.name, c.name)
	}
	b.WriteString("  RETURN NULL;\nEND $$;\n")
	for _, t := range []string{"p", "c", "g"} {
		fmt.Fprintf(&b, "CREATE TRIGGER fz_settle AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH STATEMENT EXECUTE FUNCTION fz_settle();\n", t)
	}
	return b.String()
}

// fzStatement is one generated statement, with its parameters inlined in
// text (for the simple protocol) and as $n (for the extended one).
type fzStatement struct {
	text   string // values inlined
	params string // with $1, $2, ...
	args   []string
	// copy and copyData, for an INSERT without ON CONFLICT or RETURNING:
	// the same rows as a COPY FROM STDIN in CSV.
	copy, copyData string
}

// fzBuilder writes a statement both ways at once.
type fzBuilder struct {
	text, params strings.Builder
	args         []string
}

func (b *fzBuilder) sql(s string) *fzBuilder {
	b.text.WriteString(s)
	b.params.WriteString(s)
	return b
}

// val writes a value: inlined, and as a parameter (NULL stays inline).
func (b *fzBuilder) val(v string) *fzBuilder {
	b.text.WriteString(v)
	if v == "NULL" {
		b.params.WriteString(v)
		return b
	}
	b.args = append(b.args, fzText(v))
	fmt.Fprintf(&b.params, "$%d", len(b.args))
	return b
}

// fzText is a literal's value as a parameter's or a COPY field's text:
// a string without its quotes, a bit string as bit input reads it
// (B'01' as 01, X'A' as xA); numbers and booleans as they are.
func fzText(v string) string {
	switch {
	case strings.HasPrefix(v, "'"):
		return strings.ReplaceAll(v[1:len(v)-1], "''", "'")
	case strings.HasPrefix(v, "B'"):
		return v[2 : len(v)-1]
	case strings.HasPrefix(v, "X'"):
		return "x" + v[2:len(v)-1]
	}
	return v
}

func (b *fzBuilder) done() fzStatement {
	return fzStatement{text: b.text.String(), params: b.params.String(), args: b.args}
}

// fzKeys are the primary keys statements use: few, so that they meet.
const fzKeys = 6

// statement makes a random statement on the case's tables.
func (fc *fzCase) statement(r *rand.Rand) fzStatement {
	b := &fzBuilder{}
	key := func() string { return strconv.Itoa(1 + r.IntN(fzKeys)) }
	ref := func() string {
		if r.IntN(8) == 0 {
			return "NULL"
		}
		return key()
	}
	returning := func() {
		if r.IntN(4) == 0 {
			b.sql(" RETURNING *")
		}
	}
	table := pick(r, "p", "c", "c", "c", "g", "g")
	cols := fc.cols[table]
	switch r.IntN(10) {
	case 0, 1, 2, 3: // insert of one to three rows
		names := []string{"id"}
		switch table {
		case "c":
			names = append(names, "p_id")
			if fc.twoKeys {
				names = append(names, "p2_id")
			}
		case "g":
			names = append(names, "c_id")
			if fc.tree {
				names = append(names, "up_id")
			}
		}
		chosen := slices.DeleteFunc(slices.Clone(cols), func(fzColumn) bool { return r.IntN(4) == 0 })
		for _, c := range chosen {
			names = append(names, c.name)
		}
		b.sql("INSERT INTO " + table + " (" + strings.Join(names, ", ") + ") VALUES ")
		rows := 1 + r.IntN(3)
		used := map[string]bool{}
		var csv strings.Builder
		field := func(v string) {
			b.sql(", ").val(v)
			if v != "NULL" { // an unquoted empty field is CSV's NULL
				if t := fzText(v); t == "" {
					csv.WriteString(`""`)
				} else {
					csv.WriteString(t)
				}
			}
		}
		for i := range rows {
			if i > 0 {
				b.sql(", ")
				csv.WriteString("\n")
			}
			id := key()
			for used[id] {
				id = strconv.Itoa(1 + r.IntN(fzKeys*2))
			}
			used[id] = true
			b.sql("(").val(id)
			csv.WriteString(id)
			for range len(names) - 1 - len(chosen) {
				csv.WriteString(",")
				field(ref())
			}
			for _, c := range chosen {
				csv.WriteString(",")
				field(c.value(r))
			}
			b.sql(")")
		}
		plain := r.IntN(5) != 0
		if !plain {
			b.sql(" ON CONFLICT (id) DO NOTHING")
		}
		returning()
		if st := b.done(); plain && !strings.Contains(st.text, "RETURNING") {
			st.copy = "COPY " + table + " (" + strings.Join(names, ", ") + ") FROM STDIN WITH (FORMAT csv)"
			st.copyData = csv.String() + "\n"
			return st
		}
	case 4, 5, 6, 7: // update of some columns, or of a key
		b.sql("UPDATE " + table + " SET ")
		switch {
		case table == "c" && r.IntN(4) == 0:
			k := pick(r, "p_id", "p_id", "p2_id")
			if k == "p2_id" && !fc.twoKeys {
				k = "p_id"
			}
			b.sql(k + " = ").val(ref())
			if fc.twoKeys && r.IntN(2) == 0 {
				b.sql(", p2_id = ").val(ref())
			}
		case table == "g" && r.IntN(4) == 0:
			k := "c_id"
			if fc.tree && r.IntN(2) == 0 {
				k = "up_id"
			}
			b.sql(k + " = ").val(ref())
		default:
			settable := slices.DeleteFunc(slices.Clone(cols), func(c fzColumn) bool { return c.insertOnly })
			for i, j := range r.Perm(len(settable))[:1+r.IntN(2)] {
				c := settable[j]
				if i > 0 {
					b.sql(", ")
				}
				if c.name == "q" && r.IntN(2) == 0 {
					b.sql("q = q + ").val(fzInt(-2, 3, false)(r))
					continue
				}
				b.sql(c.name + " = ").val(c.value(r))
			}
		}
		switch r.IntN(4) {
		case 0:
			// every row
		case 1:
			b.sql(" WHERE id <= ").val(key())
		default:
			b.sql(" WHERE id = ").val(key())
		}
		returning()
	default: // delete
		b.sql("DELETE FROM " + table + " WHERE id = ").val(key())
		if r.IntN(3) == 0 {
			b.sql(" OR id = ").val(key())
		}
		returning()
	}
	return b.done()
}
