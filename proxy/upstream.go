package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgrules/pgrules/pgerr"
)

// target is one way to reach the upstream server: an address and, when the
// connection must (or may) use TLS, the TLS configuration.
type target struct {
	network, address string
	tls              *tls.Config
	dial             pgconn.DialFunc
}

// upstreamTargets turns the upstream URL into the ordered list of targets
// to try, the way libpq does: each host, and for sslmode=prefer or allow
// the TLS and plain variants in the mode's order.
func upstreamTargets(rawURL, sslmode string) ([]target, *pgconn.Config, error) {
	if sslmode != "" {
		u, err := url.Parse(rawURL)
		if err != nil {
			return nil, nil, fmt.Errorf("upstream URL: %w", err)
		}
		q := u.Query()
		q.Set("sslmode", sslmode)
		u.RawQuery = q.Encode()
		rawURL = u.String()
	}
	cfg, err := pgconn.ParseConfig(rawURL)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream URL: %w", err)
	}
	var out []target
	add := func(host string, port uint16, tc *tls.Config) {
		network, address := pgconn.NetworkAddress(host, port)
		out = append(out, target{network: network, address: address, tls: tc, dial: cfg.DialFunc})
	}
	add(cfg.Host, cfg.Port, cfg.TLSConfig)
	for _, fb := range cfg.Fallbacks {
		add(fb.Host, fb.Port, fb.TLSConfig)
	}
	return out, cfg, nil
}

// errTLSRefused means the server answered an SSLRequest with 'N'.
var errTLSRefused = errors.New("server does not support TLS")

// connect opens a connection to t, negotiating TLS when t asks for it.
func (t target) connect(ctx context.Context) (net.Conn, error) {
	conn, err := t.dial(ctx, t.network, t.address)
	if err != nil {
		return nil, err
	}
	if t.tls == nil {
		return conn, nil
	}
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
		defer conn.SetDeadline(noDeadline)
	}
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:4], 8)
	binary.BigEndian.PutUint32(req[4:8], sslRequestCode)
	if _, err := conn.Write(req[:]); err != nil {
		conn.Close()
		return nil, err
	}
	var answer [1]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		conn.Close()
		return nil, err
	}
	if answer[0] != 'S' {
		conn.Close()
		return nil, errTLSRefused
	}
	tc := tls.Client(conn, t.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return tc, nil
}

// dialUpstream tries the targets in order and returns the first connection
// made, with the target that made it.
func dialUpstream(ctx context.Context, targets []target) (net.Conn, target, error) {
	var errs []error
	for _, t := range targets {
		conn, err := t.connect(ctx)
		if err == nil {
			return conn, t, nil
		}
		errs = append(errs, fmt.Errorf("%s %s: %w", t.network, t.address, err))
	}
	return nil, target{}, pgerr.New(pgerr.ConnectionFailure, "pgrules could not connect to the upstream server: %w", errors.Join(errs...))
}
