package tests

import (
	"strings"
	"testing"

	"github.com/pgrules/pgrules/outbox"
)

// The proxy's network-facing defences, attacked as a client with only a
// login role would: where post() may reach, what an unauthenticated client
// can make the proxy hold, what the logs and errors give away, TLS with
// SCRAM, and half-closed sockets.

// allowDestinations parses --outbox-allow patterns.
func allowDestinations(patterns ...string) *outbox.Destinations {
	d, err := outbox.ParseDestinations(patterns)
	if err != nil {
		panic(err)
	}
	return d
}

// TestSecurityNetOutboxDestinations: post() to a loopback port is refused
// by default, with the reason in last_error, and nothing reaches the port;
// --outbox-allow lets exactly the destination it names through.
func TestSecurityNetOutboxDestinations(t *testing.T) {
	h, other := newHook(t), newHook(t)
	events := []any{
		`SELECT pgrules.event('orders', 'after_commit', 'post("HOOK/orders", {id: row.id})', name => 'announce')`,
		`SELECT pgrules.event('orders', 'after_commit', 'post("` + other.URL + `/probe", {id: row.id})', name => 'probe')`,
	}
	t.Run("default", func(t *testing.T) {
		settings := fastOutbox
		settings.Destinations = nil
		c, admin, _ := outboxDB(t, h, append(events, withManager(settings, nil))...)
		scalar(t, c, "INSERT INTO orders (id, customer_id, amount) VALUES (1, 1, 1)")
		waitFor(t, "both entries dead", func() bool {
			return scalar(t, admin, "SELECT count(*) FROM pgrules.outbox WHERE state = 'dead'") == "2"
		})
		for _, e := range strings.Split(scalar(t, admin, "SELECT string_agg(last_error, '|') FROM pgrules.outbox"), "|") {
			if !strings.Contains(e, "refused: a loopback address") || !strings.Contains(e, "--outbox-allow") {
				t.Errorf("last_error %q does not say the destination was refused and why", e)
			}
		}
		if got := len(h.delivered()) + len(other.delivered()); got != 0 {
			t.Fatalf("%d posts reached loopback", got)
		}
	})
	t.Run("allowed", func(t *testing.T) {
		settings := fastOutbox
		settings.Destinations = allowDestinations(strings.TrimPrefix(h.URL, "http://"))
		c, admin, _ := outboxDB(t, h, append(events, withManager(settings, nil))...)
		scalar(t, c, "INSERT INTO orders (id, customer_id, amount) VALUES (1, 1, 1)")
		waitFor(t, "the entries settled", func() bool {
			return scalar(t, admin, "SELECT string_agg(rule || ' ' || state, ', ' ORDER BY rule) FROM pgrules.outbox") == "announce done, probe dead"
		})
		if got := h.delivered(); len(got) != 1 || got[0] != `{"id":1}` {
			t.Fatalf("the allowed receiver got %q", got)
		}
		if got := other.delivered(); len(got) != 0 {
			t.Fatalf("another loopback port got %q", got)
		}
		if e := scalar(t, admin, "SELECT last_error FROM pgrules.outbox WHERE rule = 'probe'"); !strings.Contains(e, "refused") {
			t.Fatalf("last_error %q", e)
		}
	})
}
