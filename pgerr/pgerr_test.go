package pgerr

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestNewWrapsCause(t *testing.T) {
	e := New(ConnectionFailure, "upstream: %w", io.EOF)
	if !errors.Is(e, io.EOF) {
		t.Fatalf("cause lost: %v", e)
	}
	if e.Message != "upstream: EOF" {
		t.Fatalf("message = %q", e.Message)
	}
	wrapped := fmt.Errorf("session 3: %w", e)
	if got := Code(wrapped); got != ConnectionFailure {
		t.Fatalf("Code through wrapping = %q", got)
	}
	if got := Code(io.EOF); got != "" {
		t.Fatalf("Code of a plain error = %q", got)
	}
}

func TestFatal(t *testing.T) {
	e := Fatal(AdminShutdown, "terminating connection due to administrator command")
	if e.Severity != SeverityFatal || e.Code != AdminShutdown {
		t.Fatalf("got %+v", e)
	}
	if e.Unwrap() != nil {
		t.Fatalf("unexpected cause %v", e.Unwrap())
	}
}

// TestWithheld: the client gets the message and, in the hint, the
// reference, which differs from one error to the next; no cause travels.
func TestWithheld(t *testing.T) {
	a, b := Reference(), Reference()
	if len(a) != 10 || a == b {
		t.Fatalf("references %q and %q", a, b)
	}
	e := Withheld(ObjectNotInPrereqState, a, "writes are refused")
	if e.Code != ObjectNotInPrereqState || e.Message != "writes are refused" || e.Err != nil || e.Detail != "" {
		t.Fatalf("got %+v", e)
	}
	if !strings.Contains(e.Hint, "reference "+a+",") {
		t.Fatalf("hint %q", e.Hint)
	}
}
