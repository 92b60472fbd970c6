package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/pgrules/pgrules/pgerr"
)

func frame(typ byte, body []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(body)+4))
	return append(b, body...)
}

// relayAll copies every message of in through a msgReader, the way the
// relay loops do, and returns what was written and the error that ended it.
func relayAll(in []byte, max int) ([]byte, int, error) {
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	m := newMsgReader(bytes.NewReader(in), max, w.Flush)
	n := 0
	for {
		typ, size, err := m.header()
		if err != nil {
			w.Flush()
			return out.Bytes(), n, err
		}
		if err := m.copyBody(w, typ, size); err != nil {
			w.Flush()
			return out.Bytes(), n, err
		}
		n++
	}
}

func TestMsgReader(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 3*ioBufferSize)
	cases := []struct {
		name     string
		in       []byte
		max      int
		messages int
		code     string // SQLSTATE of the final error; "" means a clean EOF
	}{
		{"empty body", frame('S', nil), 0, 1, ""},
		{"several", append(frame('Q', []byte("SELECT 1\x00")), frame('X', nil)...), 0, 2, ""},
		{"larger than the buffer", frame('d', big), 0, 1, ""},
		{"over the limit", frame('Q', big), 1024, 0, pgerr.ProgramLimitExceeded},
		{"length below four", []byte{'Q', 0, 0, 0, 3}, 0, 0, pgerr.ProtocolViolation},
		{"truncated header", []byte{'Q', 0, 0}, 0, 0, pgerr.ProtocolViolation},
		{"truncated body", frame('Q', []byte("SELECT 1\x00"))[:9], 0, 0, pgerr.ProtocolViolation},
		{"truncated large body", frame('d', big)[:ioBufferSize*2], 0, 0, pgerr.ProtocolViolation},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, n, err := relayAll(tc.in, tc.max)
			if n != tc.messages {
				t.Fatalf("%d messages, want %d", n, tc.messages)
			}
			if tc.code == "" {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("err = %v, want EOF", err)
				}
				if !bytes.Equal(out, tc.in) {
					t.Fatal("relayed bytes differ from the input")
				}
				return
			}
			if got := pgerr.Code(err); got != tc.code {
				t.Fatalf("err = %v, want SQLSTATE %s", err, tc.code)
			}
		})
	}
}

func TestReadStartupPacket(t *testing.T) {
	pkt := func(n uint32, rest ...byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, n)
		return append(b, rest...)
	}
	cases := []struct {
		name string
		in   []byte
		code string
		gone bool
	}{
		{"ssl request", pkt(8, 4, 210, 22, 47), "", false},
		{"nothing", nil, "", true},
		{"too short", pkt(4), pgerr.ProtocolViolation, false},
		{"too long", pkt(maxStartupPacket + 1), pgerr.ProtocolViolation, false},
		{"truncated", pkt(20, 0, 3, 0, 0), pgerr.ProtocolViolation, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readStartupPacket(bytes.NewReader(tc.in))
			switch {
			case tc.gone:
				if !errors.Is(err, errClientGone) {
					t.Fatalf("err = %v", err)
				}
			case tc.code != "":
				if pgerr.Code(err) != tc.code {
					t.Fatalf("err = %v, want %s", err, tc.code)
				}
			case err != nil:
				t.Fatal(err)
			}
		})
	}
}

func TestIsFatalError(t *testing.T) {
	field := func(k byte, v string) []byte { return append(append([]byte{k}, v...), 0) }
	cases := []struct {
		body []byte
		want bool
	}{
		{bytes.Join([][]byte{field('S', "FATAL"), field('V', "FATAL"), field('C', "57P01"), {0}}, nil), true},
		{bytes.Join([][]byte{field('S', "SCHWER"), field('V', "FATAL"), {0}}, nil), true},
		{bytes.Join([][]byte{field('S', "ERROR"), field('V', "ERROR"), {0}}, nil), false},
		{bytes.Join([][]byte{field('S', "PANIC"), {0}}, nil), true},
		{[]byte("SFAT"), false},
		{nil, false},
	}
	for i, tc := range cases {
		if got := isFatalError(tc.body); got != tc.want {
			t.Errorf("case %d: %v, want %v", i, got, tc.want)
		}
	}
}

func TestWithoutChannelBinding(t *testing.T) {
	offer := append(binary.BigEndian.AppendUint32(nil, 10), "SCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00"...)
	got, err := withoutChannelBinding(offer)
	if err != nil {
		t.Fatal(err)
	}
	want := append(binary.BigEndian.AppendUint32(nil, 10), "SCRAM-SHA-256\x00\x00"...)
	if !bytes.Equal(got, want) {
		t.Fatalf("got %q", got)
	}
	only := append(binary.BigEndian.AppendUint32(nil, 10), "SCRAM-SHA-256-PLUS\x00\x00"...)
	if _, err := withoutChannelBinding(only); pgerr.Code(err) != "28000" {
		t.Fatalf("PLUS only: %v", err)
	}
}

func TestErrorResponse(t *testing.T) {
	e := pgerr.Fatal(pgerr.TooManyConnections, "sorry")
	e.Detail, e.Table = "d", "tbl"
	r := errorResponse(e)
	if r.Code != "53300" || r.Severity != "FATAL" || r.SeverityUnlocalized != "FATAL" || r.Detail != "d" || r.TableName != "tbl" {
		t.Fatalf("%+v", r)
	}
	if r := errorResponse(io.EOF); r.Code != pgerr.InternalError || r.Severity != "ERROR" {
		t.Fatalf("plain error became %+v", r)
	}
}
