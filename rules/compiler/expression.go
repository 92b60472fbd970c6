package compiler

import (
	"errors"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/pgerr"
	"github.com/shopspring/decimal"
)

// template compiles a constraint's message: text with {expression} parts.
func (s *Set) template(c *Rule, t *catalog.Table) *pgerr.Error {
	msg := c.Rule.Message
	for msg != "" {
		open := strings.IndexByte(msg, '{')
		if open < 0 {
			c.message = append(c.message, messagePart{text: msg})
			break
		}
		end := strings.IndexByte(msg[open:], '}')
		if end < 0 {
			return ruleError(c.Rule, pgerr.InvalidObjectDefinition, "the message has a { without its }")
		}
		if open > 0 {
			c.message = append(c.message, messagePart{text: msg[:open]})
		}
		var p *vm.Program
		if _, err := s.expression(c, t, "message", msg[open+1:open+end], &p, false); err != nil {
			return err
		}
		c.message = append(c.message, messagePart{program: p})
		msg = msg[open+end+1:]
	}
	return nil
}

// operatorFuncs replace expr's operators (see values.go).
var operatorFuncs = map[string]string{
	"+": "_add", "-": "_sub", "*": "_mul", "/": "_div", "%": "_mod",
	"==": "_eq", "!=": "_ne", "<": "_lt", "<=": "_le", ">": "_gt", ">=": "_ge",
}

var exprFunctions = []expr.Option{
	expr.Function("_add", func(p ...any) (any, error) { return Add(p[0], p[1]) }),
	expr.Function("_sub", func(p ...any) (any, error) { return Sub(p[0], p[1]) }),
	expr.Function("_mul", func(p ...any) (any, error) { return opMul(p[0], p[1]) }),
	expr.Function("_div", func(p ...any) (any, error) { return opDiv(p[0], p[1]) }),
	expr.Function("_mod", func(p ...any) (any, error) { return opMod(p[0], p[1]) }),
	expr.Function("_neg", func(p ...any) (any, error) { return opNeg(p[0]) }),
	expr.Function("_not", func(p ...any) (any, error) { return opNot(p[0]) }),
	expr.Function("_eq", func(p ...any) (any, error) { return Equal(p[0], p[1]) }),
	expr.Function("_ne", func(p ...any) (any, error) { return opNe(p[0], p[1]) }),
	expr.Function("_lt", func(p ...any) (any, error) { return opLt(p[0], p[1]) }),
	expr.Function("_le", func(p ...any) (any, error) { return opLe(p[0], p[1]) }),
	expr.Function("_gt", func(p ...any) (any, error) { return opGt(p[0], p[1]) }),
	expr.Function("_ge", func(p ...any) (any, error) { return opGe(p[0], p[1]) }),
}

// actionFuncs are the functions of event actions (rules-api.md §4), with
// their arity and the timings that allow them (the engine's Actions carry
// them out). A
// failure event runs in a failed transaction, so it can only replace the
// error and record what the outbox sends after the rollback; an
// after_commit event cannot veto a transaction that has committed.
var actionFuncs = map[string]struct {
	min, max int
	timings  []string
}{
	"set":    {2, 2, []string{"early", "pre_insert"}},
	"reject": {1, 2, []string{"early", "pre_insert", "row", "commit", "failure"}},
	"insert": {2, 2, []string{"early", "pre_insert", "row", "commit", "after_commit"}},
	"update": {3, 3, []string{"early", "pre_insert", "row", "commit", "after_commit"}},
	"delete": {2, 2, []string{"early", "pre_insert", "row", "commit", "after_commit"}},
	"notify": {2, 2, []string{"early", "pre_insert", "row", "commit", "after_commit", "failure"}},
	"sql":    {1, 100, []string{"early", "pre_insert", "row", "commit", "after_commit"}},
	"post":   {2, 2, []string{"after_commit", "failure"}},
}

// actionsVar is the variable through which an action's function calls
// reach the evaluation they belong to: the compiler passes it as their
// first argument (actionPatcher), since a compiled program is shared.
const actionsVar = "pgrules_actions"

