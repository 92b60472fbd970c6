package proxy

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/pgrules/pgrules/pgerr"
)

// FuzzMsgReader: whatever a client sends, the reader either relays whole
// messages unchanged or stops with an error a client can be told about
// (a SQLSTATE) or a clean end of input; it never panics.
func FuzzMsgReader(f *testing.F) {
	f.Add(frame('Q', []byte("SELECT 1\x00")))
	f.Add(append(frame('P', []byte("s\x00SELECT $1\x00\x00\x00")), frame('S', nil)...))
	f.Add([]byte{'Q', 0, 0, 0, 2})
	f.Add([]byte{'Q', 0xff, 0xff, 0xff, 0xff})
	f.Add(frame('d', bytes.Repeat([]byte{1}, 40000)))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, _, err := relayAll(in, 1<<20)
		if errors.Is(err, io.EOF) {
			if !bytes.Equal(out, in) {
				t.Fatal("clean end but the relayed bytes differ")
			}
			return
		}
		if pgerr.Code(err) == "" {
			t.Fatalf("error without a SQLSTATE: %v", err)
		}
		if !bytes.HasPrefix(in, out) {
			t.Fatal("relayed bytes are not a prefix of the input")
		}
	})
}

func FuzzStartupPacket(f *testing.F) {
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47})
	f.Add([]byte{0, 0, 0, 9, 0, 3, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		pkt, err := readStartupPacket(bytes.NewReader(in))
		if err != nil {
			if pgerr.Code(err) == "" && !errors.Is(err, errClientGone) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if len(pkt)+4 > len(in) || len(pkt) < 4 {
			t.Fatalf("packet of %d bytes from %d bytes of input", len(pkt), len(in))
		}
	})
}
