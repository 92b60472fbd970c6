package outbox

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

// loopbackOK lets the tests' receivers, on 127.0.0.1, through.
var loopbackOK = mustDestinations("127.0.0.0/8", "::1")

func mustDestinations(patterns ...string) *Destinations {
	d, err := ParseDestinations(patterns)
	if err != nil {
		panic(err)
	}
	return d
}

func TestNonPublic(t *testing.T) {
	for addr, public := range map[string]bool{
		"127.0.0.1": false, "127.255.0.9": false, "::1": false, "::ffff:127.0.0.1": false,
		"10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false, "fd00::1": false, "fc00::1": false,
		"169.254.169.254": false, "fe80::1": false, "0.0.0.0": false, "::": false, "0.1.2.3": false,
		"100.64.0.1": false, "224.0.0.1": false, "255.255.255.255": false, "ff02::1": false,
		"64:ff9b::a00:1": false, "2002:a00:1::": false, "2001:db8::1": false, "198.18.0.1": false,
		"8.8.8.8": true, "1.1.1.1": true, "2606:4700:4700::1111": true, "64:ff9b::808:808": true,
		"172.32.0.1": true, "100.128.0.1": true,
	} {
		if got := nonPublic(netip.MustParseAddr(addr)) == ""; got != public {
			t.Errorf("%s: public %v, want %v", addr, got, public)
		}
	}
}

func TestDestinationPatterns(t *testing.T) {
	d := mustDestinations("hooks.example.com", "*.corp.example", "10.0.0.0/8", "127.0.0.1:8080", "[::1]:9000", "Upper.Example.")
	names := []struct {
		host, port string
		want       bool
	}{
		{"hooks.example.com", "443", true},
		{"HOOKS.example.com.", "80", true},
		{"evil-hooks.example.com", "443", false},
		{"a.corp.example", "443", true},
		{"a.b.corp.example", "443", true},
		{"corp.example", "443", false},
		{"xcorp.example", "443", false},
		{"upper.example", "1", true},
		{"127.0.0.1", "8080", false}, // addresses are checked as addresses
	}
	for _, c := range names {
		if got := d.nameAllowed(c.host, c.port); got != c.want {
			t.Errorf("name %s:%s allowed %v, want %v", c.host, c.port, got, c.want)
		}
	}
	addrs := []struct {
		addr, port string
		want       bool
	}{
		{"10.9.9.9", "5432", true},
		{"127.0.0.1", "8080", true},
		{"127.0.0.1", "8081", false},
		{"::ffff:127.0.0.1", "8080", true},
		{"::1", "9000", true},
		{"::1", "9001", false},
		{"192.168.0.1", "80", false},
		{"93.184.216.34", "80", true},
	}
	for _, c := range addrs {
		if got, _ := d.addrAllowed(netip.MustParseAddr(c.addr), c.port); got != c.want {
			t.Errorf("address %s:%s allowed %v, want %v", c.addr, c.port, got, c.want)
		}
	}
	for _, bad := range []string{"*", "*.", "a*b.com", "host:port", "10.0.0.0/33", "[::1]:99999"} {
		if _, err := ParseDestinations([]string{bad}); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

// TestPostDestinations: a post reaches a loopback receiver only when a
// pattern allows it; a name that resolves to loopback is refused at the
// address it dials; a redirect is not followed.
func TestPostDestinations(t *testing.T) {
	hits := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits <- r.URL.Path
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
		}
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	port := u.Port()
	post := func(dst *Destinations, target string) error {
		d := &Dispatcher{cfg: Config{Settings: Settings{Destinations: dst, Timeout: 5 * time.Second}.withDefaults()}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return d.post(ctx, &Entry{ID: 1, Target: target})
	}
	refused := func(name string, err error) {
		t.Helper()
		var re *RefusedError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("%s: %v, want a refusal of a loopback address", name, err)
		}
	}
	refused("default", post(nil, srv.URL+"/a"))
	refused("by name", post(nil, "http://localhost:"+port+"/a"))
	refused("other port", post(mustDestinations("127.0.0.1:1"), srv.URL+"/a"))
	refused("other name", post(mustDestinations("example.com"), "http://localhost:"+port+"/a"))
	if len(hits) != 0 {
		t.Fatalf("a refused post reached the receiver: %q", <-hits)
	}
	for _, allow := range []string{"127.0.0.1", "127.0.0.1:" + port, "127.0.0.0/8"} {
		if err := post(mustDestinations(allow), srv.URL+"/a"); err != nil {
			t.Errorf("allowed by %q: %v", allow, err)
		}
	}
	if err := post(mustDestinations("localhost"), "http://localhost:"+port+"/a"); err != nil {
		t.Errorf("allowed by name: %v", err)
	}
	if err := post(loopbackOK, srv.URL+"/redirect"); err == nil || !strings.Contains(err.Error(), "307") {
		t.Errorf("redirect: %v, want a failure with the 3xx status", err)
	}
	close(hits)
	var paths []string
	for p := range hits {
		paths = append(paths, p)
	}
	if strings.Join(paths, ",") != "/a,/a,/a,/a,/redirect" {
		t.Errorf("the receiver got %v", paths)
	}
}

// TestDialChecksConnectedAddress: the check is on the address the dialer
// connects to, not on a name looked up beforehand.
func TestDialChecksConnectedAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	dial := (*Destinations)(nil).dialer(&net.Dialer{})
	c, err := dial(context.Background(), "tcp", net.JoinHostPort("localhost", port))
	if err == nil {
		c.Close()
		t.Fatal("dialled localhost")
	}
	var re *RefusedError
	if !errors.As(err, &re) || !netip.MustParseAddrPort(re.Address).Addr().IsLoopback() {
		t.Fatalf("got %v, want a refusal naming the loopback address dialled", err)
	}
}
