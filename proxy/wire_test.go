package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgrules/pgrules/pgerr"
)

func frame(typ byte, body []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(body)+4))
	return append(b, body...)
}

// header5 is a message header with an arbitrary length field.
func header5(typ byte, length uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{typ}, length)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// chunkReader hands out its data at most chunk bytes a Read (all of it when
// chunk is 0), and calls before ahead of every Read: the moment the
// msgReader would block on a real connection.
type chunkReader struct {
	data   []byte
	chunk  int
	before func()
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if r.before != nil {
		r.before()
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if r.chunk > 0 && n > r.chunk {
		n = r.chunk
	}
	n = copy(p, r.data[:min(n, len(r.data))])
	r.data = r.data[n:]
	return n, nil
}

// relay is a msgReader wired the way a session wires one: its flush
// flushes the writer the messages are relayed to.
type relay struct {
	m   *msgReader
	w   *bufio.Writer
	out bytes.Buffer
	// done is the length of the input consumed by complete messages.
	done int
	// stale is set when the reader asked for more input while a complete
	// message was still sitting in the writer: on a real connection the
	// other side would wait for it while we wait for the client.
	stale bool
}

func newRelay(in []byte, chunk, max int) *relay {
	r := &relay{}
	r.w = bufio.NewWriterSize(&r.out, ioBufferSize)
	src := &chunkReader{data: in, chunk: chunk, before: func() {
		if r.out.Len() < r.done {
			r.stale = true
		}
	}}
	r.m = newMsgReader(src, max, r.w.Flush)
	return r
}

// next relays one message with copyBody, or reads it with body and
// relays that when useBody is set, as the backend loop does for the few
// messages it looks into.
func (r *relay) next(useBody bool) (typ byte, n int, err error) {
	typ, n, err = r.m.header()
	if err != nil {
		return typ, n, err
	}
	if useBody {
		var b []byte
		if b, err = r.m.body(n); err == nil {
			err = writeMessage(r.w, typ, b)
		}
	} else {
		err = r.m.copyBody(r.w, typ, n)
	}
	if err == nil {
		r.done += 5 + n
	}
	return typ, n, err
}

// all relays messages until an error and returns it with the count.
func (r *relay) all(useBody bool) (int, error) {
	count := 0
	for {
		if _, _, err := r.next(useBody); err != nil {
			r.w.Flush()
			return count, err
		}
		count++
	}
}

func TestMsgReaderHeader(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		max  int
		typ  byte
		n    int
		code string // "" with eof false: success
		eof  bool   // a plain io.EOF: the client left between messages
	}{
		{"nothing", nil, 0, 0, 0, "", true},
		{"one byte", []byte{'Q'}, 0, 0, 0, pgerr.ProtocolViolation, false},
		{"four bytes", []byte{'Q', 0, 0, 0}, 0, 0, 0, pgerr.ProtocolViolation, false},
		{"empty body", header5('S', 4), 0, 'S', 0, "", false},
		{"length 3", header5('Q', 3), 0, 'Q', 0, pgerr.ProtocolViolation, false},
		{"length 0", header5('Q', 0), 0, 'Q', 0, pgerr.ProtocolViolation, false},
		{"length 0 beats the limit check", header5('Q', 0), 10, 'Q', 0, pgerr.ProtocolViolation, false},
		{"at the limit", header5('Q', 104), 100, 'Q', 100, "", false},
		{"one over the limit", header5('Q', 105), 100, 'Q', 101, pgerr.ProgramLimitExceeded, false},
		{"largest length, limited", header5('d', 0xffffffff), 64 << 20, 'd', 0xffffffff - 4, pgerr.ProgramLimitExceeded, false},
		// Without a limit the header alone allocates nothing, however
		// large the length.
		{"largest length, no limit", header5('d', 0xffffffff), 0, 'd', 0xffffffff - 4, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newMsgReader(bytes.NewReader(tc.in), tc.max, nil)
			typ, n, err := m.header()
			switch {
			case tc.eof:
				if err != io.EOF {
					t.Fatalf("err = %v, want io.EOF", err)
				}
				return
			case tc.code != "":
				if got := pgerr.Code(err); got != tc.code {
					t.Fatalf("err = %v, want SQLSTATE %s", err, tc.code)
				}
				var e *pgerr.Error
				if errors.As(err, &e); e.Severity != pgerr.SeverityFatal {
					t.Fatalf("severity %q: the session ends with this error", e.Severity)
				}
			case err != nil:
				t.Fatal(err)
			}
			if tc.typ != 0 && typ != tc.typ {
				t.Errorf("type %q, want %q", typ, tc.typ)
			}
			if tc.n != 0 && n != tc.n {
				t.Errorf("n = %d, want %d", n, tc.n)
			}
		})
	}
}

