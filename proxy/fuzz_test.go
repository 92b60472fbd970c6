package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgrules/pgrules/pgerr"
)

// The fuzz targets below run their seeds (f.Add and testdata/fuzz/<name>/)
// as ordinary tests on every `go test`. To search for new failures:
//
//	go test -fuzz=FuzzMsgReader -fuzztime=30s ./proxy/
//
// and keep any input it reports under testdata/fuzz/<name>/.

// FuzzMsgReader: whatever a client sends, and however the connection cuts
// it into reads, the reader relays whole messages unchanged, never reads on
// while a relayed message waits in the buffer, and stops either at a clean
// end of input or with an error it can tell the client about: 08P01 for a
// malformed or truncated message, 54000 for one over the limit. It never
// panics, and never holds more than the limit for one message.
func FuzzMsgReader(f *testing.F) {
	f.Add(frame('Q', []byte("SELECT 1\x00")), uint8(0), uint16(0), false)
	f.Add(cat(frame('P', []byte("s\x00SELECT $1\x00\x00\x00")), frame('B', []byte("\x00s\x00\x00\x00\x00\x00\x00\x00")), frame('S', nil)), uint8(3), uint16(0), true)
	f.Add([]byte{'Q', 0, 0, 0, 2}, uint8(1), uint16(0), false)
	f.Add([]byte{'Q', 0xff, 0xff, 0xff, 0xff}, uint8(0), uint16(100), true)
	f.Add(frame('d', bytes.Repeat([]byte{1}, 40000)), uint8(7), uint16(0), false)
	f.Add(frame('d', bytes.Repeat([]byte{1}, 40000))[:30000], uint8(200), uint16(0), true)
	f.Add(cat(frame('d', make([]byte, 100)), frame('d', make([]byte, 101))), uint8(0), uint16(100), false)
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8, limit uint16, useBody bool) {
		lim := int(limit)
		if lim == 0 {
			// Some limit always: body() holds a whole message, and the
			// proxy never reads a client's without one.
			lim = 1 << 20
		}
		r := newRelay(in, int(chunk), lim)
		off := 0
		for {
			typ, n, err := r.next(useBody)
			if err != nil {
				r.w.Flush()
				checkStop(t, in, off, lim, err)
				break
			}
			if n > lim {
				t.Fatalf("accepted a %d-byte body over the limit of %d", n, lim)
			}
			if typ != in[off] || 5+n > len(in)-off || binary.BigEndian.Uint32(in[off+1:]) != uint32(n+4) {
				t.Fatalf("message at %d read as %q with %d bytes", off, typ, n)
			}
			off += 5 + n
		}
		if r.stale {
			t.Fatal("read more input while relayed messages were still buffered")
		}
		out := r.out.Bytes()
		if !bytes.HasPrefix(in, out) {
			t.Fatal("relayed bytes are not a prefix of the input")
		}
		if len(out) < off {
			t.Fatalf("%d bytes of complete messages, %d relayed", off, len(out))
		}
		// Beyond the complete messages, only the start of a message too
		// large for the buffer, which is streamed, may have gone out.
		if len(out) > off {
			if useBody || len(in)-off < 5 || binary.BigEndian.Uint32(in[off+1:])-4 <= ioBufferSize {
				t.Fatalf("%d bytes of an incomplete message relayed", len(out)-off)
			}
		}
	})
}

// checkStop checks the error that ended a relay at offset off of in.
func checkStop(t *testing.T, in []byte, off, lim int, err error) {
	t.Helper()
	rest := in[off:]
	if err == io.EOF {
		if len(rest) != 0 {
			t.Fatalf("clean end with %d bytes left", len(rest))
		}
		return
	}
	var e *pgerr.Error
	if !errors.As(err, &e) || e.Severity != pgerr.SeverityFatal {
		t.Fatalf("ended with %v, want a FATAL with a SQLSTATE or io.EOF", err)
	}
	switch {
	case len(rest) < 5:
		if e.Code != pgerr.ProtocolViolation || len(rest) == 0 {
			t.Fatalf("with %d bytes of a header: %v", len(rest), err)
		}
	case binary.BigEndian.Uint32(rest[1:]) < 4:
		if e.Code != pgerr.ProtocolViolation {
			t.Fatalf("length below four: %v", err)
		}
	case int64(binary.BigEndian.Uint32(rest[1:]))-4 > int64(lim):
		if e.Code != pgerr.ProgramLimitExceeded {
			t.Fatalf("over the limit: %v", err)
		}
	default:
		if e.Code != pgerr.ProtocolViolation || int(binary.BigEndian.Uint32(rest[1:]))+1 <= len(rest) {
			t.Fatalf("a complete message ended the relay with %v", err)
		}
	}
}

