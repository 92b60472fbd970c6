package sqlparse

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pgrules/pgrules/stmt"
)

// Statement is one statement of a text.
type Statement struct {
	SQL string
	// Writes are the tables the statement inserts into, updates, deletes
	// from, merges into, copies into or truncates.
	Writes []Write
	// TxControl marks BEGIN, COMMIT, ROLLBACK, SAVEPOINT, PREPARE
	// TRANSACTION and the like; Tx says which.
	TxControl bool
	Tx        stmt.TxKind
	// Savepoint is the savepoint SAVEPOINT, RELEASE or ROLLBACK TO names.
	Savepoint string
	// DDL marks statements that change the schema.
	DDL bool
	// Tree is the statement's parse tree, for a caller that goes on to
	// analyse it; its locations are offsets in the whole text.
	Tree *Tree
}

// Write is one table a statement writes, and how.
type Write struct {
	// Schema is empty when the name is unqualified.
	Schema, Table string
	Verb          Verb
}

// Verb is the kind of write.
type Verb string

const (
	Insert   Verb = "INSERT"
	Update   Verb = "UPDATE"
	Delete   Verb = "DELETE"
	Merge    Verb = "MERGE"
	CopyFrom Verb = "COPY FROM"
	Truncate Verb = "TRUNCATE"
)

// Parse splits sql into its statements and tells what each does. A syntax
// error is returned as a *SyntaxError; the server will report it better,
// so callers usually let the text through to it. A text nested too deeply
// to parse safely gets a *pgerr.Error with StatementTooComplex (see the
// package's documentation), which callers must not let through: the
// server might run it without pgrules having seen what it writes.
func Parse(sql string) ([]Statement, error) {
	tree, err := parseTree(sql)
	if err != nil {
		return nil, err
	}
	out := make([]Statement, 0, len(tree.Stmts))
	for _, raw := range tree.Stmts {
		text := statementText(sql, raw)
		if strings.TrimSpace(text) == "" {
			continue
		}
		st := Statement{SQL: text, Tree: &Tree{node: raw.Stmt}}
		describe(&st, raw.Stmt)
		out = append(out, st)
	}
	return out, nil
}

// statementText cuts one statement out of the text, by the byte offsets
// the parser reports.
func statementText(sql string, raw *pg_query.RawStmt) string {
	start := int(raw.StmtLocation)
	end := len(sql)
	if raw.StmtLen > 0 {
		end = start + int(raw.StmtLen)
	}
	return strings.TrimSpace(sql[start:end])
}

func describe(st *Statement, n *pg_query.Node) {
	switch n := n.GetNode().(type) {
	case *pg_query.Node_InsertStmt:
		st.addWrite(n.InsertStmt.Relation, Insert)
		st.withClause(n.InsertStmt.WithClause)
	case *pg_query.Node_UpdateStmt:
		st.addWrite(n.UpdateStmt.Relation, Update)
		st.withClause(n.UpdateStmt.WithClause)
	case *pg_query.Node_DeleteStmt:
		st.addWrite(n.DeleteStmt.Relation, Delete)
		st.withClause(n.DeleteStmt.WithClause)
	case *pg_query.Node_MergeStmt:
		st.addWrite(n.MergeStmt.Relation, Merge)
		st.withClause(n.MergeStmt.WithClause)
	case *pg_query.Node_CopyStmt:
		if n.CopyStmt.IsFrom {
			st.addWrite(n.CopyStmt.Relation, CopyFrom)
		}
	case *pg_query.Node_TruncateStmt:
		for _, r := range n.TruncateStmt.Relations {
			st.addWrite(r.GetRangeVar(), Truncate)
		}
	case *pg_query.Node_SelectStmt:
		// PostgreSQL allows data-modifying statements only in the
		// top-level WITH.
		st.withClause(n.SelectStmt.WithClause)
	case *pg_query.Node_ExplainStmt:
		// EXPLAIN ANALYZE runs the statement.
		for _, o := range n.ExplainStmt.Options {
			if d := o.GetDefElem(); d != nil && d.Defname == "analyze" {
				describe(st, n.ExplainStmt.Query)
			}
		}
	case *pg_query.Node_TransactionStmt:
		st.TxControl = true
		st.Tx = txKind(n.TransactionStmt)
		st.Savepoint = n.TransactionStmt.SavepointName
	case *pg_query.Node_CreateStmt, *pg_query.Node_AlterTableStmt, *pg_query.Node_DropStmt,
		*pg_query.Node_RenameStmt, *pg_query.Node_IndexStmt, *pg_query.Node_CreateSchemaStmt,
		*pg_query.Node_CreateDomainStmt, *pg_query.Node_AlterDomainStmt, *pg_query.Node_CreateEnumStmt,
		*pg_query.Node_AlterEnumStmt, *pg_query.Node_CompositeTypeStmt, *pg_query.Node_CreateTableAsStmt,
		*pg_query.Node_AlterObjectSchemaStmt, *pg_query.Node_ViewStmt:
		st.DDL = true
	}
}