// TestMsgReaderRelay relays inputs through every read pattern a socket may
// produce and both ways of taking a body: complete messages arrive
// unchanged, and the first bad one stops the relay with its SQLSTATE.
func TestMsgReaderRelay(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 3*ioBufferSize/16+1)
	query := frame('Q', []byte("SELECT 1\x00"))
	cases := []struct {
		name     string
		in       []byte
		max      int
		messages int
		code     string // SQLSTATE of the error that ends the relay; "" means clean EOF
	}{
		{"nothing", nil, 0, 0, ""},
		{"empty body", frame('S', nil), 0, 1, ""},
		{"several", cat(query, frame('S', nil), frame('X', nil)), 0, 3, ""},
		{"body the size of the buffer", frame('d', big[:ioBufferSize]), 0, 1, ""},
		{"body one byte over the buffer", frame('d', big[:ioBufferSize+1]), 0, 1, ""},
		{"header straddling the buffer", cat(frame('d', big[:ioBufferSize-7]), query, query), 0, 3, ""},
		{"large body between small ones", cat(query, frame('d', big), query), 0, 3, ""},
		{"two large bodies", cat(frame('d', big), frame('d', big[1:])), 0, 2, ""},
		{"at the limit", frame('d', big[:1000]), 1000, 1, ""},
		{"over the limit", cat(query, frame('Q', big)), 1024, 1, pgerr.ProgramLimitExceeded},
		{"length below four", cat(query, []byte{'Q', 0, 0, 0, 3}), 0, 1, pgerr.ProtocolViolation},
		{"truncated header", cat(query, []byte{'Q', 0, 0}), 0, 1, pgerr.ProtocolViolation},
		{"truncated body", query[:9], 0, 0, pgerr.ProtocolViolation},
		{"body of length 1, missing", header5('Q', 5), 0, 0, pgerr.ProtocolViolation},
		{"truncated large body", frame('d', big)[:2*ioBufferSize], 0, 0, pgerr.ProtocolViolation},
		{"truncated after a large body", cat(frame('d', big), query[:7]), 0, 1, pgerr.ProtocolViolation},
	}
	readers := []struct {
		name  string
		chunk int
	}{{"whole", 0}, {"one byte", 1}, {"three bytes", 3}, {"odd chunks", 4099}}
	for _, tc := range cases {
		for _, rd := range readers {
			for _, useBody := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/body=%v", tc.name, rd.name, useBody), func(t *testing.T) {
					r := newRelay(tc.in, rd.chunk, tc.max)
					n, err := r.all(useBody)
					if n != tc.messages {
						t.Fatalf("%d messages, want %d (err %v)", n, tc.messages, err)
					}
					if tc.code == "" {
						if err != io.EOF {
							t.Fatalf("err = %v, want io.EOF", err)
						}
						if !bytes.Equal(r.out.Bytes(), tc.in) {
							t.Fatal("relayed bytes differ from the input")
						}
					} else if got := pgerr.Code(err); got != tc.code {
						t.Fatalf("err = %v, want SQLSTATE %s", err, tc.code)
					}
					if !bytes.HasPrefix(tc.in, r.out.Bytes()) {
						t.Fatal("relayed bytes are not a prefix of the input")
					}
					if r.out.Len() < r.done {
						t.Fatalf("%d bytes of complete messages, %d relayed", r.done, r.out.Len())
					}
					if r.stale {
						t.Fatal("read more input while relayed messages were still buffered")
					}
				})
			}
		}
	}
}

// TestMsgReaderBody: body returns exactly the message's bytes, from the
// buffer or from the reader's own large buffer, and large and small bodies
// can follow each other.
func TestMsgReaderBody(t *testing.T) {
	var in []byte
	var bodies [][]byte
	for i, size := range []int{0, 10, 3 * ioBufferSize, 5, ioBufferSize, 2*ioBufferSize + 3, ioBufferSize + 1, 1} {
		b := bytes.Repeat([]byte{byte('a' + i)}, size)
		bodies = append(bodies, b)
		in = append(in, frame(byte('A'+i), b)...)
	}
	m := newMsgReader(iotest.HalfReader(bytes.NewReader(in)), 0, nil)
	for i, want := range bodies {
		typ, n, err := m.header()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if typ != byte('A'+i) || n != len(want) {
			t.Fatalf("message %d: %q %d", i, typ, n)
		}
		got, err := m.body(n)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("message %d: wrong body", i)
		}
	}
	if _, _, err := m.header(); err != io.EOF {
		t.Fatalf("at the end: %v", err)
	}
}