// FuzzStartupPacket: the first packet of a connection is read without
// reading past it, its length is checked before anything is allocated for
// it, and what the session then does with it (the request code, the
// parameters of a startup message) never panics.
func FuzzStartupPacket(f *testing.F) {
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47})
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 48})
	f.Add([]byte{0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 1, 0, 1, 2, 3, 4})
	f.Add([]byte{0, 0, 0, 9, 0, 3, 0, 0, 0})
	f.Add([]byte("\x00\x00\x00\x17\x00\x03\x00\x00user\x00postgres\x00\x00"))
	f.Add([]byte("\x00\x00\x00\x16\x00\x03\x00\x00user\x00postgres\x00"))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 3})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		pkt, err := readStartupPacket(r)
		if err != nil {
			switch {
			case errors.Is(err, errClientGone):
				if len(in) != 0 {
					t.Fatalf("client gone with %d bytes sent", len(in))
				}
			case pgerr.Code(err) != pgerr.ProtocolViolation:
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		length := int(binary.BigEndian.Uint32(in))
		if length < 8 || length > 10004 || len(pkt) != length-4 || !bytes.Equal(pkt, in[4:length]) {
			t.Fatalf("packet of %d bytes from a length field of %d", len(pkt), length)
		}
		if r.Len() != len(in)-length {
			t.Fatalf("read %d bytes past the packet", len(in)-length-r.Len())
		}
		// What startup does next with the packet.
		switch code := binary.BigEndian.Uint32(pkt); code {
		case sslRequestCode, gssEncRequestCode:
		case cancelRequestCode:
			_ = cancelKey(pkt[4:])
		default:
			var sm pgproto3.StartupMessage
			if sm.Decode(pkt) == nil && code>>16 != 3 {
				t.Fatalf("decoded a startup message of protocol %d.%d", code>>16, code&0xffff)
			}
		}
	})
}

// FuzzUpstreamBodies: the two upstream messages the proxy looks into,
// ErrorResponse (for its severity) and the SASL offer (to drop channel
// binding), never panic the proxy whatever the upstream sends, and a
// rewritten offer is well formed and offers nothing new.
func FuzzUpstreamBodies(f *testing.F) {
	f.Add([]byte("SFATAL\x00VFATAL\x00C57P01\x00Mbye\x00\x00"))
	f.Add([]byte("\x00\x00\x00\x0aSCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00"))
	f.Add([]byte("\x00\x00\x00\x0aSCRAM-SHA-256-PLUS\x00\x00"))
	f.Add([]byte("\x00\x00\x00\x0a"))
	f.Fuzz(func(t *testing.T, body []byte) {
		isFatalError(body)
		out, err := withoutChannelBinding(body)
		if err != nil {
			if pgerr.Code(err) == "" {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		var in, got pgproto3.AuthenticationSASL
		if err := in.Decode(body); err != nil {
			t.Fatalf("rewrote an offer that does not decode: %v", err)
		}
		if err := got.Decode(out); err != nil {
			t.Fatalf("rewritten offer does not decode: %v", err)
		}
		if len(got.AuthMechanisms) == 0 || slices.Contains(got.AuthMechanisms, "SCRAM-SHA-256-PLUS") {
			t.Fatalf("rewritten offer %q", got.AuthMechanisms)
		}
		for _, m := range got.AuthMechanisms {
			if !slices.Contains(in.AuthMechanisms, m) {
				t.Fatalf("%q was not offered", m)
			}
		}
	})
}
