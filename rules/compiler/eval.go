package compiler

import (
	"errors"
	"sync"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"github.com/pgrules/pgrules/pgerr"
)

// Env is what an expression sees: the row (columns by name, parent rows
// under their accessors), the row before the change (nil on insert), the
// verb, and in a failure event's action the error it handles.
type Env struct {
	Row, Old map[string]any
	Verb     string
	Error    map[string]any
}

// fill sets the variables of an evaluation.
func (e Env) fill(vars map[string]any) {
	vars["row"], vars["old"], vars["verb"] = nil, nil, e.Verb
	if e.Row != nil {
		vars["row"] = e.Row
	}
	if e.Old != nil {
		vars["old"] = e.Old
	}
	if e.Error != nil {
		vars["error"] = e.Error
	}
}

// evaluation is a VM and the variables of one run of a program, kept in
// evaluations between runs: rules run for every row a statement changes,
// and a VM and a map of its own for each run were the most of what
// evaluating allocated.
type evaluation struct {
	vm   vm.VM
	vars map[string]any
}

var evaluations = sync.Pool{New: func() any { return &evaluation{vars: make(map[string]any, 4)} }}

// run evaluates a program; a failure becomes a 22xxx error naming the rule.
func (c *Rule) run(p *vm.Program, env Env) (any, error) {
	ev := evaluations.Get().(*evaluation)
	env.fill(ev.vars)
	out, err := ev.vm.Run(p, ev.vars)
	clear(ev.vars)
	evaluations.Put(ev)
	if err != nil {
		return nil, c.Failure(err)
	}
	return out, nil
}

// Failure is err, a failure of evaluating the rule, as the error the
// engine reports: it names the rule, with err's SQLSTATE when err is a
// pgerr.Error and 22000 (data exception) otherwise.
func (c *Rule) Failure(err error) *pgerr.Error {
	code := pgerr.DataException
	var pe *pgerr.Error
	if errors.As(err, &pe) {
		code = pe.Code
		err = errors.New(pe.Message)
	}
	return ruleError(c.Rule, code, "%s", err)
}

// Actions carries out the function calls of an event's action (set,
// reject, insert, update, delete, notify, sql, post) for one evaluation.
// The engine implements it; a compiled action is shared, so each
// evaluation hands it its own.
type Actions interface {
	Call(name string, args []any) (any, error)
}

// Act runs an event's action on env, its function calls carried out by
// a. Its error is returned as the action gave it, for the engine to tell
// a veto from a failure (which Failure turns into the rule's error).
func (c *Rule) Act(env Env, a Actions) (any, error) {
	vars := make(map[string]any, 5)
	env.fill(vars)
	vars[actionsVar] = a
	return expr.Run(c.program, vars)
}

// Eval evaluates a formula, condition or action.
func (c *Rule) Eval(env Env) (any, error) { return c.run(c.program, env) }

// Holds evaluates a constraint's condition: nil (from NULLs) holds, as a
// SQL CHECK does.
func (c *Rule) Holds(env Env) (bool, error) {
	v, err := c.run(c.program, env)
	if err != nil {
		return false, err
	}
	b, _ := v.(bool)
	return v == nil || b, nil
}

// Counts evaluates an aggregate's filter on a child row: rows without a
// filter count; nil does not, as in a SQL WHERE.
func (c *Rule) Counts(child map[string]any) (bool, error) {
	if c.filter == nil {
		return true, nil
	}
	v, err := c.run(c.filter, Env{Row: child})
	if err != nil {
		return false, err
	}
	b, _ := v.(bool)
	return b, nil
}

// Message renders a constraint's message for the row.
func (c *Rule) Message(env Env) (string, error) {
	var out []byte
	for _, p := range c.message {
		if p.program == nil {
			out = append(out, p.text...)
			continue
		}
		v, err := c.run(p.program, env)
		if err != nil {
			return "", err
		}
		if v == nil {
			out = append(out, "NULL"...)
		} else {
			out = append(out, FormatValue(v)...)
		}
	}
	return string(out), nil
}
