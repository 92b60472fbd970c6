package outbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
)

// Destinations say where post entries may be sent. A post is an HTTP
// request the proxy makes from inside the operator's network on behalf of
// whoever could write the rule or its data, so by default it reaches only
// public addresses: never loopback, link-local, private (RFC 1918, RFC 4193),
// unspecified, multicast or other reserved ranges, where the database, the
// proxy's own ports and cloud metadata services live. The operator lets
// chosen destinations through with patterns:
//
//   - a host name, "hooks.example.com": that name, whatever it resolves to;
//   - "*.example.com": any name under example.com (not example.com itself);
//   - an address, "10.1.2.3" or "::1", or a CIDR prefix, "10.0.0.0/8": any
//     URL whose connection goes to an address in it;
//
// each optionally with ":port" (for a prefix, none), which limits it to that
// port. Public addresses stay allowed whatever the patterns.
//
// The check is made on the address actually connected to, in the dialer,
// after the one name resolution of each connection: a name that resolves to
// a public address when it is looked at and to a private one when it is
// dialled (DNS rebinding) is refused. Redirects are not followed, and the
// environment's HTTP proxy settings are ignored, so that no hop escapes the
// check. The zero value, and nil, are the default.
type Destinations struct {
	names []namePattern
	nets  []netPattern
}

type namePattern struct {
	name   string // lower case, without a trailing dot
	suffix bool   // "*.name": names under name
	port   string // "" for any
}

type netPattern struct {
	prefix netip.Prefix
	port   string
}

// ParseDestinations reads patterns (described at Destinations); empty
// strings are skipped.
func ParseDestinations(patterns []string) (*Destinations, error) {
	d := &Destinations{}
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if err := d.add(p); err != nil {
			return nil, fmt.Errorf("destination pattern %q: %w", p, err)
		}
	}
	return d, nil
}

func (d *Destinations) add(p string) error {
	if prefix, err := netip.ParsePrefix(p); err == nil {
		d.nets = append(d.nets, netPattern{prefix: prefix.Masked()})
		return nil
	}
	host, port := p, ""
	if h, pt, err := net.SplitHostPort(p); err == nil {
		if !validPort(pt) {
			return fmt.Errorf("bad port %q", pt)
		}
		host, port = h, pt
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		d.nets = append(d.nets, netPattern{prefix: netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen()), port: port})
		return nil
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	suffix := strings.HasPrefix(name, "*.")
	name = strings.TrimPrefix(name, "*.")
	if name == "" || strings.ContainsAny(name, "*/[]: ") {
		return errors.New("not a host name, *.domain, address or CIDR prefix")
	}
	d.names = append(d.names, namePattern{name: name, suffix: suffix, port: port})
	return nil
}

func validPort(p string) bool {
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n > 0
}

// nameAllowed reports whether a pattern names host (as the URL gives it)
// on port.
func (d *Destinations) nameAllowed(host, port string) bool {
	if d == nil {
		return false
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, n := range d.names {
		if n.port != "" && n.port != port {
			continue
		}
		if host == n.name && !n.suffix || n.suffix && strings.HasSuffix(host, "."+n.name) {
			return true
		}
	}
	return false
}

// addrAllowed reports whether a connection to addr on port may be made, and
// if not, why.
func (d *Destinations) addrAllowed(addr netip.Addr, port string) (bool, string) {
	addr = addr.Unmap().WithZone("")
	if d != nil {
		for _, n := range d.nets {
			if (n.port == "" || n.port == port) && n.prefix.Contains(addr) {
				return true, ""
			}
		}
	}
	why := nonPublic(addr)
	return why == "", why
}

// nonPublic names the kind of address addr is when it is not a public
// unicast address, and is "" when it is one.
func nonPublic(addr netip.Addr) string {
	switch {
	case !addr.IsValid():
		return "not an IP address"
	case addr.IsUnspecified():
		return "an unspecified address"
	case addr.IsLoopback():
		return "a loopback address"
	case addr.IsPrivate():
		return "a private address"
	case addr.IsLinkLocalUnicast():
		return "a link-local address"
	case addr.IsMulticast():
		return "a multicast address"
	}
	for _, p := range reserved {
		if p.Contains(addr) {
			return "a reserved address (" + p.String() + ")"
		}
	}
	if addr.Is6() {
		// Addresses that carry an IPv4 address reach it through a
		// translator: they are what that address is.
		if nat64.Contains(addr) {
			b := addr.As16()
			return nonPublic(netip.AddrFrom4([4]byte(b[12:])))
		}
	}
	return ""
}

// reserved are the ranges beyond netip's classes that are not the public
// internet (the IANA special-purpose registries).
var reserved = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",       // this network
		"100.64.0.0/10",   // shared address space (carrier-grade NAT)
		"192.0.0.0/24",    // IETF protocol assignments
		"192.0.2.0/24",    // documentation
		"198.18.0.0/15",   // benchmarking
		"198.51.100.0/24", // documentation
		"203.0.113.0/24",  // documentation
		"240.0.0.0/4",     // reserved, and the broadcast address
		"100::/64",        // discard-only
		"64:ff9b:1::/48",  // local-use IPv4/IPv6 translation
		"2001::/23",       // IETF protocol assignments (Teredo among them)
		"2001:db8::/32",   // documentation
		"2002::/16",       // 6to4, which reaches any IPv4 address
		"fec0::/10",       // site-local, deprecated
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// RefusedError is the failure of a post to a destination that is not
// allowed.
type RefusedError struct {
	Address string // the address dialled, host:port
	Why     string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("destination %s refused: %s, which post() may reach only when the operator allows it (--outbox-allow)", e.Address, e.Why)
}

// dialer returns a DialContext for an http.Transport that connects only to
// allowed destinations: addr is the URL's host and port, and a host that no
// name pattern names is checked at every address the dialer connects to.
func (d *Destinations) dialer(base *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if d.nameAllowed(host, port) {
			return base.DialContext(ctx, network, addr)
		}
		checked := *base
		checked.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return &RefusedError{Address: address, Why: "not an IP address"}
			}
			if ok, why := d.addrAllowed(ap.Addr(), port); !ok {
				return &RefusedError{Address: address, Why: why}
			}
			return nil
		}
		return checked.DialContext(ctx, network, addr)
	}
}
