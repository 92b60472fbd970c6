package rules

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/pgrules/pgrules/sqlparse"
	"github.com/pgrules/pgrules/stmt"
)

// An unqualified table name in a client's statement means what the server
// makes of it in that session (rules-api.md: unqualified names follow the
// session's search_path), which is not what it means on the proxy's
// catalog connection when the session has SET search_path, logs in as a
// role with a search_path of its own, or has a temporary table of the
// name. The engine reads the session's path before the session's first
// write on a table with rules, and again before each write once the
// session has sent anything that may change it; until it has read it, it
// intercepts every write whose name a table with rules has in any schema,
// and relays those that turn out to reach another table.

// sessionPath is where a session's unqualified names resolve.
type sessionPath struct {
	// schemas are current_schemas(true) without pg_catalog, which holds
	// no table with rules.
	schemas []string
	// temp are the names of the session's temporary relations: they come
	// first, before any table of the same name with rules.
	temp []string
}

// pathQuery reads a session's path; pg_my_temp_schema() is 0 when the
// session has no temporary schema.
const pathQuery = `SELECT array_to_json(current_schemas(true))::text,
  coalesce((SELECT json_agg(nspname)::text FROM pg_namespace WHERE oid = pg_my_temp_schema()), '[]'),
  coalesce((SELECT json_agg(relname)::text FROM pg_class WHERE relnamespace = pg_my_temp_schema()), '[]')`

// readPath reads the session's path, as one round trip of the engine.
func (s *session) readPath(ctx context.Context, conn stmt.Conn) error {
	rows, err := conn.Query(ctx, pathQuery)
	if err != nil {
		return err
	}
	var schemas, tempSchema, temp []string
	if len(rows) != 1 || len(rows[0]) != 3 ||
		json.Unmarshal(rows[0][0], &schemas) != nil || json.Unmarshal(rows[0][1], &tempSchema) != nil || json.Unmarshal(rows[0][2], &temp) != nil {
		return failTx(ctx, conn, pgerr.New(pgerr.InternalError, "pgrules could not read the session's search_path"))
	}
	p := &sessionPath{schemas: slices.DeleteFunc(schemas, func(n string) bool {
		// An empty temporary schema hides nothing.
		return n == "pg_catalog" || len(temp) == 0 && slices.Contains(tempSchema, n)
	})}
	if len(temp) > 0 && len(tempSchema) == 1 {
		for _, n := range temp {
			p.temp = append(p.temp, tempSchema[0]+"."+n)
		}
	}
	s.path = p
	return nil
}

// pathSure reports whether the session's path is known for its next
// statement.
func (s *session) pathSure() bool { return s.path != nil && !s.pathWatch }

// current is the compiled state of the session's database, seen through
// the session's path once it is known.
func (s *session) current(ctx context.Context) *compiled {
	c := s.tx.rules
	if c == nil {
		c = s.db.current(ctx)
	}
	if s.path == nil {
		return c
	}
	return c.view(s.path)
}

// withPath returns c as it resolves unqualified names in this session,
// reading the session's search_path first when it may have changed;
// reread says whether it was read.
func (s *session) withPath(ctx context.Context, conn stmt.Conn, c *compiled) (_ *compiled, reread bool, err error) {
	if s.pathSure() || c.err != nil {
		return c, false, nil
	}
	if err := s.readPath(ctx, conn); err != nil {
		return nil, false, err
	}
	return s.current(ctx), true, nil
}

// watchPath notes a statement text that may change what the session's
// unqualified names resolve to: from then on the path is read again before
// each write (a ROLLBACK, which says nothing of it, may undo a SET).
func (s *session) watchPath(sql string) {
	if s.pathWatch {
		return
	}
	kw := sqlparse.LeadingKeyword(sql)
	is := func(k string) bool { return strings.EqualFold(kw, k) }
	switch {
	case sqlparse.ContainsFold(sql, "search_path"), sqlparse.ContainsFold(sql, "set_config"):
	case is("DISCARD"), is("RESET"):
	case is("SET") && (sqlparse.ContainsFold(sql, "role") || sqlparse.ContainsFold(sql, "authorization")):
	case (is("CREATE") || is("SELECT")) && sqlparse.ContainsFold(sql, "temp"):
	case (is("DROP") || is("ALTER")) && s.path != nil && len(s.path.temp) > 0:
	default:
		return
	}
	s.pathWatch = true
}

// mayWriteRuled reports whether a plan, which does not write a table with
// rules where its names resolve on the catalog's path, might in a session
// whose path is not known: an unqualified name that some table with rules
// has in any schema.
func (c *compiled) mayWriteRuled(p *plan) bool {
	if c.err != nil {
		return false
	}
	for _, st := range p.parts {
		for _, w := range st.Writes {
			if w.Schema != "" {
				continue
			}
			for _, t := range c.snap.Tables {
				if t.Name == w.Table && c.writesRuled(sqlparse.Write{Schema: t.Schema, Table: t.Name, Verb: w.Verb}) {
					return true
				}
			}
		}
	}
	return false
}

// viewsMax bounds the views a compiled state keeps; beyond it a view is
// built for each use.
const viewsMax = 64

// views are the compiled states of a database seen through the paths of
// its sessions.
type views struct {
	mu sync.Mutex
	m  map[string]*compiled // by pathKey
}

func (p *sessionPath) key() string {
	return strings.Join(p.schemas, "\x00") + "\x01" + strings.Join(p.temp, "\x00")
}

// view returns c seen through path: the same rules, the catalog's tables
// plus the session's temporary ones, unqualified names resolved in path,
// and plans of its own. It is c itself when path resolves as c's does.
func (c *compiled) view(path *sessionPath) *compiled {
	if c.base != nil {
		c = c.base
	}
	if c.err != nil || len(path.temp) == 0 && slices.Equal(path.schemas, c.snap.SearchPath) {
		return c
	}
	key := path.key()
	c.views.mu.Lock()
	defer c.views.mu.Unlock()
	if v := c.views.m[key]; v != nil {
		return v
	}
	snap := *c.snap
	snap.SearchPath = path.schemas
	if len(path.temp) > 0 {
		snap.Tables = maps.Clone(c.snap.Tables)
		for _, q := range path.temp {
			schema, name, _ := strings.Cut(q, ".")
			snap.Tables[q] = &catalog.Table{Schema: schema, Name: name}
		}
	}
	v := &compiled{src: c.src, srcErr: c.srcErr, snap: &snap, set: c.set, base: c}
	if c.views.m == nil {
		c.views.m = make(map[string]*compiled)
	}
	if len(c.views.m) < viewsMax {
		c.views.m[key] = v
	}
	return v
}
