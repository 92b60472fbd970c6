package rules

import (
	"errors"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"github.com/pgrules/pgrules/pgerr"
)

// Env is what an expression sees: the row (columns by name, parent rows
// under their accessors), the row before the change (nil on insert) and
// the verb.
type Env struct {
	Row, Old map[string]any
	Verb     string
}

func (e Env) vars() map[string]any {
	vars := map[string]any{"row": e.Row, "verb": e.Verb}
	if e.Old != nil {
		vars["old"] = e.Old
	} else {
		vars["old"] = nil
	}
	return vars
}

// run evaluates a program; a failure becomes a 22xxx error naming the rule.
func (c *Compiled) run(p *vm.Program, env Env) (any, error) {
	out, err := expr.Run(p, env.vars())
	if err == nil {
		return out, nil
	}
	code := pgerr.DataException
	var pe *pgerr.Error
	if errors.As(err, &pe) {
		code = pe.Code
		err = errors.New(pe.Message)
	}
	e := ruleError(c.Rule, code, "%s", err)
	return nil, e
}

// Eval evaluates a formula, condition or action.
func (c *Compiled) Eval(env Env) (any, error) { return c.run(c.program, env) }

// Holds evaluates a constraint's condition: nil (from NULLs) holds, as a
// SQL CHECK does.
func (c *Compiled) Holds(env Env) (bool, error) {
	v, err := c.run(c.program, env)
	if err != nil {
		return false, err
	}
	b, _ := v.(bool)
	return v == nil || b, nil
}

// Counts evaluates an aggregate's filter on a child row: rows without a
// filter count; nil does not, as in a SQL WHERE.
func (c *Compiled) Counts(child map[string]any) (bool, error) {
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
func (c *Compiled) Message(env Env) (string, error) {
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

// Rule returns the named rule, compiled, or nil.
func (s *Set) Rule(name string) *Compiled { return s.byName[name] }