// TestMsgReaderDropsLargeBuffers: a body larger than keepLarge is not kept
// once read, so one large message does not hold its memory for the rest
// of the session; smaller ones share a buffer.
func TestMsgReaderDropsLargeBuffers(t *testing.T) {
	in := append(frame('Q', bytes.Repeat([]byte("x"), keepLarge+1)), frame('Q', bytes.Repeat([]byte("y"), 2*ioBufferSize))...)
	m := newMsgReader(bytes.NewReader(in), 0, nil)
	for i, want := range []int{0, 2 * ioBufferSize} {
		_, n, err := m.header()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.body(n); err != nil {
			t.Fatal(err)
		}
		if cap(m.large) != want {
			t.Fatalf("message %d: the reader holds %d bytes, want %d", i, cap(m.large), want)
		}
	}
	var x extState
	x.batch = make([]byte, keepLarge+1)
	x.reset()
	if x.batch != nil {
		t.Fatalf("a batch keeps %d bytes after its end", cap(x.batch))
	}
}

// TestMsgReaderPingPong: a client that waits for each answer before it
// sends the next message must get it. The relay has to flush what it holds
// before it blocks reading, or both sides wait for ever.
func TestMsgReaderPingPong(t *testing.T) {
	big := bytes.Repeat([]byte("z"), 2*ioBufferSize+17)
	msgs := [][]byte{
		frame('Q', []byte("SELECT 1\x00")),
		frame('S', nil),
		frame('d', big[:ioBufferSize]),
		frame('d', big),
		frame('P', []byte("s\x00SELECT 2\x00\x00\x00")),
	}
	for _, useBody := range []bool{false, true} {
		t.Run(fmt.Sprintf("body=%v", useBody), func(t *testing.T) {
			clientR, clientW := io.Pipe()
			serverR, serverW := io.Pipe()
			w := bufio.NewWriterSize(serverW, ioBufferSize)
			m := newMsgReader(clientR, 0, w.Flush)
			go func() {
				for {
					typ, n, err := m.header()
					if err != nil {
						serverW.CloseWithError(err)
						return
					}
					if useBody {
						var b []byte
						if b, err = m.body(n); err == nil {
							err = writeMessage(w, typ, b)
						}
					} else {
						err = m.copyBody(w, typ, n)
					}
					if err != nil {
						serverW.CloseWithError(err)
						return
					}
				}
			}()
			for i, msg := range msgs {
				go clientW.Write(msg)
				got := make([]byte, len(msg))
				done := make(chan error, 1)
				go func() { _, err := io.ReadFull(serverR, got); done <- err }()
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("message %d: %v", i, err)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("message %d never reached the other side", i)
				}
				if !bytes.Equal(got, msg) {
					t.Fatalf("message %d changed on the way", i)
				}
			}
			clientW.Close()
		})
	}
}

