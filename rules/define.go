package rules

import (
	"context"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"

	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/sqlparse"
	"github.com/pgrules/pgrules/stmt"
)

// define runs a statement that calls into the pgrules schema — a rule
// definition, a listing, an explain — inside a savepoint, then compiles the
// rules as the transaction now sees them. A definition that does not
// compile is undone and fails the statement; new derivations get their
// values on the existing rows.
func (s *session) define(ctx context.Context, conn stmt.Conn, c *compiled, st stmt.Statement) (*stmt.Result, error) {
	ownTx := conn.TxStatus() == stmt.TxIdle
	if ownTx {
		if _, err := conn.Simple(ctx, "BEGIN"); err != nil {
			return nil, err
		}
	}
	if ownTx || s.computed == nil {
		s.computed = make(map[string]string)
	}
	res, txRules, err := s.defineIn(ctx, conn, c, st)
	if ownTx {
		end := "COMMIT"
		if err != nil {
			end = "ROLLBACK"
		}
		if _, cerr := conn.Simple(ctx, end); cerr != nil && err == nil {
			return nil, cerr
		}
		if err == nil {
			s.refresh(ctx)
		}
	} else {
		s.tx.defined = true
		if txRules != nil {
			// Every write after the definition in this transaction runs
			// the rules it sees (rules-api.md §7).
			s.tx.rules = txRules
		}
	}
	return res, err
}

// defineIn runs the statement of define in the open transaction, and
// returns the rules as the transaction now sees them.
func (s *session) defineIn(ctx context.Context, conn stmt.Conn, c *compiled, st stmt.Statement) (*stmt.Result, *compiled, error) {
	if sqlparse.ContainsFold(st.SQL, "pgrules.explain") && c.set != nil {
		doc, err := json.Marshal(c.set.ExplainAll())
		if err != nil {
			return nil, nil, pgerr.New(pgerr.InternalError, "explain: %w", err)
		}
		if _, err := conn.Query(ctx, "SELECT set_config('pgrules.explain', $1, true)", string(doc)); err != nil {
			return nil, nil, err
		}
	}
	if err := s.maintenance(ctx, conn, st); err != nil {
		return nil, nil, err
	}
	if _, err := conn.Simple(ctx, "SAVEPOINT pgrules_define"); err != nil {
		return nil, nil, err
	}
	res, err := conn.Exec(ctx, st)
	if err != nil {
		return nil, nil, err
	}
	// A role that may not read pgrules.rule cannot have defined rules
	// with the definition functions, which read it; it may still list
	// pgrules.rules, or call explain, verify and rebuild.
	rows, err := conn.Query(ctx, "SELECT has_table_privilege('pgrules.rule', 'SELECT')")
	if err == nil && string(rows[0][0]) != "t" {
		_, err = conn.Simple(ctx, "RELEASE SAVEPOINT pgrules_define")
		return res, nil, err
	}
	if err != nil {
		return nil, nil, err
	}
	txRules, err := s.loadTx(ctx, conn)
	if err == nil {
		if perr := s.firstError(txRules.snap, txRules.set.Set); perr != nil {
			err = perr
		} else {
			err = s.computeExisting(ctx, conn, txRules.snap, txRules.set.Set)
		}
	}
	if err != nil {
		conn.Simple(ctx, "ROLLBACK TO SAVEPOINT pgrules_define; RELEASE SAVEPOINT pgrules_define")
		return nil, nil, failTx(ctx, conn, asPgError(err))
	}
	if _, err := conn.Simple(ctx, "RELEASE SAVEPOINT pgrules_define"); err != nil {
		return nil, nil, err
	}
	return res, txRules, nil
}

// maintenanceCall finds pgrules.verify(...) or pgrules.rebuild(...) and
// its argument: a string literal, a parameter, or nothing (every table).
var maintenanceCall = regexp.MustCompile(`(?i)pgrules\.(verify|rebuild)\s*\(\s*(?:'((?:[^']|'')*)'|\$(\d+)|(null))?\s*\)`)

// maintenance answers pgrules.verify and pgrules.rebuild in the client's
// transaction, before its statement reads the answer: verify's drifting
// rows, rebuild's corrections, handed over in transaction-local settings.
func (s *session) maintenance(ctx context.Context, conn stmt.Conn, st stmt.Statement) error {
	calls := maintenanceCall.FindAllStringSubmatch(st.SQL, -1)
	if len(calls) == 0 {
		if sqlparse.ContainsFold(st.SQL, "pgrules.verify") || sqlparse.ContainsFold(st.SQL, "pgrules.rebuild") {
			return failTx(ctx, conn, pgerr.New(pgerr.FeatureNotSupported, "pgrules.verify and pgrules.rebuild take a table name as a literal or a parameter, or nothing"))
		}
		return nil
	}
	cur, err := s.loadTx(ctx, conn)
	if err != nil {
		return err
	}
	snap, set := cur.snap, cur.set
	for _, call := range calls {
		name := strings.ReplaceAll(call[2], "''", "'")
		if call[3] != "" {
			i, _ := strconv.Atoi(call[3])
			if i < 1 || i > len(st.Params) {
				return failTx(ctx, conn, pgerr.New(pgerr.ProtocolViolation, "pgrules.%s: no parameter $%d", call[1], i))
			}
			name = string(st.Params[i-1])
		}
		table := ""
		if name != "" {
			t := snap.Lookup(name)
			if t == nil {
				return failTx(ctx, conn, pgerr.New(pgerr.UndefinedTable, "pgrules.%s: table %q does not exist", call[1], name))
			}
			table = t.QualifiedName()
		}
		var answer any
		if strings.EqualFold(call[1], "verify") {
			answer, err = Verify(ctx, conn, snap, set.Set, table)
		} else {
			answer, err = Rebuild(ctx, conn, snap, set.Set, table)
		}
		if err != nil {
			// A failure of our own SQL (not the server's) must fail the
			// transaction too; one more error in a failed one is harmless.
			return failTx(ctx, conn, asPgError(err))
		}
		doc, err := json.Marshal(answer)
		if err != nil {
			return pgerr.New(pgerr.InternalError, "%s: %w", call[1], err)
		}
		if string(doc) == "null" {
			doc = []byte("[]")
		}
		if _, err := conn.Query(ctx, "SELECT set_config($1, $2, true)", "pgrules."+strings.ToLower(call[1]), string(doc)); err != nil {
			return err
		}
	}
	return nil
}
