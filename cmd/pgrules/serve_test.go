package main

import (
	"io"
	"slices"
	"testing"

	"github.com/rs/zerolog"
)

// TestSecurityFlags: --outbox-allow takes a comma-separated list, from the
// flag or from PGRULES_OUTBOX_ALLOW, which the flag replaces; a bad pattern
// is an error at start, not a silent allow. --max-startup-connections and
// --log-statements reach their settings.
func TestSecurityFlags(t *testing.T) {
	parse := func(env string, args ...string) (serveFlags, error) {
		t.Setenv("PGRULES_OUTBOX_ALLOW", env)
		var f serveFlags
		fs := newFlagSet("serve", "")
		fs.SetOutput(io.Discard)
		f.register(fs, true)
		return f, parseFlags(fs, args)
	}
	f, err := parse("hooks.internal, 10.0.0.0/8", "--max-startup-connections", "7", "--log-statements")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.outbox.allow, []string{"hooks.internal", "10.0.0.0/8"}) || f.maxStartup != 7 || !f.logStatements {
		t.Fatalf("from the environment: %+v", f)
	}
	if cfg, err := f.proxyConfig(zerolog.Nop()); err != nil || cfg.MaxStartupConnections != 7 {
		t.Fatalf("proxy config: %+v, %v", cfg, err)
	}
	f, err = parse("hooks.internal", "--outbox-allow", "127.0.0.1:8080")
	if err != nil || !slices.Equal(f.outbox.allow, []string{"127.0.0.1:8080"}) {
		t.Fatalf("the flag over the environment: %v, %v", f.outbox.allow, err)
	}
	if _, err := parse("", "--outbox-allow", "*"); err == nil {
		t.Fatal("--outbox-allow '*' accepted")
	}
	if _, err := parse("10.0.0.0/33"); err == nil {
		t.Fatal("PGRULES_OUTBOX_ALLOW=10.0.0.0/33 accepted")
	}
}
