package compiler

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/pgrules/pgrules/catalog"
	"github.com/pgrules/pgrules/internal/ruletest"
	"github.com/pgrules/pgrules/pgerr"
)

// recorder is an Actions that records the calls of an action; a call of
// reject fails with veto, as the engine's vetoes do.
type recorder struct {
	calls []string
	veto  error
}

func (r *recorder) Call(name string, args []any) (any, error) {
	r.calls = append(r.calls, fmt.Sprintf("%s%v", name, args))
	if name == "reject" {
		return nil, r.veto
	}
	return nil, nil
}

// TestAct: an event's action runs on its row with its function calls
// carried out by the Actions given, each evaluation its own; an action's
// own error comes back as it was given, for the engine to tell vetoes from
// failures; a failure event sees the error it handles.
func TestAct(t *testing.T) {
	veto := errors.New("vetoed")
	for _, tc := range []struct {
		name, timing, action string
		env                  Env
		calls                []string
		out                  any
		err                  error
	}{
		{"a call", "row", `notify("ch", row.note)`, Env{Row: map[string]any{"note": "n"}, Verb: "insert"}, []string{"notify[ch n]"}, nil, nil},
		{"calls in order", "row", `verb == "update" ? [notify("a", old.note), notify("b", row.note)] : nil`,
			Env{Row: map[string]any{"note": "new"}, Old: map[string]any{"note": "old"}, Verb: "update"}, []string{"notify[a old]", "notify[b new]"}, nil, nil},
		{"no call", "row", `verb == "update" ? notify("a", "x") : nil`, Env{Row: map[string]any{}, Verb: "insert"}, nil, nil, nil},
		{"a veto", "row", `reject("no")`, Env{Row: map[string]any{}}, []string{"reject[no]"}, nil, veto},
		{"a message as the value", "row", `row.quantity > 1 ? "too many" : ""`, Env{Row: map[string]any{"quantity": 2}}, nil, "too many", nil},
		{"the failure", "failure", `post("http://x", error.code)`, Env{Row: map[string]any{}, Error: map[string]any{"code": "23505"}}, []string{"post[http://x 23505]"}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := Compile(ruletest.CreditSnapshot(&catalog.Rule{Name: "e", Table: "public.lineitem", Kind: catalog.Event, Timing: tc.timing, Expression: tc.action}))
			if err := set.RuleError("e"); err != nil {
				t.Fatal(err)
			}
			rec := &recorder{veto: veto}
			out, err := set.Rule("e").Act(tc.env, rec)
			if !errors.Is(err, tc.err) || !slices.Equal(rec.calls, tc.calls) || out != tc.out && tc.out != nil {
				t.Errorf("Act: %v, %v, calls %q; want %v, %v, %q", out, err, rec.calls, tc.out, tc.err, tc.calls)
			}
		})
	}
	// Without Actions, an action function is an internal error, never a
	// call on nothing.
	set := Compile(ruletest.CreditSnapshot(&catalog.Rule{Name: "e", Table: "public.lineitem", Kind: catalog.Event, Timing: "row", Expression: `notify("a", "b")`}))
	if _, err := set.Rule("e").Eval(Env{Row: map[string]any{}}); pgerr.Code(err) != pgerr.InternalError {
		t.Errorf("Eval of an action: %v", err)
	}
}

// TestFailure: an evaluation's failure names the rule and its table, with
// the SQLSTATE of a pgerr.Error and 22000 for any other error.
func TestFailure(t *testing.T) {
	c := &Rule{Rule: &catalog.Rule{Name: "r", Table: "shop.orders"}}
	for _, tc := range []struct {
		err           error
		code, message string
	}{
		{pgerr.New(pgerr.DivisionByZero, "division by zero"), pgerr.DivisionByZero, `rule "r": division by zero`},
		{fmt.Errorf("wrapped: %w", pgerr.New(pgerr.RaiseException, "no")), pgerr.RaiseException, `rule "r": no`},
		{errors.New("cannot fetch x"), pgerr.DataException, `rule "r": cannot fetch x`},
	} {
		e := c.Failure(tc.err)
		if e.Code != tc.code || e.Message != tc.message || e.Schema != "shop" || e.Table != "orders" {
			t.Errorf("Failure(%v) = %+v", tc.err, e)
		}
	}
}
