package rules

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
)

// Every table with rules carries a guard in the database (rules-api.md §7,
// pgrules._guard in sql/functions.sql) that refuses any write the engine
// did not make. The engine's statements begin with a header that the
// guard reads through current_query():
//
//	/*pgrules <key> <table oid>:<version>[*] ... */
//
// key is the database's guard key, and each table with rules is named with
// the version of its rules this engine compiled, and a * when a foreign
// key's action may change its rows. A guard whose table is
// missing or has another version refuses the write as stale: the engine's
// rules are older (or newer) than those the transaction sees.

// headerPrefix begins every guard header; a client's text that begins
// with it is refused, so that only the engine presents one.
const headerPrefix = "/*pgrules "

// staleConstraint is the constraint name the guard's error carries when it
// refused an engine statement computed with other rules.
const staleConstraint = "pgrules_guard_stale"

// guardHeader builds the header of snap's guards with key; "" when the
// database has no guarded table, or the key could not be read.
func guardHeader(snap *catalog.Snapshot, key string) string {
	if key == "" {
		return ""
	}
	entries := make([]string, 0, len(snap.Guards))
	for name, g := range snap.Guards {
		if g.Of != "" {
			continue
		}
		e := strconv.FormatUint(uint64(g.OID), 10) + ":" + g.Version
		if t := snap.Tables[name]; t != nil && actedOn(t) {
			// Its rows may change under a foreign key's action, from a
			// trigger inside the engine's statement: the guard lets an
			// UPDATE or DELETE below the statement through on this table
			// only.
			e += "*"
		}
		entries = append(entries, e)
	}
	if len(entries) == 0 {
		return ""
	}
	slices.Sort(entries)
	return headerPrefix + key + " " + strings.Join(entries, " ") + " */\n"
}

// actedOn reports whether a foreign key of t deletes or changes its rows
// when the parent's go or change (CASCADE, SET NULL, SET DEFAULT).
func actedOn(t *catalog.Table) bool {
	for _, fk := range t.Parents {
		for _, a := range []byte{fk.OnDelete, fk.OnUpdate} {
			if a == 'c' || a == 'n' || a == 'd' {
				return true
			}
		}
	}
	return false
}

// header is the guard header of c's rules.
func (c *compiled) header() string {
	if c.base != nil {
		c = c.base
	}
	c.hdrOnce.Do(func() {
		if c.snap != nil {
			c.hdr = guardHeader(c.snap, c.snap.GuardKey)
		}
	})
	return c.hdr
}

// keyMissing refuses a write on a guarded table when the proxy could not
// read the guard key: its statements would be refused by the guard
// anyway, with an error that would not say why.
func keyMissing(c *compiled) *pgerr.Error {
	if c.snap == nil || c.snap.GuardKey != "" || len(c.snap.Guards) == 0 {
		return nil
	}
	e := pgerr.New(pgerr.ObjectNotInPrereqState,
		"pgrules cannot write tables with rules in database %s: its catalog connection may not read pgrules.guard_key", c.snap.Database)
	e.Hint = "Run the proxy with the role that installed pgrules, or GRANT SELECT ON pgrules.guard_key TO the proxy's role."
	return e
}

// outboxKeyMissing refuses a commit whose after_commit events record
// outbox entries when the proxy could not read the guard key, which
// pgrules._outbox_add requires of the engine's statement.
func outboxKeyMissing(c *compiled) *pgerr.Error {
	e := pgerr.New(pgerr.ObjectNotInPrereqState,
		"pgrules cannot record the after_commit events of this transaction in database %s: its catalog connection may not read pgrules.guard_key", c.snap.Database)
	e.Hint = "Run the proxy with the role that installed pgrules."
	return e
}

// isStale reports whether err is the guard refusing an engine statement
// computed with other rules than the transaction sees.
func isStale(err error) bool {
	var e *pgerr.Error
	return errors.As(err, &e) && e.Code == pgerr.ObjectNotInPrereqState && e.Constraint == staleConstraint
}

// afterStale reloads the rules once a guard found them stale, waiting a
// little for the load, so that the client's retry runs with the rules its
// transaction sees.
func (s *session) afterStale(ctx context.Context, err error) {
	if !isStale(err) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if rerr := s.db.watcher.Refresh(ctx); rerr != nil {
		s.log.Warn().Err(rerr).Msg("the rules are stale and could not be reloaded yet")
	}
}

// forgedHeader refuses a client's text that begins as the engine's
// statements do: through pgrules, no statement but the engine's may pass
// the guards.
func forgedHeader() *pgerr.Error {
	e := pgerr.New(pgerr.InsufficientPrivilege, "a statement sent through pgrules may not begin with %q: that comment is pgrules' guard header", strings.TrimSpace(headerPrefix))
	e.Hint = "Start the statement with something else (a space, or another comment)."
	return e
}