// expression parses, checks and compiles one expression of a rule against
// the row of table t: names, types, and the columns it reads.
func (s *Set) expression(c *Rule, t *catalog.Table, part, src string, out **vm.Program, action bool) (kind, *pgerr.Error) {
	tree, err := parseExpr(src)
	if e, ok := err.(*pgerr.Error); ok {
		re := ruleError(c.Rule, e.Code, "the %s: %s", part, e.Message)
		re.Hint = e.Hint
		return kAny, re
	}
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			return kAny, ruleError(c.Rule, pgerr.InvalidObjectDefinition, "syntax error in the %s at %d:%d: %s", part, fe.Line, fe.Column+1, fe.Message)
		}
		return kAny, ruleError(c.Rule, pgerr.InvalidObjectDefinition, "syntax error in the %s: %s", part, err)
	}
	ck := &checker{set: s, c: c, table: t, part: part, src: src, action: action}
	k := ck.check(tree.Node)
	if ck.err != nil {
		return kAny, ck.err
	}
	opts := append([]expr.Option{
		expr.Env(map[string]any{"row": map[string]any{}, "old": map[string]any{}, "verb": "", "error": map[string]any{}}),
		expr.Patch(&operatorPatcher{}),
		expr.AllowUndefinedVariables(),
		expr.MaxNodes(maxExprNodes),
	}, exprFunctions...)
	if action {
		opts = append(opts, expr.Patch(actionPatcher{}))
		for name := range actionFuncs {
			opts = append(opts, expr.Function(name, func(p ...any) (any, error) {
				a, ok := p[0].(Actions)
				if !ok {
					return nil, pgerr.New(pgerr.InternalError, "%s called outside an event", name)
				}
				return a.Call(name, p[1:])
			}))
		}
	}
	p, err := expr.Compile(src, opts...)
	if err != nil {
		return kAny, ruleError(c.Rule, pgerr.InvalidObjectDefinition, "the %s does not compile: %s", part, err)
	}
	*out = p
	return k, nil
}

// actionPatcher gives each call of an action function the evaluation's
// actions as its first argument.
type actionPatcher struct{}

func (actionPatcher) Visit(node *ast.Node) {
	if n, ok := (*node).(*ast.CallNode); ok {
		if id, ok := n.Callee.(*ast.IdentifierNode); ok {
			if _, ok := actionFuncs[id.Value]; ok {
				args := append([]ast.Node{&ast.IdentifierNode{Value: actionsVar}}, n.Arguments...)
				ast.Patch(node, &ast.CallNode{Callee: n.Callee, Arguments: args})
			}
		}
	}
}

// operatorPatcher rewrites operators into calls of the value functions,
// decimal literals into exact decimals, and member access into optional
// access.
type operatorPatcher struct{}

func (operatorPatcher) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.BinaryNode:
		if f, ok := operatorFuncs[n.Operator]; ok {
			ast.Patch(node, &ast.CallNode{Callee: &ast.IdentifierNode{Value: f}, Arguments: []ast.Node{n.Left, n.Right}})
		}
	case *ast.UnaryNode:
		switch n.Operator {
		case "-":
			ast.Patch(node, &ast.CallNode{Callee: &ast.IdentifierNode{Value: "_neg"}, Arguments: []ast.Node{n.Node}})
		case "not", "!":
			ast.Patch(node, &ast.CallNode{Callee: &ast.IdentifierNode{Value: "_not"}, Arguments: []ast.Node{n.Node}})
		}
	case *ast.FloatNode:
		ast.Patch(node, &ast.ConstantNode{Value: decimal.NewFromFloat(n.Value)})
	case *ast.MemberNode:
		// A parent through a NULL foreign key is nil, and so is each of
		// its columns (rules-api.md §3), as if written row.dept?.rate.
		if !n.Optional && !n.Method {
			n.Optional = true
			ast.Patch(node, &ast.ChainNode{Node: n})
		}
	}
}