// TestMsgReaderErrors: errors from the connection and from flushing are
// handed back as they are, with no SQLSTATE: they mean the peer is gone,
// and nobody is left to tell.
func TestMsgReaderErrors(t *testing.T) {
	t.Run("timeout reading a header", func(t *testing.T) {
		m := newMsgReader(iotest.ErrReader(os.ErrDeadlineExceeded), 0, nil)
		if _, _, err := m.header(); !errors.Is(err, os.ErrDeadlineExceeded) || pgerr.Code(err) != "" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("timeout reading a body", func(t *testing.T) {
		in := io.MultiReader(bytes.NewReader(header5('Q', 100)), iotest.ErrReader(os.ErrDeadlineExceeded))
		m := newMsgReader(in, 0, nil)
		_, n, err := m.header()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.body(n); !errors.Is(err, os.ErrDeadlineExceeded) || pgerr.Code(err) != "" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("timeout streaming a large body", func(t *testing.T) {
		in := io.MultiReader(bytes.NewReader(cat(header5('d', 1<<20), make([]byte, 1000))), iotest.ErrReader(os.ErrDeadlineExceeded))
		m := newMsgReader(in, 0, nil)
		_, n, err := m.header()
		if err != nil {
			t.Fatal(err)
		}
		w := bufio.NewWriter(io.Discard)
		if err := m.copyBody(w, 'd', n); !errors.Is(err, os.ErrDeadlineExceeded) || pgerr.Code(err) != "" {
			t.Fatalf("err = %v", err)
		}
	})
	flushErr := errors.New("peer gone")
	failFlush := func() error { return flushErr }
	t.Run("flush fails before a header", func(t *testing.T) {
		m := newMsgReader(bytes.NewReader(frame('S', nil)), 0, failFlush)
		if _, _, err := m.header(); err != flushErr {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("flush fails before a body", func(t *testing.T) {
		m := newMsgReader(io.MultiReader(bytes.NewReader(header5('Q', 10)), strings.NewReader("SELECT 1\x00\x00")), 0, nil)
		_, n, err := m.header()
		if err != nil {
			t.Fatal(err)
		}
		m.flush = failFlush
		if _, err := m.body(n); err != flushErr {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("flush fails before streaming", func(t *testing.T) {
		in := frame('d', make([]byte, 2*ioBufferSize))
		m := newMsgReader(bytes.NewReader(in), 0, nil)
		_, n, err := m.header()
		if err != nil {
			t.Fatal(err)
		}
		m.flush = failFlush
		if err := m.copyBody(bufio.NewWriter(io.Discard), 'd', n); err != flushErr {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestWriteMessage(t *testing.T) {
	var out bytes.Buffer
	w := bufio.NewWriterSize(&out, 16)
	writeMessage(w, 'Z', []byte{'I'})
	writeMessage(w, 'd', bytes.Repeat([]byte{7}, 40)) // larger than the writer
	writeMessage(w, 'S', nil)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	want := cat(frame('Z', []byte{'I'}), frame('d', bytes.Repeat([]byte{7}, 40)), frame('S', nil))
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("got %x", out.Bytes())
	}
}

func TestReadStartupPacket(t *testing.T) {
	pkt := func(n uint32, rest ...byte) []byte {
		return append(binary.BigEndian.AppendUint32(nil, n), rest...)
	}
	sized := func(n int) []byte {
		b := pkt(uint32(n), 0, 3, 0, 0)
		return append(b, make([]byte, n-len(b))...)
	}
	cases := []struct {
		name string
		in   []byte
		code string // "" means accepted
		gone bool
	}{
		{"ssl request", pkt(8, 4, 210, 22, 47), "", false},
		{"nothing", nil, "", true},
		{"length zero", pkt(0), pgerr.ProtocolViolation, false},
		{"length seven", pkt(7, 0, 3, 0), pgerr.ProtocolViolation, false},
		{"minimum length", pkt(8, 0, 3, 0, 0), "", false},
		{"10000 bytes", sized(10000), "", false},
		// PostgreSQL checks the length without its own four bytes against
		// MAX_STARTUP_PACKET_LENGTH (10000), so it accepts up to 10004.
		{"PostgreSQL's maximum, 10004 bytes", sized(10004), "", false},
		{"one over PostgreSQL's maximum", pkt(10005), pgerr.ProtocolViolation, false},
		{"2 GiB", pkt(0x7fffffff), pgerr.ProtocolViolation, false},
		{"4 GiB", pkt(0xffffffff), pgerr.ProtocolViolation, false},
		{"truncated length", []byte{0, 0}, pgerr.ProtocolViolation, false},
		{"truncated packet", pkt(20, 0, 3, 0, 0), pgerr.ProtocolViolation, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Bytes after the packet must stay unread: after an
			// SSLRequest they belong to the TLS handshake.
			const after = "after"
			r := bytes.NewReader(append(bytes.Clone(tc.in), after...))
			if tc.code != "" || tc.gone {
				r = bytes.NewReader(tc.in)
			}
			got, err := readStartupPacket(r)
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
			default:
				if !bytes.Equal(got, tc.in[4:]) {
					t.Fatalf("packet %x, want %x", got, tc.in[4:])
				}
				if rest, _ := io.ReadAll(r); string(rest) != after {
					t.Fatalf("left %q unread, want %q", rest, after)
				}
			}
		})
	}
}

func TestIsFatalError(t *testing.T) {
	field := func(k byte, v string) []byte { return append(append([]byte{k}, v...), 0) }
	body := func(fs ...[]byte) []byte { return append(cat(fs...), 0) }
	cases := []struct {
		name string
		body []byte
		want bool
	}{
		{"fatal", body(field('S', "FATAL"), field('V', "FATAL"), field('C', "57P01"), field('M', "bye")), true},
		{"translated S, unlocalized V", body(field('S', "SCHWER"), field('V', "FATAL")), true},
		{"V before S", body(field('V', "FATAL"), field('S', "FATAL_LOOKALIKE")), true},
		{"V says error, S looks fatal", body(field('S', "FATAL"), field('V', "ERROR")), false},
		{"error", body(field('S', "ERROR"), field('V', "ERROR"), field('C', "22012")), false},
		{"panic, no V", body(field('S', "PANIC")), true},
		{"fatal, no V", body(field('C', "57P01"), field('S', "FATAL")), true},
		{"notice", body(field('S', "NOTICE"), field('V', "NOTICE")), false},
		{"FATAL only in the message", body(field('S', "ERROR"), field('M', "FATAL")), false},
		{"cut off inside the value", []byte("SFAT"), false},
		{"field without value", []byte("S"), false},
		{"empty", nil, false},
		{"just the terminator", []byte{0}, false},
	}
	for _, tc := range cases {
		if got := isFatalError(tc.body); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestWithoutChannelBinding(t *testing.T) {
	offer := func(mechs ...string) []byte {
		b := binary.BigEndian.AppendUint32(nil, 10)
		for _, m := range mechs {
			b = append(append(b, m...), 0)
		}
		return append(b, 0)
	}
	cases := []struct {
		name string
		in   []byte
		want []byte
		code string
	}{
		{"PLUS first", offer("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"), offer("SCRAM-SHA-256"), ""},
		{"PLUS last", offer("SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"), offer("SCRAM-SHA-256"), ""},
		{"no PLUS", offer("SCRAM-SHA-256"), offer("SCRAM-SHA-256"), ""},
		{"unknown mechanisms kept", offer("X-FUTURE", "SCRAM-SHA-256-PLUS"), offer("X-FUTURE"), ""},
		{"PLUS only", offer("SCRAM-SHA-256-PLUS"), nil, "28000"},
		{"nothing offered", offer(), nil, "28000"},
		{"too short", []byte{0, 0}, nil, pgerr.ProtocolViolation},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := withoutChannelBinding(tc.in)
			if tc.code != "" {
				if pgerr.Code(err) != tc.code {
					t.Fatalf("err = %v, want %s", err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestErrorResponse(t *testing.T) {
	e := pgerr.Fatal(pgerr.TooManyConnections, "sorry, %d", 3)
	e.Detail, e.Hint, e.Schema, e.Table, e.Column, e.Constraint = "d", "h", "s", "tbl", "col", "con"
	r := errorResponse(fmt.Errorf("session 7: %w", e))
	want := pgproto3.ErrorResponse{
		Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "53300", Message: "sorry, 3",
		Detail: "d", Hint: "h", SchemaName: "s", TableName: "tbl", ColumnName: "col", ConstraintName: "con",
	}
	if fmt.Sprint(*r) != fmt.Sprint(want) {
		t.Fatalf("got  %+v\nwant %+v", *r, want)
	}
	if r := errorResponse(pgerr.New(pgerr.DivisionByZero, "x")); r.Severity != "ERROR" || r.SeverityUnlocalized != "ERROR" {
		t.Fatalf("default severity: %+v", r)
	}
	if r := errorResponse(io.EOF); r.Code != pgerr.InternalError || r.Severity != "ERROR" || r.Message != "EOF" {
		t.Fatalf("plain error became %+v", r)
	}

	// What encodeError writes is one well-formed message a driver reads
	// back field for field.
	var out bytes.Buffer
	w := bufio.NewWriter(&out)
	if err := encodeError(w, e); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	raw := out.Bytes()
	if raw[0] != 'E' || int(binary.BigEndian.Uint32(raw[1:]))+1 != len(raw) {
		t.Fatalf("bad frame %q", raw)
	}
	var back pgproto3.ErrorResponse
	if err := back.Decode(raw[5:]); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(back) != fmt.Sprint(want) {
		t.Fatalf("decoded %+v", back)
	}
	if !isFatalError(raw[5:]) {
		t.Fatal("isFatalError does not recognise the proxy's own FATAL")
	}
}

// TestFrontendTypes: exactly the message types PostgresMain accepts after
// startup; 'p' (password and SASL responses) only during authentication.
func TestFrontendTypes(t *testing.T) {
	want := "BCDEFHPQSXcdf"
	var got []byte
	for i, ok := range frontendTypes {
		if ok {
			got = append(got, byte(i))
		}
	}
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestIssueKey: the client's key keeps the upstream's pid (so that
// pg_backend_pid() and NotificationResponse agree with it) and carries a
// secret of the proxy's own, of the upstream's length, different each time.
func TestIssueKey(t *testing.T) {
	up := []byte{0, 0, 0x30, 0x39, 1, 2, 3, 4}
	a, b := &session{}, &session{}
	ka, kb := a.issueKey(up), b.issueKey(up)
	if len(ka) != len(up) || !bytes.Equal(ka[:4], up[:4]) {
		t.Fatalf("key %x for upstream %x", ka, up)
	}
	if bytes.Equal(ka[4:], up[4:]) {
		t.Fatal("the upstream's secret was passed on")
	}
	if bytes.Equal(ka, kb) {
		t.Fatal("two sessions got the same key")
	}
	if string(a.key) != string(ka) || !bytes.Equal(a.upKey, up) {
		t.Fatal("the session does not remember both keys")
	}
	up[4] = 99
	if a.upKey[4] == 99 {
		t.Fatal("the session keeps the caller's buffer, which the reader reuses")
	}
	long := append([]byte{0, 0, 0, 1}, make([]byte, 32)...) // protocol 3.2 secrets are up to 256 bytes
	if k := (&session{}).issueKey(long); len(k) != len(long) {
		t.Fatalf("key of %d bytes for a %d-byte upstream key", len(k), len(long))
	}
}

// TestDecodeResults: the RowDescription and DataRow bodies the frontend
// loop reads during a borrow decode as pgproto3 encodes them, and every
// truncation of them is a protocol violation, not a panic.
func TestDecodeResults(t *testing.T) {
	rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
		{Name: []byte("id"), TableOID: 16384, TableAttributeNumber: 1, DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1, Format: 0},
		{Name: []byte("amount total"), TableOID: 16384, TableAttributeNumber: 3, DataTypeOID: 1700, DataTypeSize: -1, TypeModifier: 655366, Format: 1},
		{Name: []byte(""), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1},
	}}
	msg, err := rd.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	body := msg[5:]
	s := &session{}
	fields, err := s.decodeRowDescription(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(fields) != len(rd.Fields) {
		t.Fatalf("%d fields, want %d", len(fields), len(rd.Fields))
	}
	for i, f := range rd.Fields {
		got := fields[i]
		if got.Name != string(f.Name) || got.TableOID != f.TableOID || got.TableAttrNum != f.TableAttributeNumber ||
			got.TypeOID != f.DataTypeOID || got.TypeSize != f.DataTypeSize || got.TypeModifier != f.TypeModifier || got.Format != f.Format {
			t.Errorf("field %d: %+v, want %+v", i, got, f)
		}
	}
	again, _ := s.decodeRowDescription(body)
	if unsafe.StringData(again[1].Name) != unsafe.StringData(fields[1].Name) {
		t.Error("a field name read twice was not interned")
	}

	dr := &pgproto3.DataRow{Values: [][]byte{[]byte("7"), nil, {}, []byte("12.50")}}
	msg, err = dr.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	drBody := msg[5:]
	row, err := decodeDataRow(drBody)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"7", "<nil>", "", "12.50"}
	for i, v := range row {
		got := string(v)
		if v == nil {
			got = "<nil>"
		}
		if got != want[i] {
			t.Errorf("value %d: %q, want %q", i, got, want[i])
		}
	}
	row[0] = append(row[0], 'x') // a value grown must not spill into the next
	if string(row[3]) != "12.50" || drBody[6] != '7' {
		t.Error("values share memory with each other or with the reader's buffer")
	}

	for n := range len(body) {
		if _, err := s.decodeRowDescription(body[:n]); pgerr.Code(err) != pgerr.ProtocolViolation {
			t.Errorf("RowDescription cut to %d bytes: %v", n, err)
		}
	}
	for n := range len(drBody) {
		if _, err := decodeDataRow(drBody[:n]); pgerr.Code(err) != pgerr.ProtocolViolation {
			t.Errorf("DataRow cut to %d bytes: %v", n, err)
		}
	}
}