func (st *Statement) withClause(w *pg_query.WithClause) {
	if w == nil {
		return
	}
	for _, c := range w.Ctes {
		if cte := c.GetCommonTableExpr(); cte != nil {
			describe(st, cte.Ctequery)
		}
	}
}

func (st *Statement) addWrite(r *pg_query.RangeVar, v Verb) {
	if r == nil {
		return
	}
	st.Writes = append(st.Writes, Write{Schema: r.Schemaname, Table: r.Relname, Verb: v})
}

// LeadingKeyword returns the first word of sql as written, skipping
// whitespace, comments and opening parentheses: enough to tell, without
// parsing, that a statement cannot write. It does not allocate.
func LeadingKeyword(sql string) string {
	for i := 0; i < len(sql); {
		switch c := sql[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '(':
			i++
		case strings.HasPrefix(sql[i:], "--"):
			j := strings.IndexByte(sql[i:], '\n')
			if j < 0 {
				return ""
			}
			i += j + 1
		case strings.HasPrefix(sql[i:], "/*"):
			i += commentLength(sql[i:])
		default:
			j := i
			for j < len(sql) && isWordByte(sql[j]) {
				j++
			}
			return sql[i:j]
		}
	}
	return ""
}

// commentLength is the length of the block comment at the start of s;
// block comments nest in PostgreSQL.
func commentLength(s string) int {
	depth, i := 0, 0
	for i < len(s) {
		switch {
		case strings.HasPrefix(s[i:], "/*"):
			depth++
			i += 2
		case strings.HasPrefix(s[i:], "*/"):
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return i
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}

// writeKeywords begin the statements that can write a table.
var writeKeywords = []string{"INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "TRUNCATE", "WITH", "EXPLAIN"}

// MayWrite reports whether a statement text can write a table, from its
// first word: false for SELECT, SHOW, SET, BEGIN and the like. (SELECT ...
// INTO creates a table, which has no rules yet.) A text of several
// statements may write whatever its first word: anything but spaces and
// semicolons after a semicolon (a literal's, a comment) makes it true,
// which costs a parse, not a rule.
func MayWrite(sql string) bool {
	w := LeadingKeyword(sql)
	for _, k := range writeKeywords {
		if strings.EqualFold(w, k) {
			return true
		}
	}
	if i := strings.IndexByte(sql, ';'); i >= 0 {
		return strings.TrimLeft(sql[i:], "; \t\n\r\f") != ""
	}
	return false
}

// ContainsFold reports whether s contains the ASCII word sub in any case,
// without allocating. sub must be lower case.
func ContainsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		j := 0
		for j < len(sub) && lower(s[i+j]) == sub[j] {
			j++
		}
		if j == len(sub) {
			return true
		}
	}
	return false
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func txKind(ts *pg_query.TransactionStmt) stmt.TxKind {
	switch ts.Kind {
	case pg_query.TransactionStmtKind_TRANS_STMT_BEGIN, pg_query.TransactionStmtKind_TRANS_STMT_START:
		return stmt.TxBegin
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT:
		if ts.Chain {
			return stmt.TxCommitChain
		}
		return stmt.TxCommit
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK:
		if ts.Chain {
			return stmt.TxRollbackChain
		}
		return stmt.TxRollback
	case pg_query.TransactionStmtKind_TRANS_STMT_PREPARE:
		return stmt.TxPrepare
	case pg_query.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		return stmt.TxSavepoint
	case pg_query.TransactionStmtKind_TRANS_STMT_RELEASE:
		return stmt.TxRelease
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		return stmt.TxRollbackTo
	}
	return stmt.TxOther
}

// txKeywords begin the transaction-control statements.
var txKeywords = []string{"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "PREPARE", "SAVEPOINT", "RELEASE"}

// Tx tells what a statement text does to the transaction: TxNone unless it
// is one transaction-control statement. Only texts whose first word
// begins one are parsed.
func Tx(sql string) stmt.TxKind {
	w := LeadingKeyword(sql)
	found := false
	for _, k := range txKeywords {
		found = found || strings.EqualFold(w, k)
	}
	if !found {
		return stmt.TxNone
	}
	sts, err := Parse(sql)
	if err != nil || len(sts) != 1 {
		return stmt.TxNone
	}
	return sts[0].Tx
}
