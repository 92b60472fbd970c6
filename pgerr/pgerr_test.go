package pgerr

import (
	"errors"
	"fmt"
	"io"
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
